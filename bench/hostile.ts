// The clients of the slowloris scenario (bench/slowloris.ts), each a process
// of its own on the load core (the open-file limit is per process):
//   bun bench/hostile.ts attack HOST PORT K SECONDS TRICKLE_MS
//     K connections (100 connects in flight, each given 5 s). With TRICKLE_MS > 0
//     each sends a request line and then one header line every TRICKLE_MS,
//     never the empty line that ends the head (slowloris); with 0 it sends
//     nothing (on a TLS port: a handshake that never starts). After SECONDS it
//     prints one JSON line (AttackResult) and closes them.
//   bun bench/hostile.ts normal HOST PORT plain|tls RATE SECONDS TIMEOUT_MS
//     RATE GET requests a second at a steady pace (open loop: a slow answer
//     does not delay the next request), each on a new connection
//     (`Connection: close`), for SECONDS; prints one JSON line (NormalResult).
// Both exit on SIGTERM, and on their own 30 s after SECONDS.
import type { Socket } from "bun";

/** One attacker connection: held `s` seconds, `open` if the proxy had not closed it when the attack ended. */
export interface Hold {
  s: number;
  open: boolean;
}

export interface AttackResult {
  k: number;
  connected: number;
  /** Connects that failed or took over 5 s, by error code. */
  notConnected: Record<string, number>;
  /** Seconds until the last attacker was connected. */
  connectSeconds: number;
  holds: Hold[];
  /** How the proxy ended the connections it closed: "fin" (orderly), "error" (reset or other). */
  closedBy: Record<string, number>;
  /** Connections the proxy sent bytes on (e.g. HAProxy's 408) before closing. */
  answered: number;
  /** Header lines written over all connections. */
  lines: number;
  /** Attacker connections still open at each whole second of the attack. */
  timeline: number[];
}

export const FAILURES = ["refused", "reset", "timeout", "short", "status", "tls", "connect"] as const;
export type Failure = (typeof FAILURES)[number];

export interface NormalResult {
  sent: number;
  ok: number;
  failed: Record<Failure, number>;
  failedTotal: number;
  /** Latency of the successful requests, connect (and handshake) to the last byte of the response. */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** The first failures: seconds into the run and why. */
  samples: string[];
  /** The five slowest successful requests: seconds into the run and latency. */
  slowest: string[];
  /**
   * Times this client's own event loop ran late by STALL_MS or more (a 10 ms
   * timer firing late: the machine or the load core busy elsewhere): requests
   * in flight then took longer through no fault of the proxy.
   */
  stalls: string[];
  maxLagMs: number;
}

const CONNECTS_IN_FLIGHT = 100;
const STALL_MS = 100;
const LAG_TICK_MS = 10;
const CONNECT_TIMEOUT_MS = 5000;
/** Hard bound on a header line count per connection, whatever TRICKLE_MS says. */
const MAX_LINES = 1000;

const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const errCode = (e: unknown) => String((e as { code?: string })?.code ?? (e as Error)?.name ?? "error");

async function attack(host: string, port: number, k: number, seconds: number, trickleMs: number): Promise<AttackResult> {
  interface Conn {
    openedAt: number;
    closedAt?: number;
    sock?: Socket<undefined>;
    timer?: Timer;
    answered: boolean;
  }
  const t0 = now();
  const endAt = t0 + seconds * 1000;
  const conns: Conn[] = [];
  const notConnected: Record<string, number> = {};
  const closedBy: Record<string, number> = {};
  let ending = false;
  let lines = 0;
  let lastConnect = t0;
  const closed = (c: Conn, how: string) => {
    if (ending || c.closedAt !== undefined) return;
    c.closedAt = now();
    clearTimeout(c.timer);
    closedBy[how] = (closedBy[how] ?? 0) + 1;
  };
  const trickle = (c: Conn, n: number) => {
    if (ending || c.closedAt !== undefined || n >= MAX_LINES || now() >= endAt) return;
    c.sock!.write(n === 0 ? "GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: slowloris\r\n" : `X-Slow-${n}: ${n}\r\n`);
    lines++;
    // The first header line after a random part of the interval, so the writes spread evenly over time.
    c.timer = setTimeout(() => trickle(c, n + 1), n === 0 ? Math.random() * trickleMs : trickleMs);
  };
  const one = () =>
    new Promise<void>((resolve) => {
      const c: Conn = { openedAt: NaN, answered: false };
      const failed = (code: string) => {
        notConnected[code] = (notConnected[code] ?? 0) + 1;
        resolve();
      };
      const timer = setTimeout(() => failed("connect timeout"), CONNECT_TIMEOUT_MS);
      Bun.connect({
        hostname: host,
        port,
        socket: {
          open(s) {
            clearTimeout(timer);
            c.openedAt = lastConnect = now();
            c.sock = s;
            conns.push(c);
            resolve();
            if (trickleMs > 0) trickle(c, 0);
          },
          data() {
            c.answered = true;
          },
          end: () => closed(c, "fin"),
          close: (_s, e) => closed(c, e ? "error" : "fin"),
          error: () => closed(c, "error"),
          connectError(_s, e) {
            clearTimeout(timer);
            failed(errCode(e));
          },
        },
      }).catch((e) => {
        clearTimeout(timer);
        failed(errCode(e));
      });
    });
  const timeline: number[] = [];
  const sampler = setInterval(() => timeline.push(conns.filter((c) => c.closedAt === undefined).length), 1000);
  let next = 0;
  await Promise.all(
    Array.from({ length: CONNECTS_IN_FLIGHT }, async () => {
      while (next < k && now() < endAt) {
        next++;
        await one();
      }
    }),
  );
  await sleep(Math.max(0, endAt - now()));
  clearInterval(sampler);
  ending = true;
  const holds = conns.map((c) => ({ s: Math.round((c.closedAt ?? endAt) - c.openedAt) / 1000, open: c.closedAt === undefined }));
  for (const c of conns) {
    clearTimeout(c.timer);
    c.sock?.terminate();
  }
  return { k, connected: conns.length, notConnected, connectSeconds: (lastConnect - t0) / 1000, holds, closedBy, answered: conns.filter((c) => c.answered).length, lines, timeline };
}

/** One GET on a new connection: its latency in ms, or why it failed. */
function request(host: string, port: number, tls: boolean, timeoutMs: number): Promise<number | Failure> {
  return new Promise((resolve) => {
    const t0 = now();
    let settled = false;
    let buf = Buffer.alloc(0);
    let sock: Socket<undefined> | undefined;
    const done = (r: number | Failure) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock?.terminate();
      resolve(r);
    };
    const timer = setTimeout(() => done("timeout"), timeoutMs);
    const send = (s: Socket<undefined>) => void s.write("GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n");
    Bun.connect({
      hostname: host,
      port,
      ...(tls ? { tls: { rejectUnauthorized: false, serverName: "bench.test" } } : {}),
      socket: {
        open(s) {
          sock = s;
          if (!tls) send(s);
        },
        handshake(s, ok) {
          if (ok) send(s);
          else done("tls");
        },
        data(_s, chunk) {
          buf = Buffer.concat([buf, chunk]);
          const head = buf.indexOf("\r\n\r\n");
          if (head < 0) return;
          const text = buf.subarray(0, head).toString("latin1");
          const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
          if (status !== 200) return done("status");
          const length = /\r\ncontent-length:\s*(\d+)/i.exec(text);
          // Every peer forwards the origin's Content-Length ("ok\n"); without one the body ends at the close.
          if (length && buf.length - head - 4 >= Number(length[1])) done(now() - t0);
        },
        close() {
          const text = buf.toString("latin1");
          done(/^HTTP\/1\.[01] 200/.test(text) && !/\r\ncontent-length:/i.test(text) ? now() - t0 : buf.length ? "short" : "reset");
        },
        error(_s, e) {
          done(/ECONNRESET|EPIPE/.test(errCode(e)) ? "reset" : tls && !buf.length ? "tls" : "connect");
        },
        connectError(_s, e) {
          done(errCode(e) === "ECONNREFUSED" ? "refused" : errCode(e) === "ECONNRESET" ? "reset" : "connect");
        },
      },
    }).catch((e) => done(errCode(e) === "ECONNREFUSED" ? "refused" : "connect"));
  });
}

export const percentile = (sorted: readonly number[], p: number): number | null => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : null);

async function normal(host: string, port: number, tls: boolean, rate: number, seconds: number, timeoutMs: number): Promise<NormalResult> {
  const n = Math.round(rate * seconds);
  const t0 = now();
  const failed = Object.fromEntries(FAILURES.map((f) => [f, 0])) as Record<Failure, number>;
  const latencies: number[] = [];
  const timed: { at: number; ms: number }[] = [];
  const samples: string[] = [];
  const pending: Promise<void>[] = [];
  const stalls: string[] = [];
  let maxLag = 0;
  let tick = now();
  const lag = setInterval(() => {
    const late = now() - tick - LAG_TICK_MS;
    tick = now();
    maxLag = Math.max(maxLag, late);
    if (late >= STALL_MS && stalls.length < 10) stalls.push(`${((tick - t0) / 1000).toFixed(1)} s: ${late.toFixed(0)} ms`);
  }, LAG_TICK_MS);
  for (let i = 0; i < n; i++) {
    await sleep(Math.max(0, t0 + (i * 1000) / rate - now()));
    const at = (now() - t0) / 1000;
    pending.push(
      request(host, port, tls, timeoutMs).then((r) => {
        if (typeof r === "number") {
          latencies.push(r);
          timed.push({ at, ms: r });
        }
        else {
          failed[r]++;
          if (samples.length < 10) samples.push(`${at.toFixed(1)} s: ${r}`);
        }
      }),
    );
  }
  await Promise.all(pending);
  clearInterval(lag);
  latencies.sort((a, b) => a - b);
  const round = (v: number | null) => (v === null ? null : Math.round(v * 100) / 100);
  return { sent: n, ok: latencies.length, failed, failedTotal: n - latencies.length, p50Ms: round(percentile(latencies, 50)), p99Ms: round(percentile(latencies, 99)), maxMs: round(latencies.at(-1) ?? null), samples, slowest: timed.sort((a, b) => b.ms - a.ms).slice(0, 5).map((t) => `${t.at.toFixed(1)} s: ${t.ms.toFixed(0)} ms`), stalls, maxLagMs: Math.round(maxLag) };
}

if (import.meta.main) {
  const [role, host = "", portArg = "", ...rest] = process.argv.slice(2);
  const num = (v: string | undefined, min: number, max: number, what: string) => {
    const x = Number(v);
    if (!(Number.isFinite(x) && x >= min && x <= max)) {
      console.error(`hostile: ${what} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
      process.exit(2);
    }
    return x;
  };
  const port = num(portArg, 1, 65535, "PORT");
  process.on("SIGTERM", () => process.exit(0));
  if (role === "attack") {
    const [k, seconds, trickleMs] = [num(rest[0], 1, 15_000, "K"), num(rest[1], 1, 600, "SECONDS"), num(rest[2], 0, 600_000, "TRICKLE_MS")];
    setTimeout(() => process.exit(1), (seconds + 30) * 1000).unref();
    console.log(JSON.stringify(await attack(host, port, k, seconds, trickleMs)));
  } else if (role === "normal" && (rest[0] === "plain" || rest[0] === "tls")) {
    const [rate, seconds, timeoutMs] = [num(rest[1], 1, 1000, "RATE"), num(rest[2], 1, 600, "SECONDS"), num(rest[3], 1, 60_000, "TIMEOUT_MS")];
    setTimeout(() => process.exit(1), (seconds + 30) * 1000).unref();
    console.log(JSON.stringify(await normal(host, port, rest[0] === "tls", rate, seconds, timeoutMs)));
  } else {
    console.error("usage: bun bench/hostile.ts attack HOST PORT K SECONDS TRICKLE_MS | normal HOST PORT plain|tls RATE SECONDS TIMEOUT_MS");
    process.exit(2);
  }
  process.exit(0);
}
