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

const count = (p: OriginPool, n: number, client = (i: number) => `198.51.100.${i % 250}`) => {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const k = p.pick(client(i), 80)?.host ?? "none";
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
    const p = make({ origins: [{ host: "10.0.0.1", port: 80, weight: 1 }, { host: "10.0.0.2", port: 80, weight: 1 }], eject: { failures: 2, durationMs: 200 } });
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

  test("none eligible: pick is undefined", () => {
    const p = make({ origins: [{ host: "10.0.0.1", port: 80, weight: 1 }], eject: { failures: 1, durationMs: 10_000 } });
    p.pick("c", 80)!.member.failed("refused");
    expect(p.pick("c", 80)).toBeUndefined();
    expect(p.eligible()).toEqual([]);
  });

  test("active checks: fall failures take a dead endpoint out, rise passes bring it back", async () => {
    const live = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    listeners.push(live);
    const port = live.port;
    const p = make({ origins: [{ host: "127.0.0.1", port, weight: 1 }], health: { intervalMs: 50, timeoutMs: 100, rise: 2, fall: 2, path: "/" } });
    await p.start();
    await Bun.sleep(150);
    expect(p.pick("c", 80)?.port).toBe(port);
    live.stop(true);
    const down = Date.now();
    while (p.pick("c", 80) && Date.now() - down < 2000) await Bun.sleep(10);
    expect(p.pick("c", 80)).toBeUndefined();
    expect(Date.now() - down).toBeLessThan(50 * 1.1 * 3);
    expect(p.snapshot()[0]!.endpoints[0]!.lastCheck).toBe("fail: ECONNREFUSED");
    listeners.push(Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } }));
    const up = Date.now();
    while (!p.pick("c", 80) && Date.now() - up < 2000) await Bun.sleep(10);
    expect(p.pick("c", 80)?.port).toBe(port);
    expect(Date.now() - up).toBeLessThan(50 * 1.1 * 3);
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
