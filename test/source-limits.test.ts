// Per-client limits end to end (issue 15): edgeproxy processes in the test's
// own namespace, the real BPF program, real connections from several client
// addresses. The program's parts alone: test/source-limits-bpf.test.ts.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCert } from "./helpers/certs";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin, exchange, text } from "./helpers/net";
import { proxyV1Header } from "../src/proxy/proxyheader/encode";
import { parseAddress } from "../src/config/address";
import { udpOrigin } from "./helpers/udp";
import { httpOrigin } from "./helpers/http";
import { workdir, writeConfig } from "./helpers/pools";
import { stall, talk } from "./pipeline.case";

/** One datagram from a new socket on `from` (a new flow) and its reply, or "<timeout>". */
async function udpFrom(from: string, host: string, port: number, payload: string, timeoutMs = 1500): Promise<string> {
  let done: (s: string) => void = () => {};
  const result = new Promise<string>((r) => (done = r));
  const sock = await Bun.udpSocket({ hostname: from, connect: { hostname: host, port }, socket: { data: (_s, d) => done(Buffer.from(d).toString()) } });
  const timer = setTimeout(() => done("<timeout>"), timeoutMs);
  try {
    sock.send(payload);
    return await result;
  } finally {
    clearTimeout(timer);
    sock.close();
  }
}

const f = proxyFixture();

interface Held {
  readonly outcome: "open" | "refused" | "reset" | "timeout";
  close(): void;
}

/** A connection from `from` that proves it reached the origin (an echo) and stays open until close(). */
function hold(host: string, port: number, from: string, preamble: Uint8Array = new Uint8Array(0), timeoutMs = 3000, say = "ping", answered: (got: string) => boolean = (got) => got === "ping"): Promise<Held> {
  return new Promise((resolve) => {
    let sock: Socket<undefined> | undefined;
    let settled = false;
    let got = "";
    const close = () => sock?.end();
    const settle = (outcome: Held["outcome"]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (outcome !== "open") sock?.terminate();
      resolve({ outcome, close });
    };
    const timer = setTimeout(() => settle("timeout"), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      ...{ localAddress: from },
      socket: {
        open(s) {
          sock = s;
          s.write(Buffer.concat([preamble, Buffer.from(say)]));
        },
        data(_s, d) {
          got += d.toString();
          if (answered(got)) settle("open");
        },
        close() {
          settle("reset");
        },
        connectError(_s, err) {
          settle((err as { code?: string }).code === "ECONNREFUSED" ? "refused" : "reset");
        },
      },
    }).catch((err) => settle(err?.code === "ECONNREFUSED" ? "refused" : "reset"));
  });
}

/** A TLS connection from `from` that proves it reached the origin (an echo) and stays open until close(). */
function tlsHold(host: string, port: number, from: string, timeoutMs = 3000): Promise<Held> {
  return new Promise((resolve) => {
    let sock: Socket<undefined> | undefined;
    let settled = false;
    const settle = (outcome: Held["outcome"]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (outcome !== "open") sock?.terminate();
      resolve({ outcome, close: () => sock?.end() });
    };
    const timer = setTimeout(() => settle("timeout"), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      ...{ localAddress: from },
      tls: { rejectUnauthorized: false, serverName: "edge.test" },
      socket: {
        open(s) {
          sock = s;
        },
        handshake(s) {
          s.write("ping");
        },
        data(_s, d) {
          if (d.toString() === "ping") settle("open");
        },
        close() {
          settle("reset");
        },
        connectError(_s, err) {
          settle((err as { code?: string }).code === "ECONNREFUSED" ? "refused" : "reset");
        },
      },
    }).catch((err) => settle(err?.code === "ECONNREFUSED" ? "refused" : "reset"));
  });
}

async function metrics(admin: string): Promise<string> {
  return (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
}

/** Sum of the samples of `name` whose label text contains every one of `labels`. */
function sum(text: string, name: string, ...labels: string[]): number {
  let n = 0;
  for (const m of text.matchAll(new RegExp(`^edgeproxy_${name}\\{([^}]*)\\} (\\d+)$`, "gm"))) if (labels.every((l) => m[1]!.includes(l))) n += Number(m[2]);
  return n;
}

function adminDir(): { admin: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "ep-srclimit-"));
  return { admin: join(dir, "admin.sock"), done: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Wait until `ok()` or `ms` pass. */
async function until(ok: () => Promise<boolean>, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await ok()) return true;
    await Bun.sleep(20);
  }
  return ok();
}

describe("per-client limits", () => {
  test("--source-connections holds exactly across 2 workers: N open, the next refused in the kernel, another client unaffected, a close frees a place", async () => {
    const { admin, done } = adminDir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const N = 6;
    try {
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`, "--source-connections", String(N)]);
      const A = "192.0.2.201";
      const B = "192.0.2.202";
      const held: Held[] = [];
      for (let i = 0; i < N; i++) held.push(await hold("192.0.2.1", 7000 + i, A));
      expect(held.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      const workers = (await (await fetch("http://localhost/workers", { unix: admin } as RequestInit)).json()) as { services: { total: number }[] }[];
      console.log(`connections per worker: ${workers.map((w) => w.services[0]!.total).join(", ")}`);
      // The N+1th, to another port too: the count is the client's, for the whole service.
      for (const port of [7000, 7050]) expect((await hold("192.0.2.1", port, A)).outcome).toBe("refused");
      const other = await hold("192.0.2.1", 7000, B);
      expect(other.outcome).toBe("open");
      other.close();
      const m = await metrics(admin);
      expect(sum(m, "kernel_source_limited_total", 'limit="connections"')).toBe(2);
      expect(sum(m, "kernel_drops_total", 'reason="limited"')).toBe(2);
      // Only the accepted ones reached user space.
      expect(sum(m, "connections_total")).toBe(N + 1);
      // Close one: its count goes at close, and a new one is let in; then the limit holds again.
      held.pop()!.close();
      expect(
        await until(async () => {
          const h = await hold("192.0.2.1", 7001, A, undefined, 1000);
          if (h.outcome === "open") held.push(h);
          return h.outcome === "open";
        }),
      ).toBe(true);
      expect((await hold("192.0.2.1", 7002, A)).outcome).toBe("refused");
      for (const h of held) h.close();
      // All closed: the client's count is back to zero, N open again.
      await Bun.sleep(200);
      const again: Held[] = [];
      for (let i = 0; i < N; i++) again.push(await hold("192.0.2.1", 7010 + i, A));
      expect(again.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      for (const h of again) h.close();
    } finally {
      done();
    }
  }, 40_000);

  test("a crashed worker's counts are not stuck: the restarted workers reclaim them", async () => {
    const { admin, done } = adminDir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const N = 3;
    type W = { index: number; pid: number; ready: boolean };
    const workers = async () => (await (await fetch("http://localhost/workers", { unix: admin } as RequestInit)).json()) as W[];
    try {
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`, "--source-connections", String(N)]);
      const A = "192.0.2.201";
      const held: Held[] = [];
      for (let i = 0; i < N; i++) held.push(await hold("192.0.2.1", 7000 + i, A));
      expect(held.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      expect((await hold("192.0.2.1", 7000, A)).outcome).toBe("refused");
      // SIGKILL: no close handler runs, so nothing takes the counts back but the reclaim.
      const before = await workers();
      for (const w of before) process.kill(w.pid, "SIGKILL");
      const restarted = await until(async () => {
        const now = await workers();
        return now.every((w) => w.ready && !before.some((b) => b.pid === w.pid));
      }, 15_000);
      expect(restarted).toBe(true);
      expect(f.ep.stderr).toMatch(/released \d+ client connection counts of processes that are gone/);
      const again: Held[] = [];
      for (let i = 0; i < N; i++) again.push(await hold("192.0.2.1", 7010 + i, A));
      expect(again.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      expect((await hold("192.0.2.1", 7020, A)).outcome).toBe("refused");
      for (const h of [...held, ...again]) h.close();
    } finally {
      done();
    }
  }, 40_000);

  test("a reload changes the limit: connections open before it still count, and are given back when they close", async () => {
    const w = workdir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    try {
      writeConfig(w, { origins: [`127.0.0.1:${origin.port}`], ports: "7000-7099", extra: "source_connections = 1" });
      f.ep = await EdgeproxyProcess.start(["--config", w.file, "--workers", "1"]);
      const A = "192.0.2.201";
      const first = await hold("192.0.2.1", 7000, A);
      expect(first.outcome).toBe("open");
      expect((await hold("192.0.2.1", 7001, A)).outcome).toBe("refused");
      writeConfig(w, { origins: [`127.0.0.1:${origin.port}`], ports: "7000-7099", extra: "source_connections = 3" });
      const r = await runEdgeproxy(["reload", "--admin", w.admin]);
      expect([r.code, r.stderr]).toEqual([0, ""]);
      const more = [await hold("192.0.2.1", 7002, A), await hold("192.0.2.1", 7003, A)];
      expect(more.map((h) => h.outcome)).toEqual(["open", "open"]);
      expect((await hold("192.0.2.1", 7004, A)).outcome).toBe("refused");
      // The connection from before the reload gives its count back through the old data plane.
      first.close();
      let last: Held | undefined;
      expect(
        await until(async () => {
          last = await hold("192.0.2.1", 7005, A, undefined, 1000);
          return last.outcome === "open";
        }),
      ).toBe(true);
      for (const h of [...more, last!]) h.close();
    } finally {
      w.done();
    }
  }, 30_000);

  test("--source-rate: a flooding client is refused in the kernel (limited moves, user space accepts none of them); other clients pass", async () => {
    const { admin, done } = adminDir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    try {
      f.ep = await EdgeproxyProcess.start(["--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`, "--source-rate", "2", "--source-rate-burst", "5"]);
      const attempts = 40;
      const t0 = performance.now();
      const outcomes = await Promise.all(Array.from({ length: attempts }, (_, i) => exchange("192.0.2.1", 7000 + i, "x", 3000, "192.0.2.201")));
      const seconds = (performance.now() - t0) / 1000;
      const ok = outcomes.filter((o) => text(o) === "x").length;
      const refused = outcomes.filter((o) => o.kind === "refused").length;
      // The burst, plus what 2/s refills while the attempts run.
      expect(ok).toBeGreaterThanOrEqual(5);
      expect(ok).toBeLessThanOrEqual(5 + Math.ceil(2 * seconds) + 1);
      expect(ok + refused).toBe(attempts);
      const m = await metrics(admin);
      expect(sum(m, "kernel_source_limited_total", 'limit="rate"')).toBe(refused);
      // Every refusal happened in the kernel: user space accepted exactly the ones that got through.
      expect(sum(m, "connections_total")).toBe(ok);
      expect(sum(m, "source_limited_total")).toBe(0);
      expect(text(await exchange("192.0.2.1", 7000, "y", 3000, "192.0.2.202"))).toBe("y");
    } finally {
      done();
    }
  }, 30_000);

  test("IPv6 clients count per /64 (--source-prefix-v6 default): another address of the /64 is the same client, another /64 is not", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const addrs = ["2001:db8:5:1::a", "2001:db8:5:1::b", "2001:db8:5:2::a"];
    for (const a of addrs) {
      const p = Bun.spawnSync(["ip", "-6", "addr", "add", `${a}/128`, "dev", "lo", "nodad"], { stderr: "pipe" });
      expect(p.stderr.toString()).toBe("");
    }
    f.ep = await EdgeproxyProcess.start(["--ports", "7000-7099", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`, "--source-connections", "2"]);
    const a1 = await hold("2001:db8::1", 7000, addrs[0]!);
    const a2 = await hold("2001:db8::1", 7001, addrs[1]!);
    expect([a1.outcome, a2.outcome]).toEqual(["open", "open"]);
    expect((await hold("2001:db8::1", 7002, addrs[0]!)).outcome).toBe("refused");
    expect((await hold("2001:db8::1", 7002, addrs[1]!)).outcome).toBe("refused");
    const b = await hold("2001:db8::1", 7003, addrs[2]!);
    expect(b.outcome).toBe("open");
    for (const h of [a1, a2, b]) h.close();
  }, 30_000);

  test("accept_proxy: the load balancer is not limited in the kernel; the client its PROXY header names is counted and rate-charged in user space", async () => {
    const { admin, done } = adminDir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const LB = "192.0.2.200";
    try {
      f.ep = await EdgeproxyProcess.start([
        "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`,
        "--accept-proxy", `${LB}/32`, "--source-connections", "2", "--source-rate", "1", "--source-rate-burst", "3",
      ]);
      const edge = { family: 4 as const, addr: parseAddress("192.0.2.1")!, port: 7000 };
      const via = (client: string) => proxyV1Header({ family: 4, addr: parseAddress(client)!, port: 40000 }, edge);
      // Eight connections from the balancer, far over its own burst of 3: none refused in the kernel.
      const c1 = await hold("192.0.2.1", 7000, LB, via("192.0.2.210"));
      const c2 = await hold("192.0.2.1", 7000, LB, via("192.0.2.210"));
      const d1 = await hold("192.0.2.1", 7000, LB, via("198.51.100.2"));
      expect([c1.outcome, c2.outcome, d1.outcome]).toEqual(["open", "open", "open"]);
      // The named client is at its connection limit: refused after its header (reset), counted at accept.
      expect((await hold("192.0.2.1", 7000, LB, via("192.0.2.210"))).outcome).toBe("reset");
      // Another named client over its rate (burst 3, then 1/s).
      const e: Held[] = [];
      for (let i = 0; i < 4; i++) {
        const h = await hold("192.0.2.1", 7000, LB, via("198.51.100.3"));
        e.push(h);
        h.close();
      }
      expect(e.map((h) => h.outcome)).toEqual(["open", "open", "open", "reset"]);
      // Headers naming no client (UNKNOWN, as a balancer's health check sends): the balancer itself, never limited.
      const unknown = [];
      for (let i = 0; i < 6; i++) {
        const h = await hold("192.0.2.1", 7000, LB, Buffer.from("PROXY UNKNOWN\r\n"));
        unknown.push(h.outcome);
        h.close();
      }
      expect(unknown).toEqual(new Array(6).fill("open"));
      const m = await metrics(admin);
      expect(sum(m, "source_limited_total", 'limit="connections"')).toBe(1);
      expect(sum(m, "source_limited_total", 'limit="rate"')).toBe(1);
      expect(sum(m, "kernel_drops_total", 'reason="limited"')).toBe(0);
      // The client connecting directly is counted against the same shared count: it has 2 already, so the kernel refuses it.
      expect((await hold("192.0.2.1", 7000, "192.0.2.210")).outcome).toBe("refused");
      expect(sum(await metrics(admin), "kernel_source_limited_total", 'limit="connections"')).toBe(1);
      expect((await hold("192.0.2.1", 7000, "192.0.2.211")).outcome).toBe("open");
      for (const h of [c1, c2, d1]) h.close();
    } finally {
      done();
    }
  }, 30_000);

  test("the built-in responder (no --origin) counts connections too", async () => {
    f.ep = await EdgeproxyProcess.start(["--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--source-connections", "1"]);
    const a = await hold("192.0.2.1", 7000, "192.0.2.201");
    expect(a.outcome).toBe("open");
    expect((await hold("192.0.2.1", 7001, "192.0.2.201")).outcome).toBe("refused");
    a.close();
  }, 30_000);

  test("http: --source-connections counts keep-alive connections; the next is refused in the kernel", async () => {
    const o = httpOrigin("127.0.0.1", "origin");
    f.servers.push(o.listener);
    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8080", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${o.port}`, "--source-connections", "2"]);
    const request = "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n";
    const ok = (got: string) => got.startsWith("HTTP/1.1 200") && got.endsWith("origin");
    const get = (from: string) => hold("192.0.2.1", 8080, from, undefined, 3000, request, ok);
    const a = [await get("192.0.2.201"), await get("192.0.2.201")];
    expect(a.map((h) => h.outcome)).toEqual(["open", "open"]);
    expect((await get("192.0.2.201")).outcome).toBe("refused");
    const b = await get("192.0.2.202");
    expect(b.outcome).toBe("open");
    a[0]!.close();
    expect(
      await until(async () => {
        const h = await get("192.0.2.201");
        if (h.outcome === "open") a.push(h);
        return h.outcome === "open";
      }),
    ).toBe(true);
    for (const h of [...a, b]) h.close();
  }, 30_000);

  test("udp: --source-connections limits flows per client (all workers together); the flows' end frees places", async () => {
    const { admin, done } = adminDir();
    const origin = await udpOrigin();
    try {
      f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--workers", "2", "--admin", admin, "--ports", "5300-5399", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--source-connections", "3", "--idle-timeout", "1s"]);
      // Each datagram from a new socket is a new flow of client 127.0.0.1.
      const first = [];
      for (let i = 0; i < 3; i++) first.push(await udpFrom("127.0.0.1", "192.0.2.53", 5300 + i, `a${i}`));
      expect(first).toEqual(["a0", "a1", "a2"]);
      expect(await udpFrom("127.0.0.1", "192.0.2.53", 5310, "over")).toBe("<timeout>");
      expect(await udpFrom("127.0.0.2", "192.0.2.53", 5310, "other")).toBe("other");
      const m = await metrics(admin);
      expect(sum(m, "udp_drops_total", 'reason="source_limit"')).toBe(1);
      expect(sum(m, "source_limited_total", 'limit="connections"')).toBe(1);
      expect(sum(m, "udp_flows_total")).toBe(4);
      // The flows idle out (1 s): their counts go with them.
      expect(await until(async () => (await udpFrom("127.0.0.1", "192.0.2.53", 5320, "later", 500)) === "later", 6000)).toBe(true);
    } finally {
      origin.socket.close();
      done();
    }
  }, 30_000);

  test("the pipeline gives a client's count back once, whatever stage it closes in: a TLS handshake cut by its deadline, a failed handshake, served connections", async () => {
    const { admin, done } = adminDir();
    const dir = mkdtempSync(join(tmpdir(), "ep-srclimit-cert-"));
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const A = "192.0.2.201";
    const accepted = (n: number) => until(async () => new RegExp(`^edgeproxy_connection_cap_active ${n}$`, "m").test(await metrics(admin)));
    try {
      const c = writeCert(dir, { cn: "edge.test" });
      f.ep = await EdgeproxyProcess.start([
        "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`,
        "--tls-cert", c.cert, "--tls-key", c.key, "--handshake-timeout", "1s", "--source-connections", "2",
      ]);
      // One connection of A's stays open throughout: a second release of anything would take its count away
      // (counts stop at 0), and the last check below would let a third connection in.
      const keeper = await tlsHold("192.0.2.1", 7000, A);
      expect(keeper.outcome).toBe("open");
      // A TCP connect that never sends a ClientHello: admitted (counted) at accept, held in the handshake stage.
      const stalled = await stall({ from: A, port: 7001 });
      // Accepted (and so counted) by edgeproxy, not only by the kernel: else the next SYN races the count (refused after accept).
      expect(await accepted(2)).toBe(true);
      expect((await talk({ tls: true, from: A, port: 7002, payload: "x", timeoutMs: 3000 })).kind).toBe("refused");
      // The handshake deadline resets it; its count goes back at close.
      expect((await stalled.closed).kind).toBe("reset");
      // The reset reaches the client before the worker's close callback gives the count back: wait for that,
      // else the next SYN can meet the old count and be refused (one more `limited` than the checks below expect).
      expect(await accepted(1)).toBe(true);
      // A plaintext request on the TLS port: the handshake fails (reset), its count goes back too.
      expect(await until(async () => (await talk({ from: A, port: 7003, payload: "GET / HTTP/1.1\r\n\r\n", timeoutMs: 3000 })).kind === "reset")).toBe(true);
      // Served to the end through the relay, one after another (each once the last one's close has run).
      for (let i = 0; i < 3; i++) {
        expect(await accepted(1)).toBe(true);
        const r = await talk({ tls: true, from: A, port: 7004 + i, payload: "ping", timeoutMs: 3000 });
        expect([r.kind, r.bytes]).toEqual(["data", "ping"]);
      }
      // Every path gave back exactly what it took: with the keeper, one more fills the limit of 2, and a third is refused.
      expect(await accepted(1)).toBe(true);
      const again = await stall({ from: A, port: 7010 });
      expect(await accepted(2)).toBe(true);
      expect((await talk({ tls: true, from: A, port: 7012, payload: "x", timeoutMs: 3000 })).kind).toBe("refused");
      const m = await metrics(admin);
      expect(sum(m, "kernel_source_limited_total", 'limit="connections"')).toBe(2);
      expect(sum(m, "tls_handshake_errors_total", 'reason="timeout"')).toBe(1);
      again.socket.terminate();
      keeper.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
      done();
    }
  }, 30_000);
});
