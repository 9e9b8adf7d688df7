// Per-client limits end to end (issue 15) on each protocol's path: behind a
// trusted load balancer (PROXY headers), http keep-alive connections, udp
// flows, the TLS pipeline's stages. edgeproxy processes in the test's own
// namespace, the real BPF program, real traffic from several client
// addresses. Plain tcp connections and their rate: test/source-limits.test.ts.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCert } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin } from "./helpers/net";
import { proxyV1Header } from "../src/proxy/proxyheader/encode";
import { parseAddress } from "../src/config/address";
import { udpExchange, udpOrigin, udpText } from "./helpers/udp";
import { httpOrigin } from "./helpers/http";
import { type Held, adminDir, hold, metrics, sum } from "./helpers/sourcelimits";
import { until } from "./helpers/wait";
import { stall, talk } from "./pipeline.case";

/** One datagram from a new socket on `from` (a new flow) and its reply's text, or "<timeout>". */
const udpFrom = async (from: string, host: string, port: number, payload: string, timeoutMs = 1500): Promise<string> => udpText(await udpExchange(host, port, payload, timeoutMs, from));

const f = proxyFixture();

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

describe("per-client limits", () => {
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
