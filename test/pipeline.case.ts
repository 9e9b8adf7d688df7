// The client pipeline's stages (src/proxy/pipeline.ts), one suite run
// against every protocol that ends it: tcp (pipeline-tcp.test.ts) and http
// (pipeline-http.test.ts), as hono runs one router suite against every
// router. What it shows, in each mode: every stage counts against the
// connection cap; its deadline closes a stalled client, is counted in
// /metrics and gives the slot back; the slot comes back exactly once on
// every path (success, deadline, reset, FIN mid-stage, refused).
import { describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { writeCert } from "./helpers/certs";
import type { Engine } from "../src/config/service";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import type { ProxyFixture } from "./helpers/fixture";

/** What differs between the protocols: the origin and what a normal client sends and expects. */
export interface PipelineSubject {
  readonly mode: "tcp" | "http";
  /** An origin on 127.0.0.1 answering `request`. */
  origin(): TCPSocketListener<any>;
  /** What a normal client sends (then half-closes)… */
  readonly request: string;
  /** …and what the answer starts with. */
  readonly answer: string;
  /** tcp: the data plane (--engine); absent, the default (auto: the engine where it serves the stage, Bun's sockets for TLS). */
  readonly engine?: Engine;
}

export const HOST = "192.0.2.10";
const PORT = 7443;
// A trusted load balancer: any address of the namespace's local 192.0.2.0/24 route outside the steered /25.
const LB = "192.0.2.200";

export type Talk = { kind: "data" | "reset" | "refused" | "timeout"; bytes: string; ms: number };

/**
 * Connect (TLS or not, from `from`), send `payload` and half-close (unless
 * `fin` is false), collect until the peer closes. `stall`: send nothing,
 * not even a ClientHello (a plain TCP connect to a TLS port).
 */
export function talk(o: { tls?: boolean; from?: string; payload?: string | Uint8Array; fin?: boolean; timeoutMs?: number; port?: number }): Promise<Talk> {
  const { tls = false, payload = "", fin = true, timeoutMs = 8000, port = PORT } = o;
  const t0 = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    let sock: Socket<any> | undefined;
    const settle = (kind: Talk["kind"]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ kind, bytes: Buffer.concat(chunks).toString("latin1"), ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => {
      sock?.terminate();
      settle("timeout");
    }, timeoutMs);
    const send = (s: Socket<any>) => {
      if (payload.length) s.write(payload);
      if (fin) s.shutdown();
    };
    Bun.connect<any>({
      hostname: HOST,
      port,
      allowHalfOpen: true,
      ...(o.from ? { localAddress: o.from } : {}),
      ...(tls ? { tls: { rejectUnauthorized: false, serverName: "edge.test" } } : {}),
      socket: {
        open(s) {
          sock = s;
          if (!tls) send(s);
        },
        handshake(s) {
          send(s);
        },
        data(_s, d) {
          chunks.push(Buffer.from(d));
        },
        end(s) {
          s.end();
        },
        close(_s, err) {
          settle(err ? "reset" : "data");
        },
        connectError(_s, err) {
          settle((err as { code?: string }).code === "ECONNREFUSED" ? "refused" : "reset");
        },
      },
    }).catch((err) => settle(err?.code === "ECONNREFUSED" ? "refused" : "reset"));
  });
}

/**
 * A balancer's client: a PROXY header, then TLS on the same connection (node's
 * client; the header and the ClientHello in one segment), `payload`, FIN,
 * collect until the peer closes.
 */
export function talkProxiedTls(o: { from: string; header: string; payload: string; timeoutMs?: number }): Promise<Talk> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const settle = (kind: Talk["kind"]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      raw.destroy();
      resolve({ kind, bytes: Buffer.concat(chunks).toString("latin1"), ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => settle("timeout"), o.timeoutMs ?? 8000);
    const raw = netConnect({ host: HOST, port: PORT, localAddress: o.from }, () => {
      raw.cork();
      raw.write(o.header);
      const t = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: "edge.test" });
      process.nextTick(() => raw.uncork());
      t.on("secureConnect", () => t.end(o.payload));
      t.on("data", (d: Buffer) => chunks.push(d));
      t.on("end", () => settle("data"));
      t.on("error", () => settle("reset"));
    });
    raw.on("error", (e: { code?: string }) => settle(e.code === "ECONNREFUSED" ? "refused" : "reset"));
  });
}

/** A connection that sends `first` (maybe nothing), then holds still; `closed` says how and when the peer ended it. */
export function stall(o: { from?: string; first?: string | Uint8Array; port?: number } = {}): Promise<{ socket: Socket<any>; closed: Promise<Talk> }> {
  const t0 = performance.now();
  return new Promise((ready, fail) => {
    let done: (t: Talk) => void = () => {};
    const closed = new Promise<Talk>((r) => (done = r));
    Bun.connect<any>({
      hostname: HOST,
      port: o.port ?? PORT,
      allowHalfOpen: true,
      ...(o.from ? { localAddress: o.from } : {}),
      socket: {
        open(s) {
          if (o.first?.length) s.write(o.first);
          ready({ socket: s, closed });
        },
        data() {},
        close(_s, err) {
          done({ kind: err ? "reset" : "data", bytes: "", ms: performance.now() - t0 });
        },
        connectError(_s, err) {
          fail(err);
        },
      },
    }).catch(fail);
  });
}

/** Series of /metrics as "name{labels}" → value. */
export async function metrics(admin: string): Promise<Map<string, number>> {
  const text = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^(edgeproxy_\w+(?:\{[^}]*\})?) (\S+)$/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

/** Poll until `ok` holds (bounded): how a test waits for the data plane to catch up. */
export async function until(what: string, ok: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await ok())) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await Bun.sleep(25);
  }
}

/** A throwaway TLS certificate for edge.test. */

export function pipelineCases(f: ProxyFixture, subject: PipelineSubject): void {
  const CAP = 4;

  async function start(extra: string[]): Promise<{ admin: string; dir: string }> {
    const dir = mkdtempSync(join(tmpdir(), "ep-pipe-"));
    const admin = join(dir, "admin.sock");
    const origin = subject.origin();
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start([
      "--mode", subject.mode, "--ports", "7000-7999", "--prefix", "192.0.2.0/25",
      "--origin", `127.0.0.1:${origin.port}`, "--admin", admin, "--max-connections", String(CAP), ...(subject.engine ? ["--engine", subject.engine] : []), ...extra,
    ]);
    return { admin, dir };
  }

  const stages = [
    {
      label: "tls_handshake",
      stage: "tls_handshake",
      args: (dir: string) => {
        const c = writeCert(dir, { cn: "edge.test" });
        return ["--tls-cert", c.cert, "--tls-key", c.key, "--handshake-timeout", "2s"];
      },
      // A TCP connect that never sends a ClientHello.
      stall: () => stall(),
      normal: () => talk({ tls: true, payload: subject.request }),
      errors: "edgeproxy_tls_handshake_errors_total",
    },
    {
      label: "proxy_header",
      stage: "proxy_header",
      args: (_dir: string) => ["--accept-proxy", `${LB}/32`, "--proxy-header-timeout", "2s"],
      // Half a PROXY v1 header from the balancer, then nothing.
      stall: () => stall({ from: LB, first: "PROXY TCP4 203.0.113" }),
      normal: () => talk({ from: LB, payload: `PROXY TCP4 203.0.113.7 ${HOST} 5555 ${PORT}\r\n${subject.request}` }),
      errors: "edgeproxy_proxy_header_errors_total",
    },
    {
      // The PROXY header of a balancer, then TLS on the same connection: the header stage (read by peeking) and its deadline.
      label: "proxy_header then TLS",
      stage: "proxy_header",
      args: (dir: string) => {
        const c = writeCert(dir, { cn: "edge.test" });
        return ["--accept-proxy", `${LB}/32`, "--proxy-header-timeout", "2s", "--tls-cert", c.cert, "--tls-key", c.key];
      },
      stall: () => stall({ from: LB, first: "PROXY TCP4 203.0.113" }),
      normal: () => talkProxiedTls({ from: LB, header: `PROXY TCP4 203.0.113.7 ${HOST} 5555 ${PORT}\r\n`, payload: subject.request }),
      errors: "edgeproxy_proxy_header_errors_total",
    },
  ] as const;

  describe(`client pipeline (${subject.mode}${subject.engine ? `, engine ${subject.engine}` : ""})`, () => {
    test.each(stages)("$label: stalled clients hold cap slots until the deadline closes them, counted; then normal clients are served again", async (st) => {
      const dir = mkdtempSync(join(tmpdir(), "ep-pipe-cert-"));
      try {
        const { admin } = await start(st.args(dir));
        const before = await st.normal();
        expect(before.bytes.startsWith(subject.answer)).toBe(true);
        const stalled = await Promise.all(Array.from({ length: CAP }, () => st.stall()));
        // Each stalled connection is in the stage and holds a slot: the cap is full, steering paused.
        await until("the stalled connections fill the cap", async () => (await metrics(admin)).get("edgeproxy_connection_cap_active") === CAP);
        const refused = await st.normal();
        expect(refused.kind === "refused" || refused.kind === "reset").toBe(true);
        expect(refused.bytes).toBe("");
        // The deadline (2 s, on a 100 ms clock) resets every one of them.
        const ends = await Promise.all(stalled.map((s) => s.closed));
        for (const e of ends) {
          expect(e.kind).toBe("reset");
          expect(e.ms).toBeGreaterThan(1800);
          expect(e.ms).toBeLessThan(4000);
        }
        await until("the cap is free again", async () => (await metrics(admin)).get("edgeproxy_connection_cap_active") === 0);
        const after = await st.normal();
        expect(after.bytes.startsWith(subject.answer)).toBe(true);
        const n = await metrics(admin);
        expect(n.get(`edgeproxy_deadline_expired_total{service="default",stage="${st.stage}"}`)).toBe(CAP);
        expect(n.get(`${st.errors}{service="default",reason="timeout"}`)).toBe(CAP);
        expect(await f.ep!.stop()).toBe(0);
        expect(f.ep!.stderr).toContain(`deadlines expired: ${st.stage} ${CAP}`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }, 30_000);

    test.each(stages)("$label: the cap slot comes back exactly once on every path (success, reset, FIN, refused mid-stage)", async (st) => {
      const dir = mkdtempSync(join(tmpdir(), "ep-pipe-cert-"));
      try {
        const { admin } = await start(st.args(dir));
        const rounds = CAP + 2; // more than the cap: one leaked slot per round would fill it
        for (let i = 0; i < rounds; i++) {
          expect((await st.normal()).bytes.startsWith(subject.answer)).toBe(true);
          // Reset mid-stage (after the half header is read: an RST discards unread bytes).
          const r = await st.stall();
          await Bun.sleep(50);
          r.socket.terminate();
          await r.closed;
          // FIN mid-stage: before a ClientHello; mid-header (truncated).
          const e = await st.stall();
          e.socket.end();
          await e.closed;
          // Refused by the stage: a plaintext request to the TLS port; a request without a PROXY header from the balancer.
          const bad = await talk({ from: LB, payload: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeoutMs: 4000 });
          expect(bad.bytes.startsWith(subject.answer)).toBe(false);
        }
        await until("every slot back", async () => (await metrics(admin)).get("edgeproxy_connection_cap_active") === 0);
        expect((await st.normal()).bytes.startsWith(subject.answer)).toBe(true);
        const m = await metrics(admin);
        expect(m.get("edgeproxy_connection_cap_active")).toBe(0);
        expect(m.get(`edgeproxy_deadline_expired_total{service="default",stage="${st.stage}"}`)).toBe(0);
        // Each counted once: the plaintext request and the FIN before a ClientHello (Bun reports it as a
        // failed handshake; an RST before a byte is not counted); a missing header, and half headers cut by RST or FIN.
        if (st.stage === "tls_handshake") expect(m.get(`${st.errors}{service="default",reason="failed"}`)).toBe(2 * rounds);
        else {
          expect(m.get(`${st.errors}{service="default",reason="signature"}`)).toBe(rounds);
          expect(m.get(`${st.errors}{service="default",reason="truncated"}`)).toBe(2 * rounds);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }, 60_000);
  });
}
