// http's client deadlines (config/deadlines.ts): the request head from its
// first byte (a new connection's first one from accept), the wait between
// keep-alive requests, and the gaps of a request body. Each fires on time, is
// counted in /metrics and frees the connection's cap slot; a slowloris of
// 1,000 connections is cut at the head deadline while normal clients are
// answered promptly throughout.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { HOST, metrics, stall, talk, until } from "./pipeline.case";

const f = proxyFixture();
const PORT = 7443;

async function start(extra: string[]): Promise<{ admin: string; done: () => void; origin: ReturnType<typeof httpOrigin> }> {
  const dir = mkdtempSync(join(tmpdir(), "ep-dl-"));
  const admin = join(dir, "admin.sock");
  const origin = httpOrigin("127.0.0.1", "origin");
  f.servers.push(origin.listener);
  f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "7000-7999", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`, "--admin", admin, ...extra]);
  return { admin, origin, done: () => rmSync(dir, { recursive: true, force: true }) };
}

const GET = "GET / HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n";
const expired = (m: Map<string, number>, stage: string) => m.get(`edgeproxy_deadline_expired_total{service="default",stage="${stage}"}`);

/** A kept-alive connection: write, and read what comes, with the time of each event. */
function keepAlive(): Promise<{ s: Socket<any>; got: () => string; closed: Promise<number>; t0: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    let buf = "";
    let done: (ms: number) => void = () => {};
    const closed = new Promise<number>((r) => (done = r));
    Bun.connect<any>({
      hostname: HOST,
      port: PORT,
      socket: {
        open: (s) => resolve({ s, got: () => buf, closed, t0 }),
        data: (_s, d) => void (buf += Buffer.from(d).toString("latin1")),
        close: () => done(performance.now()),
        connectError: (_s, e) => reject(e),
      },
    }).catch(reject);
  });
}

describe("http client deadlines", () => {
  test("slowloris: 1,000 connections trickling header lines, replaced as they are cut, are each closed at the head deadline (408, counted) while curl's requests are answered within 100 ms throughout", async () => {
    const w = await start(["--header-timeout", "2s"]);
    try {
      const N = 1000;
      // As a slowloris tool does: every cut connection is replaced at once, for ATTACK_MS.
      const ATTACK_MS = 6000;
      type Attacker = { s: Socket<any>; opened: number; closedAt: number; got: string };
      const attackers: Attacker[] = [];
      const live = new Set<Attacker>();
      let t0 = performance.now();
      let connectErrors = 0;
      const connectOne = (): Promise<void> =>
        new Promise<void>((resolve) => {
          const a: Attacker = { s: undefined as unknown as Socket<any>, opened: 0, closedAt: 0, got: "" };
          Bun.connect<any>({
            hostname: HOST,
            port: 7000 + (attackers.length % 1000),
            socket: {
              open(s) {
                a.s = s;
                a.opened = performance.now();
                s.write("GET / HTTP/1.1\r\n");
                attackers.push(a);
                live.add(a);
                resolve();
              },
              data: (_s, d) => void (a.got += Buffer.from(d).toString("latin1")),
              close() {
                a.closedAt = performance.now();
                live.delete(a);
                if (a.closedAt - t0 < ATTACK_MS) void connectOne();
              },
              connectError: () => (connectErrors++, resolve()),
            },
          }).catch(() => (connectErrors++, resolve()));
        });
      t0 = performance.now();
      // Opened over a second, as a slowloris tool ramps up (and so their deadlines do not all fall on one tick).
      for (let i = 0; i < N; i += 50) {
        await Promise.all(Array.from({ length: 50 }, connectOne));
        await Bun.sleep(50);
      }
      const openMs = performance.now() - t0;
      // One header line per connection about every second, spread over the second (one timer, not 1,000).
      const trickle = setInterval(() => {
        let k = 0;
        for (const a of live) if (k++ % 20 === Math.floor(performance.now() / 50) % 20) a.s.write(`X-Slow: ${"a".repeat(20)}\r\n`);
      }, 50);
      // Normal clients throughout the attack, one after another on fresh connections.
      const latencies: number[] = [];
      const concurrent: number[] = [];
      try {
        while (performance.now() - t0 < ATTACK_MS) {
          concurrent.push(live.size);
          // curl measures its own time (connect to last byte), free of this process's event loop, busy with the attack.
          const p = Bun.spawn(["curl", "-sS", "-o", "/dev/null", "--max-time", "3", "-w", "%{http_code} %{time_total}", `http://${HOST}:${PORT}/`], { stdout: "pipe", stderr: "pipe" });
          const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
          const [code, seconds] = out.split(" ");
          expect(code).toBe("200");
          latencies.push(Number(seconds) * 1000);
          await Bun.sleep(50);
        }
        await until("every attacker cut", async () => live.size === 0, 5000);
      } finally {
        clearInterval(trickle);
      }
      const held = attackers.map((a) => a.closedAt - a.opened);
      const m = await metrics(w.admin);
      const sorted = [...latencies].sort((a, b) => a - b);
      console.log(
        `slowloris: ${N} connections opened in ${openMs.toFixed(0)} ms, ${attackers.length} in ${ATTACK_MS} ms (${Math.min(...concurrent)}-${Math.max(...concurrent)} at once); ` +
          `each held ${Math.min(...held).toFixed(0)}-${Math.max(...held).toFixed(0)} ms; ${latencies.length} normal requests, ` +
          `curl's time median ${sorted[sorted.length >> 1]!.toFixed(1)} ms, max ${sorted[sorted.length - 1]!.toFixed(1)} ms`,
      );
      expect(connectErrors).toBe(0);
      expect(attackers.length).toBeGreaterThanOrEqual(2 * N);
      // Every attacker closed at the deadline (2 s from accept, on a 100 ms clock: up to a tick early), none answered 200.
      expect(Math.min(...held)).toBeGreaterThan(1800);
      expect(Math.max(...held)).toBeLessThan(3500);
      expect(attackers.filter((a) => !a.got.startsWith("HTTP/1.1 408")).length).toBe(0);
      expect(expired(m, "request_head")).toBe(attackers.length);
      expect(latencies.length).toBeGreaterThanOrEqual(20);
      expect(sorted[sorted.length - 1]!).toBeLessThan(100);
      await until("every slot back", async () => (await metrics(w.admin)).get("edgeproxy_connection_cap_active") === 0);
    } finally {
      w.done();
    }
  }, 60_000);

  test("a request body that trickles slower than one byte per body_timeout is cut (408, counted); one just under it passes", async () => {
    const w = await start(["--body-timeout", "1s"]);
    try {
      const head = "POST /up HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 8\r\nConnection: close\r\n\r\n";
      // Steady: a byte every 400 ms, 3.2 s in all: longer than the deadline, but no gap reaches it.
      const ok = await keepAlive();
      ok.s.write(head);
      for (let i = 0; i < 8; i++) {
        await Bun.sleep(400);
        ok.s.write("b");
      }
      await ok.closed;
      expect(ok.got()).toStartWith("HTTP/1.1 200");
      expect(w.origin.seen.map((r) => r.body)).toEqual(["bbbbbbbb"]);
      // A gap of 1.6 s: cut about 1 s after the last byte.
      const slow = await keepAlive();
      slow.s.write(head + "bb");
      const last = performance.now();
      const closedAt = await Promise.race([slow.closed, Bun.sleep(5000).then(() => Infinity)]);
      expect(closedAt - last).toBeGreaterThan(900);
      expect(closedAt - last).toBeLessThan(2000);
      expect(slow.got()).toStartWith("HTTP/1.1 408");
      const m = await metrics(w.admin);
      expect(expired(m, "request_body")).toBe(1);
      expect(m.get("edgeproxy_connection_cap_active")).toBe(0);
      // The origin never took the truncated body as a request.
      expect(w.origin.seen.length).toBe(1);
    } finally {
      w.done();
    }
  }, 30_000);

  test("keep-alive: the next request must start within keepalive_timeout (quiet close, counted); a silent new connection gets the head deadline", async () => {
    const w = await start(["--keepalive-timeout", "1s", "--header-timeout", "2s"]);
    try {
      const req = "GET / HTTP/1.1\r\nHost: edge.test\r\n\r\n";
      const c = await keepAlive();
      c.s.write(req);
      await until("the first answer", async () => c.got().includes("origin"));
      // A next request within the keep-alive time is served on the same connection.
      await Bun.sleep(600);
      c.s.write(req);
      await until("the second answer", async () => c.got().split("HTTP/1.1 200").length === 3);
      const answered = performance.now();
      const closedAt = await Promise.race([c.closed, Bun.sleep(5000).then(() => Infinity)]);
      expect(closedAt - answered).toBeGreaterThan(900);
      expect(closedAt - answered).toBeLessThan(1800);
      // Closed quietly: nothing after the two answers.
      expect(c.got().split("HTTP/1.1").length).toBe(3);
      // A connection that never sends a byte: the first request's head is due within header_timeout of accept.
      const silent = await stall();
      const s = await silent.closed;
      expect(s.ms).toBeGreaterThan(1900);
      expect(s.ms).toBeLessThan(3000);
      const m = await metrics(w.admin);
      expect(expired(m, "keepalive")).toBe(1);
      expect(expired(m, "request_head")).toBe(1);
      expect(m.get("edgeproxy_connection_cap_active")).toBe(0);
      expect(m.get('edgeproxy_idle_timeouts_total{service="default"}')).toBe(0);
    } finally {
      w.done();
    }
  }, 30_000);

  test("a silent connection to an instance whose data plane went idle (nothing open: it waits for events alone) still gets the head deadline", async () => {
    const w = await start(["--header-timeout", "1s"]);
    try {
      // No connection yet: the engine's thread stops sweeping (HttpEngine.idle, src/proxy/udp/worker.ts); the first one must start it again.
      await Bun.sleep(700);
      const silent = await stall();
      const s = await silent.closed;
      expect(s.ms).toBeGreaterThan(900);
      expect(s.ms).toBeLessThan(2500);
      const m = await metrics(w.admin);
      expect(expired(m, "request_head")).toBe(1);
      expect(m.get("edgeproxy_connection_cap_active")).toBe(0);
    } finally {
      w.done();
    }
  }, 30_000);
});
