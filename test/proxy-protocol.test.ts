// PROXY protocol v1/v2 end to end: headers edgeproxy sends to tcp origins,
// checked by an origin that parses them independently; headers it accepts
// from trusted load balancers; malformed ones refused, reset and counted.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange, text } from "./helpers/net";
import { headerOrigin, type Seen } from "./helpers/proxyheaders";

const f = proxyFixture();

const PORTS = "7000-7100";
const PREFIXES = "192.0.2.0/25,2001:db8::/80";
// Clients bind these. IPv4: any address of the namespace's local 192.0.2.0/24 route (outside
// the steered /25); IPv6 binds only assigned addresses (no freebind), so loopback.
const LB4 = "192.0.2.200";
const LB6 = "::1";
const OTHER4 = "192.0.2.201";

async function start(extra: string[], originPort?: number): Promise<{ admin: string; done: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), "ep-pp-"));
  const admin = join(dir, "admin.sock");
  const origin = originPort === undefined ? "127.0.0.1" : `127.0.0.1:${originPort}`;
  f.ep = await EdgeproxyProcess.start(["--ports", PORTS, "--prefix", PREFIXES, "--origin", origin, "--admin", admin, ...extra]);
  return { admin, done: () => rmSync(dir, { recursive: true, force: true }) };
}

const seen = (o: Awaited<ReturnType<typeof exchange>>): Seen => JSON.parse(text(o)) as Seen;

/** edgeproxy_proxy_header_errors_total{reason} from /metrics. */
async function headerErrors(admin: string): Promise<Record<string, number>> {
  const res = await fetch("http://localhost/metrics", { unix: admin } as RequestInit);
  const out: Record<string, number> = {};
  for (const m of (await res.text()).matchAll(/^edgeproxy_proxy_header_errors_total\{service="default",reason="(\w+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

type Talk = { kind: "data" | "reset" | "timeout"; bytes: string; ms: number };

/**
 * Connect from `from`, write `pieces` `gapMs` apart, half-close only if
 * `fin`, and collect until the peer closes (or `timeoutMs`).
 */
function talk(host: string, port: number, from: string, pieces: (string | Uint8Array)[], opts: { gapMs?: number; fin?: boolean; timeoutMs?: number } = {}): Promise<Talk> {
  const { gapMs = 0, fin = true, timeoutMs = 8000 } = opts;
  const t0 = performance.now();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const settle = (kind: Talk["kind"]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ kind, bytes: Buffer.concat(chunks).toString("latin1"), ms: performance.now() - t0 });
    };
    let sock: { terminate(): void } | undefined;
    const timer = setTimeout(() => {
      sock?.terminate();
      settle("timeout");
    }, timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      ...{ localAddress: from },
      allowHalfOpen: true,
      socket: {
        open(s) {
          sock = s;
          void (async () => {
            for (const [i, p] of pieces.entries()) {
              if (i > 0 && gapMs) await Bun.sleep(gapMs);
              if (settled) return;
              s.write(p);
            }
            if (fin) s.shutdown();
          })();
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
        connectError() {
          settle("reset");
        },
      },
    }).catch(() => settle("reset"));
  });
}

const v2hex = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ""), "hex"));
const SIG = "0d0a0d0a000d0a515549540a";

describe("PROXY headers to tcp origins", () => {
  for (const version of ["v1", "v2"] as const) {
    test(`${version}: the origin parses the client and the original destination, IPv4 and IPv6, then the payload`, async () => {
      const o = headerOrigin();
      f.servers.push(o.listener);
      const w = await start(["--proxy-protocol", version], o.listener.port);
      try {
        const a = seen(await exchange("192.0.2.10", 7000, "hello v4", 5000, LB4));
        expect(a.version).toBe(version === "v1" ? 1 : 2);
        expect(a.header).toMatchObject({ source: LB4, destination: "192.0.2.10", destinationPort: 7000 });
        expect(a.header!.sourcePort).toBeGreaterThan(0);
        if (version === "v2") expect(a.header!.transport).toBe("stream");
        expect(a.payload).toBe("hello v4");

        const b = seen(await exchange("2001:db8::7", 7100, "hello v6", 5000, LB6));
        expect(b.header).toMatchObject({ source: LB6, destination: "2001:db8::7", destinationPort: 7100 });
        expect(b.payload).toBe("hello v6");
        // The header is on the wire even when the client sends nothing.
        expect(seen(await exchange("192.0.2.11", 7001, "", 5000, LB4)).header).toMatchObject({ source: LB4, destination: "192.0.2.11" });
      } finally {
        w.done();
      }
    }, 20_000);
  }

  test("off (the default): the origin gets the client's bytes and nothing else", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    const w = await start([], o.listener.port);
    try {
      expect(seen(await exchange("192.0.2.10", 7000, "plain", 5000, LB4))).toEqual({ version: undefined, payload: "plain" } as Seen);
    } finally {
      w.done();
    }
  }, 20_000);
});

describe("PROXY headers from trusted load balancers (--accept-proxy)", () => {
  test("v1 and v2, IPv4 and IPv6: the header's client reaches the origin in our header; its destination port picks the port-preserving origin's port", async () => {
    // Port-preserving origin on 7002: the connections below dial 7001, and their headers say 7002.
    const o = headerOrigin("127.0.0.1", 7002);
    f.servers.push(o.listener);
    const w = await start(["--proxy-protocol", "v2", "--accept-proxy", `${LB4}/32,${LB6}/128`]);
    try {
      const v1 = seen(await exchange("192.0.2.10", 7001, "PROXY TCP4 203.0.113.7 198.51.100.9 5555 7002\r\nafter v1", 5000, LB4));
      expect(v1.header).toEqual({ transport: "stream", source: "203.0.113.7", sourcePort: 5555, destination: "198.51.100.9", destinationPort: 7002 });
      expect(v1.payload).toBe("after v1");

      const v2 = v2hex(`${SIG} 21 21 0024 20010db8000000000000000000000abc 20010db8000000000000000000000def 1f90 1b5a`);
      const got = seen(await exchange("2001:db8::7", 7001, Buffer.concat([v2, Buffer.from("after v2")]), 5000, LB6));
      expect(got.header).toEqual({ transport: "stream", source: "2001:db8::abc", sourcePort: 8080, destination: "2001:db8::def", destinationPort: 7002 });
      expect(got.payload).toBe("after v2");

      // A header in pieces (signature split, then addresses, then payload) is reassembled.
      const pieces = [v2.subarray(0, 7), v2.subarray(7, 30), Buffer.concat([v2.subarray(30), Buffer.from("late")])];
      const slow = await talk("2001:db8::7", 7001, LB6, pieces, { gapMs: 100 });
      expect(JSON.parse(slow.bytes).header.source).toBe("2001:db8::abc");
      expect(JSON.parse(slow.bytes).payload).toBe("late");
      expect(await headerErrors(w.admin)).toEqual({ signature: 0, malformed: 0, too_long: 0, truncated: 0, timeout: 0 });
    } finally {
      w.done();
    }
  }, 20_000);

  test("balancing sees the header's client: --balance hash spreads one balancer's clients over the pool, each client always to the same origin", async () => {
    const a = headerOrigin();
    const b = headerOrigin();
    f.servers.push(a.listener, b.listener);
    f.ep = await EdgeproxyProcess.start([
      "--ports", PORTS, "--prefix", PREFIXES, "--origin", `127.0.0.1:${a.listener.port}`, "--origin", `127.0.0.1:${b.listener.port}`,
      "--balance", "hash", "--proxy-protocol", "v1", "--accept-proxy", `${LB4}/32`,
    ]);
    for (let round = 0; round < 2; round++) {
      for (let i = 1; i <= 16; i++) {
        const r = seen(await exchange("192.0.2.10", 7000, `PROXY TCP4 203.0.113.${i} 198.51.100.9 5555 7000\r\n`, 5000, LB4));
        expect(r.header?.source).toBe(`203.0.113.${i}`);
      }
    }
    const clients = (o: ReturnType<typeof headerOrigin>) => new Set(o.seen.map((x) => x.header!.source));
    // All from one socket address: hashing that would send all 32 to one origin.
    expect(a.seen.length).toBeGreaterThan(0);
    expect(b.seen.length).toBeGreaterThan(0);
    expect(a.seen.length + b.seen.length).toBe(32);
    // The same client went to the same origin both rounds.
    expect([...clients(a)].filter((c) => clients(b).has(c))).toEqual([]);
  }, 20_000);

  test("v2 LOCAL and v1 UNKNOWN keep the socket's own addresses", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    const w = await start(["--proxy-protocol", "v1", "--accept-proxy", `${LB4}/32`], o.listener.port);
    try {
      const local = seen(await exchange("192.0.2.10", 7003, Buffer.concat([v2hex(`${SIG} 20 11 000c 01020304 05060708 0001 0002`), Buffer.from("x")]), 5000, LB4));
      expect(local.header).toMatchObject({ source: LB4, destination: "192.0.2.10", destinationPort: 7003 });
      expect(local.payload).toBe("x");
      const unknown = seen(await exchange("192.0.2.10", 7004, "PROXY UNKNOWN whatever\r\ny", 5000, LB4));
      expect(unknown.header).toMatchObject({ source: LB4, destination: "192.0.2.10", destinationPort: 7004 });
      expect(unknown.payload).toBe("y");
    } finally {
      w.done();
    }
  }, 20_000);

  test("an untrusted source's header is not interpreted: it reaches the origin as payload", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    const w = await start(["--proxy-protocol", "v2", "--accept-proxy", `${LB4}/32`], o.listener.port);
    try {
      const forged = "PROXY TCP4 203.0.113.7 198.51.100.9 5555 7002\r\nhi";
      const got = seen(await exchange("192.0.2.10", 7000, forged, 5000, OTHER4));
      expect(got.header).toMatchObject({ source: OTHER4, destination: "192.0.2.10", destinationPort: 7000 });
      expect(got.payload).toBe(forged);
    } finally {
      w.done();
    }
  }, 20_000);

  test("bad signature, garbage v1, bad v2 length, oversized, truncated, and truncated-then-stall: reset, never proxied, counted by reason", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    const w = await start(["--accept-proxy", `${LB4}/32`, "--connect-timeout", "3s"], o.listener.port);
    try {
      const host = "192.0.2.10";
      const cases: [string, (string | Uint8Array)[], boolean][] = [
        ["signature", ["GET / HTTP/1.1\r\nHost: x\r\n\r\n"], true],
        ["malformed", ["PROXY TCP4 nonsense here 1 2\r\nGET /"], true],
        ["malformed", [v2hex(`${SIG} 21 11 0008 c6336401 c0000235`)], true],
        ["too_long", [`PROXY TCP4 ${"1".repeat(120)}`], false],
        ["truncated", [v2hex(`${SIG} 21 11 000c c633`)], true],
      ];
      for (const [reason, pieces, fin] of cases) {
        const r = await talk(host, 7000, LB4, pieces, { fin });
        expect({ reason, kind: r.kind, bytes: r.bytes }).toEqual({ reason, kind: "reset", bytes: "" });
      }
      // Half a header, then nothing: reset after the header timeout (max(3 s, connect timeout)).
      const stall = await talk(host, 7000, LB4, [v2hex(`${SIG} 21`)], { fin: false, timeoutMs: 8000 });
      expect(stall.kind).toBe("reset");
      expect(stall.ms).toBeGreaterThan(2500);
      expect(stall.ms).toBeLessThan(6000);
      // A health check that connects and closes without a byte is not an error.
      expect((await exchange(host, 7000, "", 5000, LB4)).kind).toBe("data");

      expect(o.seen).toEqual([]);
      expect(await headerErrors(w.admin)).toEqual({ signature: 1, malformed: 2, too_long: 1, truncated: 1, timeout: 1 });
      const status = (await (await fetch("http://localhost/status", { unix: w.admin } as RequestInit)).json()) as { services: { name: string; connections?: { proxyHeaderErrors: Record<string, number> } }[] };
      expect(status.services.find((s) => s.name === "default")?.connections?.proxyHeaderErrors).toEqual({ signature: 1, malformed: 2, too_long: 1, truncated: 1, timeout: 1 });
      // And a good one still goes through afterwards.
      const ok = seen(await exchange(host, 7000, "PROXY TCP4 203.0.113.7 198.51.100.9 5555 7000\r\nok", 5000, LB4));
      expect(ok.payload).toBe("ok");
      expect(await f.ep!.stop()).toBe(0);
      expect(f.ep!.stderr).toContain("PROXY header errors: signature 1, malformed 2, too_long 1, truncated 1, timeout 1");
    } finally {
      w.done();
    }
  }, 30_000);
});
