import { describe, expect, test } from "bun:test";
import { SCENARIO_NAMES } from "./flags";
import { percentile } from "./hostile";
import { REGISTRY } from "./registry";
import { holdStats, slowlorisEstimate, windows } from "./slowloris";

describe("slowloris scenario figures", () => {
  test("hold median and max say when they are a lower bound (an attacker still open at the end)", () => {
    expect(holdStats([{ s: 10, open: false }, { s: 10.2, open: false }, { s: 35, open: true }])).toEqual({ median: 10.2, medianCapped: false, max: 35, maxCapped: true });
    expect(holdStats([{ s: 60.1, open: false }, { s: 79.5, open: true }, { s: 79.9, open: true }])).toMatchObject({ median: 79.5, medianCapped: true });
    expect(holdStats([{ s: 9.9, open: false }, { s: 10.1, open: false }])).toEqual({ median: 10, medianCapped: false, max: 10.1, maxCapped: false });
    expect(holdStats([]).median).toBeNaN();
  });
  test("percentile: nearest rank", () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBeNull();
  });
  test("the full window outlasts nginx's 60 s client_header_timeout; the estimate covers every attack window", () => {
    expect(windows(false).attack).toBeGreaterThan(60);
    for (const quick of [false, true]) expect(slowlorisEstimate(quick)).toBeGreaterThan(6 * (windows(quick).attack + windows(quick).baseline));
  });
  test("every scenario --only accepts is in the registry, in the same order", () => {
    expect(REGISTRY.map((e) => e.name)).toEqual([...SCENARIO_NAMES]);
  });
});
