import { describe, expect, test } from "bun:test";
import { NameWatcher, resolveName, type DnsApi } from "./resolver";

const fail = (code: string) => Promise.reject(Object.assign(new Error(code), { code }));

/** A fake DNS: per-call answers, or an error code. */
function fakeDns(state: { a?: { address: string; ttl: number }[] | string; aaaa?: { address: string; ttl: number }[] | string; hosts?: string[] | string }): DnsApi & { calls: number } {
  const api = {
    calls: 0,
    resolve4: async () => {
      api.calls++;
      return typeof state.a === "string" ? fail(state.a) : (state.a ?? fail("ENODATA"));
    },
    resolve6: async () => (typeof state.aaaa === "string" ? fail(state.aaaa) : (state.aaaa ?? fail("ENODATA"))),
    lookup: async () => (typeof state.hosts === "string" ? fail(state.hosts) : (state.hosts ?? []).map((address) => ({ address, family: address.includes(":") ? 6 : 4 }))),
  };
  return api as unknown as DnsApi & { calls: number };
}

describe("resolveName", () => {
  test("every A and AAAA record, valid for the shortest TTL", async () => {
    const api = fakeDns({ a: [{ address: "10.0.0.1", ttl: 60 }, { address: "10.0.0.2", ttl: 30 }], aaaa: [{ address: "2001:db8::1", ttl: 90 }] });
    expect(await resolveName("o.test", api)).toEqual({ addresses: ["10.0.0.1", "10.0.0.2", "2001:db8::1"], ttlMs: 30_000, source: "dns" });
  });

  test("a TTL of 0 holds for a second, not a busy loop", async () => {
    expect((await resolveName("o.test", fakeDns({ a: [{ address: "10.0.0.1", ttl: 0 }] }))).ttlMs).toBe(1000);
  });

  test("no DNS records but known to getaddrinfo (/etc/hosts): the fallback period", async () => {
    expect(await resolveName("localhost", fakeDns({ a: "ENOTFOUND", aaaa: "ENOTFOUND", hosts: ["127.0.0.1", "::1"] }), 7000)).toEqual({
      addresses: ["127.0.0.1", "::1"],
      ttlMs: 7000,
      source: "lookup",
    });
  });

  test("nothing anywhere: an error naming the name and the causes", async () => {
    await expect(resolveName("o.test", fakeDns({ a: "ETIMEOUT", aaaa: "ETIMEOUT", hosts: "ENOTFOUND" }))).rejects.toThrow("cannot resolve o.test: ETIMEOUT, ENOTFOUND");
  });
});

describe("NameWatcher", () => {
  test("re-resolves when the TTL expires; a failure keeps the last good addresses and is reported", async () => {
    const state: Parameters<typeof fakeDns>[0] = { a: [{ address: "10.0.0.1", ttl: 1 }] };
    const api = fakeDns(state);
    const answers: string[][] = [];
    const failures: string[] = [];
    const w = new NameWatcher("o.test", ["10.0.0.9"], (a) => answers.push([...a]), (m) => failures.push(m), api, 100);
    await w.start();
    expect(answers).toEqual([["10.0.0.1"]]);
    state.a = [{ address: "10.0.0.2", ttl: 1 }];
    await Bun.sleep(1200);
    expect(answers.at(-1)).toEqual(["10.0.0.2"]);
    state.a = "ESERVFAIL";
    state.hosts = "ENOTFOUND";
    await Bun.sleep(1100);
    w.close();
    expect(failures.length).toBeGreaterThanOrEqual(1);
    expect(failures[0]).toBe("cannot resolve o.test: ESERVFAIL, ENOTFOUND; keeping 10.0.0.2");
    expect(w.addresses).toEqual(["10.0.0.2"]);
    expect(w.failures).toBe(failures.length);
    const calls = api.calls;
    await Bun.sleep(250);
    expect(api.calls).toBe(calls);
  });
});
