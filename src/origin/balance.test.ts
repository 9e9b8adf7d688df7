import { describe, expect, test } from "bun:test";
import { choose, leastConnections, originPort, rendezvous, smoothWeighted, type Weighted } from "./balance";

const endpoints = (...weights: number[]): Weighted[] => weights.map((weight, i) => ({ key: `10.0.0.${i + 1}|80`, weight, current: 0, active: 0 }));
const all = () => true;

describe("smooth weighted round-robin", () => {
  test("weights 1:3 interleave: every window of four has exactly one a", () => {
    const [a, b] = endpoints(1, 3);
    const seq = Array.from({ length: 40 }, () => (smoothWeighted([a!, b!], all) === a ? "a" : "b"));
    for (let i = 0; i < 40; i += 4) expect(seq.slice(i, i + 4).filter((x) => x === "a").length).toBe(1);
    // nginx's sequence for {1, 3}: never three b in a row followed by a burst.
    expect(seq.join("")).not.toContain("bbbb");
  });

  test("5:1:1 gives nginx's documented sequence a a b a c a a", () => {
    const e = endpoints(5, 1, 1);
    const names = new Map(e.map((x, i) => [x, "abc"[i]!]));
    expect(Array.from({ length: 7 }, () => names.get(smoothWeighted(e, all)!)).join(" ")).toBe("a a b a c a a");
  });

  test("ineligible endpoints are skipped; none eligible gives undefined", () => {
    const e = endpoints(1, 1, 1);
    for (let i = 0; i < 10; i++) expect(smoothWeighted(e, (t) => t !== e[1])).not.toBe(e[1]);
    expect(smoothWeighted(e, () => false)).toBeUndefined();
  });
});

describe("least connections", () => {
  test("picks the fewest active per weight", () => {
    const [a, b] = endpoints(1, 2);
    a!.active = 2;
    b!.active = 3; // 2/1 > 3/2
    expect(leastConnections([a!, b!], all)).toBe(b);
    b!.active = 4; // 2/1 == 4/2: a tie, broken by round-robin
    const picks = new Set(Array.from({ length: 6 }, () => leastConnections([a!, b!], all)));
    expect(picks.size).toBe(2);
  });

  test("an idle pool spreads by weight", () => {
    const e = endpoints(1, 3);
    const n = [0, 0];
    for (let i = 0; i < 400; i++) n[e.indexOf(leastConnections(e, all)!)]!++;
    expect(n).toEqual([100, 300]);
  });
});

describe("rendezvous hash", () => {
  const clients = Array.from({ length: 3000 }, (_, i) => `198.51.${i >> 8}.${i & 255}`);

  test("the same client always gets the same endpoint; clients spread by weight", () => {
    const e = endpoints(1, 1, 2);
    const counts = new Map<Weighted, number>();
    for (const c of clients) {
      const p = rendezvous(e, all, c)!;
      expect(rendezvous(e, all, c)).toBe(p);
      counts.set(p, (counts.get(p) ?? 0) + 1);
    }
    expect(counts.get(e[0]!)! / clients.length).toBeCloseTo(0.25, 1);
    expect(counts.get(e[2]!)! / clients.length).toBeCloseTo(0.5, 1);
  });

  test("removing one of n endpoints moves only its clients; adding one moves about 1/(n+1)", () => {
    const e = endpoints(1, 1, 1, 1, 1);
    const before = clients.map((c) => rendezvous(e, all, c));
    const without = clients.map((c) => rendezvous(e, (t) => t !== e[2], c));
    const moved = clients.filter((_, i) => before[i] !== without[i]);
    expect(moved.length).toBe(before.filter((p) => p === e[2]).length);
    const grown = [...e, ...endpoints(1, 1, 1, 1, 1, 1).slice(5)];
    const after = clients.map((c) => rendezvous(grown, all, c));
    const share = clients.filter((_, i) => before[i] !== after[i]).length / clients.length;
    expect(share).toBeGreaterThan(0.1);
    expect(share).toBeLessThan(0.25); // 1/6 expected
  });
});

test("choose dispatches on the balance", () => {
  const e = endpoints(1, 1);
  e[0]!.active = 5;
  expect(choose("least-connections", e, all, "x")).toBe(e[1]);
  expect(choose("hash", e, all, "1.2.3.4")).toBe(choose("hash", e, all, "1.2.3.4"));
  expect(choose("round-robin", e, () => false, "x")).toBeUndefined();
});

test("originPort: fixed, port-preserving, and a range mapped by offset", () => {
  expect(originPort({ port: 9000 }, 1005, undefined)).toBe(9000);
  expect(originPort({}, 1005, undefined)).toBe(1005);
  expect(originPort({ ports: { lo: 3000, hi: 4000 } }, 1005, { lo: 1000, hi: 2000 })).toBe(3005);
  expect(originPort({ ports: { lo: 3000, hi: 4000 } }, 2000, { lo: 1000, hi: 2000 })).toBe(4000);
});
