import { expect, test } from "bun:test";
import { Admission, connectionCapacity } from "./admission";

test("the cap stops and resumes steering with hysteresis", () => {
  const changes: boolean[] = [];
  const a = new Admission(40, (on) => changes.push(on));
  for (let i = 0; i < 40; i++) expect(a.admit()).toBe(true);
  expect(changes).toEqual([false]);
  expect(a.admit()).toBe(false);
  expect(a.refused).toBe(1);
  a.leave();
  expect(changes).toEqual([false]); // not at the first free slot
  a.leave();
  expect(changes).toEqual([false, true]); // at resumeAt = 38
  expect(a.accepting).toBe(true);
});

test("capacity from the open-file limit", () => {
  expect(connectionCapacity(20_000)).toBe(9950);
  expect(connectionCapacity(50)).toBe(0);
});
