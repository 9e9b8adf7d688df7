import { afterEach, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { POOL_DEFAULTS, type PoolConfig } from "../config/pool";
import { OriginPool } from "./pool";
import type { DnsApi } from "./resolver";

const pools: OriginPool[] = [];
const listeners: TCPSocketListener<any>[] = [];
afterEach(() => {
  for (const p of pools.splice(0)) p.close();
  for (const l of listeners.splice(0)) l.stop(true);
});

function make(config: Partial<PoolConfig> & Pick<PoolConfig, "origins">, options: ConstructorParameters<typeof OriginPool>[1] = {}): OriginPool {
  const p = new OriginPool({ balance: "round-robin", eject: POOL_DEFAULTS.eject, ...config }, { log: () => {}, ...options });
  pools.push(p);
  return p;
}

const count = (p: OriginPool, n: number, client = (i: number) => `198.51.100.${i % 250}`, port = 80) => {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const k = p.pick(client(i), port)?.host ?? "none";
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
};

describe("OriginPool", () => {
  test("followsEdgePort: only port-preserving and port-range origins need the edge port", () => {
    expect(make({ origins: [{ host: "10.0.0.1", port: 80, weight: 1 }] }).followsEdgePort).toBe(false);
    expect(make({ origins: [{ host: "10.0.0.1", port: 80, weight: 1 }, { host: "10.0.0.2", weight: 1 }] }).followsEdgePort).toBe(true);
    expect(make({ origins: [{ host: "10.0.0.1", ports: { lo: 3000, hi: 3999 }, weight: 1 }] }).followsEdgePort).toBe(true);
  });
  test("weighted round-robin over literal origins; ports fixed, preserved or mapped by offset", () => {
    const p = make(
      { origins: [{ host: "10.0.0.1", port: 9000, weight: 1 }, { host: "10.0.0.2", weight: 3 }, { host: "10.0.0.3", ports: { lo: 3000, hi: 4000 }, weight: 1 }] },
      { edgeRange: { lo: 1000, hi: 2000 } },
    );
    expect(count(p, 500)).toEqual({ "10.0.0.1": 100, "10.0.0.2": 300, "10.0.0.3": 100 });
    const ports = new Map(Array.from({ length: 5 }, () => p.pick("x", 1005)!).map((k) => [k.host, k.port]));
    expect(Object.fromEntries(ports)).toEqual({ "10.0.0.1": 9000, "10.0.0.2": 1005, "10.0.0.3": 3005 });
  });

  test("passive ejection: consecutive connect failures take an endpoint out for the duration; a success resets the count", async () => {
    const p = make({ origins: [{ host: "10.0.0.1", port: 80, weight: 1 }, { host: "10.0.0.2", port: 80, weight: 1 }], eject: { failures: 2, durationMs: 200, baseMs: 200 } });
    let changes = 0;
    p.onChange(() => changes++);
    const a = p.pick("c", 80)!;
    a.member.failed("refused");
    a.member.succeeded();
    a.member.failed("refused");
    expect(count(p, 10)[a.host]).toBe(5);
    a.member.failed("timeout");
    expect(count(p, 10)).toEqual({ [a.host === "10.0.0.1" ? "10.0.0.2" : "10.0.0.1"]: 10 });
    expect(changes).toBe(1);
    expect(p.snapshot().find((o) => o.addresses[0] === a.host)!.endpoints[0]).toMatchObject({ up: false, ejections: 1 });
    await Bun.sleep(260);
    expect(changes).toBe(2);
    expect(count(p, 10)[a.host]).toBe(5);
  });

  test("panic: with every endpoint ejected, picks still go to all of them, balanced, and are counted", () => {
    const p = make({ origins: [{ host: "10.0.0.1", port: 80, weight: 1 }, { host: "10.0.0.2", port: 80, weight: 1 }], eject: { failures: 1, durationMs: 10_000, baseMs: 10_000 } });
    p.pick("c", 80)!.member.failed("refused");
    expect(count(p, 4)).toEqual({ "10.0.0.2": 4 });
    p.pick("c", 80)!.member.failed("refused");
    expect(p.snapshot().map((o) => o.endpoints[0]!.up)).toEqual([false, false]);
    expect(count(p, 10)).toEqual({ "10.0.0.1": 5, "10.0.0.2": 5 });
    expect(p.snapshot().map((o) => o.endpoints[0]!.panics)).toEqual([5, 5]);
    expect(p.endpoints().map((e) => e.ejectedPorts)).toEqual([[80], [80]]);
  });

  test("an empty pool (a name that resolves to nothing) picks nothing", () => {
    const p = make({ origins: [{ host: "o.test", port: 80, weight: 1 }] });
    expect(p.pick("c", 80)).toBeUndefined();
  });

  test("a port-preserving origin is ejected per port: failures on one port leave the others eligible", () => {
    const p = make({ origins: [{ host: "10.0.0.1", weight: 1 }, { host: "10.0.0.2", weight: 1 }], eject: { failures: 3, durationMs: 30_000, baseMs: 1_000 } }, { edgeRange: { lo: 7000, hi: 7010 } });
    for (let i = 0; i < 6; i++) {
      const k = p.pick("c", 7002)!;
      expect(k.port).toBe(7002);
      k.member.failed("refused");
    }
    // 7002 is out on both: panic there; 7001 was never touched.
    expect(p.snapshot().every((o) => o.endpoints[0]!.up)).toBe(true);
    expect(p.snapshot().map((o) => o.endpoints[0]!.ejectedPorts!.map((e) => e.port))).toEqual([[7002], [7002]]);
    expect(count(p, 10, undefined, 7001)).toEqual({ "10.0.0.1": 5, "10.0.0.2": 5 });
    expect(p.snapshot().map((o) => o.endpoints[0]!.panics)).toEqual([0, 0]);
    p.pick("c", 7002);
    expect(p.snapshot().reduce((n, o) => n + o.endpoints[0]!.panics, 0)).toBe(1);
    // A port-range origin keys its state by the origin port the edge port maps to.
    const r = make({ origins: [{ host: "10.0.0.3", ports: { lo: 9000, hi: 9010 }, weight: 1 }], eject: { failures: 1, durationMs: 30_000, baseMs: 1_000 } }, { edgeRange: { lo: 7000, hi: 7010 } });
    r.pick("c", 7004)!.member.failed("refused");
    expect(r.endpoints()[0]!.ejectedPorts).toEqual([9004]);
    expect(r.member(r.endpoints()[0]!.key, 9004)!.port).toBe(9004);
  });

  test("a single origin restarting: ejected for baseMs, then tried again; doubling on repeats", async () => {
    const p = make({ origins: [{ host: "10.0.0.1", port: 80, weight: 1 }, { host: "10.0.0.2", port: 80, weight: 1 }], eject: { failures: 1, durationMs: 1_000, baseMs: 100 } });
    const a = p.pick("c", 80)!;
    let changes = 0;
    p.onChange(() => changes++);
    a.member.failed("refused");
    const until = p.snapshot()[0]!.endpoints[0]!.ejectedUntil!;
    expect(until - Date.now()).toBeLessThanOrEqual(100);
    await Bun.sleep(150);
    expect(changes).toBe(2);
    expect(p.snapshot()[0]!.endpoints[0]!.up).toBe(true);
    a.member.failed("refused");
    const again = p.snapshot()[0]!.endpoints[0]!.ejectedUntil! - Date.now();
    expect(again).toBeGreaterThan(150);
    expect(again).toBeLessThanOrEqual(200);
  });

  test("active checks: fall failures take a dead endpoint out, rise passes bring it back", async () => {
    const live = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    listeners.push(live);
    const port = live.port;
    const p = make({ origins: [{ host: "127.0.0.1", port, weight: 1 }], health: { intervalMs: 50, timeoutMs: 100, rise: 2, fall: 2, path: "/" } });
    await p.start();
    await Bun.sleep(150);
    expect(p.pick("c", 80)?.port).toBe(port);
    const up0 = () => p.snapshot()[0]!.endpoints[0]!.up;
    live.stop(true);
    const down = Date.now();
    while (up0() && Date.now() - down < 2000) await Bun.sleep(10);
    expect(up0()).toBe(false);
    expect(Date.now() - down).toBeLessThan(50 * 1.1 * 3);
    expect(p.snapshot()[0]!.endpoints[0]!.lastCheck).toBe("fail: ECONNREFUSED");
    listeners.push(Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } }));
    const up = Date.now();
    while (!up0() && Date.now() - up < 2000) await Bun.sleep(10);
    expect(up0()).toBe(true);
    expect(Date.now() - up).toBeLessThan(50 * 1.1 * 3);
  });

  test("active checks of a port-preserving origin probe health.port if set, else the first port of the service's range", async () => {
    const live = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    listeners.push(live);
    const dead = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const deadPort = dead.port;
    dead.stop(true);
    const health = { intervalMs: 50, timeoutMs: 40, rise: 1, fall: 1, path: "/" };
    const edgeRange = { lo: deadPort, hi: deadPort };
    const first = make({ origins: [{ host: "127.0.0.1", weight: 1 }], health }, { edgeRange });
    const chosen = make({ origins: [{ host: "127.0.0.1", weight: 1 }], health: { ...health, port: live.port } }, { edgeRange });
    await Promise.all([first.start(), chosen.start()]);
    await Bun.sleep(200);
    expect(first.snapshot()[0]!.endpoints[0]).toMatchObject({ up: false, lastCheck: "fail: ECONNREFUSED" });
    expect(chosen.snapshot()[0]!.endpoints[0]).toMatchObject({ up: true, lastCheck: "pass: connected" });
  });

  test("with active checks, ejecting the probed port marks the endpoint down until rise passes; another port does not", () => {
    const health = { intervalMs: 60_000, timeoutMs: 1_000, rise: 2, fall: 3, path: "/", port: 7000 };
    const p = make({ origins: [{ host: "10.0.0.1", weight: 1 }, { host: "10.0.0.2", weight: 1 }], health, eject: { failures: 1, durationMs: 30_000, baseMs: 1_000 } }, { edgeRange: { lo: 7000, hi: 7010 } });
    const k = p.pick("c", 7005)!;
    k.member.failed("refused");
    expect(p.snapshot().map((o) => o.endpoints[0]!.healthy)).toEqual([true, true]);
    const j = p.pick("c", 7000)!;
    j.member.failed("refused");
    expect(p.snapshot().find((o) => o.addresses[0] === j.host)!.endpoints[0]).toMatchObject({ healthy: false, up: false });
  });

  test("a client spraying closed ports: per-port state stays bounded (counted) and ejection lines are rate limited", async () => {
    const lines: string[] = [];
    const p = make({ origins: [{ host: "10.0.0.1", weight: 1 }], eject: { failures: 1, durationMs: 30_000, baseMs: 1_000 } }, { edgeRange: { lo: 1, hi: 65535 }, log: (l) => lines.push(l) });
    for (let port = 1; port <= 1_000; port++) p.pick("c", port)!.member.failed("refused");
    const [e] = p.snapshot()[0]!.endpoints;
    expect(e!.ejectedPorts!.length).toBe(256);
    expect(e!.portStatesEvicted).toBe(744);
    expect(e!.ejections).toBe(1_000);
    expect(lines.length).toBeLessThanOrEqual(21);
    expect(lines[0]).toBe("pool: origin 10.0.0.1 (port-preserving) port 1 ejected for 1000ms after 1 failed connects (last: refused)");
    const logged = lines.length;
    const deadline = Date.now() + 3_000;
    while (lines.length === logged && Date.now() < deadline) await Bun.sleep(20);
    // The next line says how many were left out (the ejections' "back" line, a second on).
    expect(lines[logged]).toEndWith(`(${1_000 - logged} earlier lines left out)`);
  });

  test("a name's addresses are endpoints sharing its weight; a new answer keeps the endpoints that stay", async () => {
    let answer = ["10.0.0.1", "10.0.0.2"];
    const dns = {
      resolve4: async () => answer.map((address) => ({ address, ttl: 1 })),
      resolve6: async () => Promise.reject(Object.assign(new Error("ENODATA"), { code: "ENODATA" })),
      lookup: async () => [],
    } as unknown as DnsApi;
    const p = make({ origins: [{ host: "o.test", port: 80, weight: 2 }, { host: "10.0.0.9", port: 80, weight: 2 }] }, { dns, resolved: new Map([["o.test", [Uint8Array.of(10, 0, 0, 1)]]]) });
    expect(Object.keys(count(p, 4))).toEqual(["10.0.0.1", "10.0.0.9"]);
    let changed = 0;
    p.onChange(() => changed++);
    await p.start();
    expect(changed).toBe(1);
    expect(count(p, 400)).toEqual({ "10.0.0.1": 100, "10.0.0.2": 100, "10.0.0.9": 200 });
    const kept = Array.from({ length: 4 }, () => p.pick("c", 80)!).find((k) => k.host === "10.0.0.1")!;
    kept.member.acquired();
    answer = ["10.0.0.1", "10.0.0.3"];
    await Bun.sleep(1150);
    expect(p.snapshot()[0]!.addresses).toEqual(answer);
    expect(p.snapshot()[0]!.endpoints[0]!.active).toBe(1);
  });
});
