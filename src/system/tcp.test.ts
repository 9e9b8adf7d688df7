import { expect, test } from "bun:test";
import { ACCEPT_BATCH, AcceptPace } from "./tcp";

test("AcceptPace: one connection per readiness, a batch only once the listener stays ready 8 turns in a row, one again after a turn without it", () => {
  const pace = new AcceptPace();
  // Ready in turns 0..7: one at a time (its queue is reported again by the next wait).
  for (let turn = 0; turn < 8; turn++) expect(pace.batch(turn)).toBe(1);
  // The 9th turn in a row: a flood, taken a batch at a time while it lasts.
  expect(pace.batch(8)).toBe(ACCEPT_BATCH);
  expect(pace.batch(9)).toBe(ACCEPT_BATCH);
  // A turn without readiness (10) ends the streak.
  expect(pace.batch(11)).toBe(1);
  expect(pace.batch(12)).toBe(1);
  // Two readinesses in one turn do not count as a streak.
  const same = new AcceptPace();
  for (let i = 0; i < 20; i++) expect(same.batch(5)).toBe(1);
});
