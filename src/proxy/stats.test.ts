import { expect, test } from "bun:test";
import { DURATION_BUCKETS, ServiceStats } from "./stats";

test("observe puts a duration in the first bucket whose bound is >= it", () => {
  const s = new ServiceStats();
  s.observe(0); // first bucket
  s.observe(0.005); // le is inclusive
  s.observe(0.0051); // next bucket
  s.observe(3600);
  s.observe(3600.5); // +Inf only
  const counts = [...s.durationCounts];
  expect(counts).toHaveLength(DURATION_BUCKETS.length + 1);
  expect(counts[0]).toBe(2);
  expect(counts[1]).toBe(1);
  expect(counts[DURATION_BUCKETS.length - 1]).toBe(1);
  expect(counts[DURATION_BUCKETS.length]).toBe(1);
  expect(s.durationCount).toBe(5);
  expect(s.durationSum).toBeCloseTo(7200.5101, 9);
});

test("snapshot has cumulative buckets ending in +Inf and the other counters", () => {
  const s = new ServiceStats();
  for (const d of [0.001, 0.2, 0.2, 40, 1e6]) s.observe(d);
  s.connectionsTotal = 5;
  s.originError("refused");
  const snap = s.snapshot();
  expect(snap.total).toBe(5);
  expect(snap.originErrors).toEqual({ refused: 1 });
  const { buckets, count } = snap.duration;
  expect(buckets.map((b) => b.le)).toEqual([...DURATION_BUCKETS, Infinity]);
  const at = (le: number) => buckets.find((b) => b.le === le)!.count;
  expect(at(0.005)).toBe(1);
  expect(at(0.1)).toBe(1);
  expect(at(0.25)).toBe(3);
  expect(at(60)).toBe(4);
  expect(at(3600)).toBe(4);
  expect(at(Infinity)).toBe(5);
  expect(count).toBe(5);
  // A snapshot is a copy: later observations do not change it.
  s.observe(1);
  expect(at(Infinity)).toBe(5);
});
