import { expect, test } from "bun:test";
import { Admission, connectionCapacity, headroom } from "./admission";

test("the soft mark and the cap stop steering, and both resume with hysteresis below the soft mark", () => {
  const changes: string[] = [];
  const a = new Admission(40, (on) => changes.push(on ? "cap:in" : "cap:out"), (on) => changes.push(on ? "soft:in" : "soft:out"));
  expect([a.softMark, a.resumeAt]).toEqual([38, 37]); // headroom 2; resume under the soft mark
  for (let i = 0; i < 37; i++) expect(a.admit()).toBe(true);
  expect(changes).toEqual([]);
  expect(a.admit()).toBe(true);
  expect(changes).toEqual(["soft:out"]); // at 38: out of tier 1, still admitting
  expect(a.admit()).toBe(true);
  expect(a.admit()).toBe(true);
  expect(changes).toEqual(["soft:out", "cap:out"]);
  expect(a.admit()).toBe(false);
  expect(a.refused).toBe(1);
  a.leave();
  a.leave();
  expect(changes).toEqual(["soft:out", "cap:out"]); // 38: not yet
  a.leave();
  expect(changes).toEqual(["soft:out", "cap:out", "cap:in", "soft:in"]); // at resumeAt = 37
  expect(a.accepting).toBe(true);
  // Inside the headroom but never full: only tier 1 comes and goes.
  a.admit();
  a.leave();
  expect(changes).toHaveLength(6);
  expect(changes.slice(4)).toEqual(["soft:out", "soft:in"]);
});

test("the headroom: 1/16 of the cap, at least 1, at most 16; none for a cap of 1", () => {
  expect([1, 2, 20, 40, 128, 256, 1000, 100_000].map(headroom)).toEqual([0, 1, 1, 2, 8, 16, 16, 16]);
  const one = new Admission(1, () => {});
  expect([one.softMark, one.resumeAt]).toEqual([1, 0]);
  const two = new Admission(2, () => {});
  expect([two.softMark, two.resumeAt]).toEqual([1, 0]);
  const big = new Admission(10_000, () => {});
  expect([big.softMark, big.resumeAt]).toEqual([9984, 9500]);
});

test("capacity from the open-file limit", () => {
  expect(connectionCapacity(20_000)).toBe(9950);
  expect(connectionCapacity(50)).toBe(0);
});
