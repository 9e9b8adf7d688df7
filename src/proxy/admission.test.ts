import { expect, test } from "bun:test";
import { Admission, connectionCapacity, headroom } from "./admission";

test("the soft mark and the cap stop steering, and each resumes with hysteresis", () => {
  const changes: string[] = [];
  const a = new Admission(40, (on) => changes.push(on ? "cap:in" : "cap:out"), (on) => changes.push(on ? "soft:in" : "soft:out"));
  expect([a.softMark, a.resumeAt, a.firstResumeAt]).toEqual([35, 38, 34]); // headroom 5; tier 1 back under the soft mark
  for (let i = 0; i < 34; i++) expect(a.admit()).toBe(true);
  expect(changes).toEqual([]);
  expect(a.admit()).toBe(true);
  expect(changes).toEqual(["soft:out"]); // at 35: out of tier 1, still admitting
  for (let i = 35; i < 40; i++) expect(a.admit()).toBe(true);
  expect(changes).toEqual(["soft:out", "cap:out"]);
  expect(a.admit()).toBe(false);
  expect(a.refused).toBe(1);
  a.leave();
  expect(changes).toEqual(["soft:out", "cap:out"]); // not at the first free slot
  a.leave();
  expect(changes).toEqual(["soft:out", "cap:out", "cap:in"]); // at resumeAt = 38: tier 2
  expect(a.accepting).toBe(true);
  for (let i = 0; i < 3; i++) a.leave();
  expect(changes).toEqual(["soft:out", "cap:out", "cap:in"]); // 35: still out of tier 1
  a.leave();
  expect(changes).toEqual(["soft:out", "cap:out", "cap:in", "soft:in"]); // at 34: tier 1
  // Inside the headroom but never full: only tier 1 comes and goes.
  a.admit();
  a.leave();
  expect(changes.slice(4)).toEqual(["soft:out", "soft:in"]);
});

test("the headroom: 1/8 of the cap, at least 1, at most 16; none for a cap of 1", () => {
  expect([1, 2, 8, 20, 40, 128, 256, 1000, 100_000].map(headroom)).toEqual([0, 1, 1, 2, 5, 16, 16, 16, 16]);
  const marks = (max: number) => {
    const a = new Admission(max, () => {});
    return [a.softMark, a.resumeAt, a.firstResumeAt];
  };
  expect(marks(1)).toEqual([1, 0, 0]);
  expect(marks(2)).toEqual([1, 1, 0]);
  expect(marks(10_000)).toEqual([9984, 9500, 9500]);
});

test("capacity from the open-file limit", () => {
  expect(connectionCapacity(20_000)).toBe(9950);
  expect(connectionCapacity(50)).toBe(0);
});
