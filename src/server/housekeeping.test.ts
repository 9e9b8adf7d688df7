import { expect, test } from "bun:test";
import { every, TICK_MS } from "./housekeeping";

test("every(): chores of different periods share the one timer's ticks; a stopped chore runs no more", async () => {
  const runs: { at: number; what: string }[] = [];
  const t0 = performance.now();
  const stopFast = every(TICK_MS, () => runs.push({ at: performance.now() - t0, what: "fast" }));
  const stopSlow = every(2 * TICK_MS, () => runs.push({ at: performance.now() - t0, what: "slow" }));
  try {
    await Bun.sleep(4.5 * TICK_MS);
    stopSlow();
    const slowRuns = runs.filter((r) => r.what === "slow").length;
    await Bun.sleep(2.5 * TICK_MS);
    const fast = runs.filter((r) => r.what === "fast");
    const slow = runs.filter((r) => r.what === "slow");
    // Bounded both ways, with room for a late timer on a busy machine.
    expect(fast.length).toBeGreaterThanOrEqual(4);
    expect(fast.length).toBeLessThanOrEqual(7);
    expect(slowRuns).toBeGreaterThanOrEqual(1);
    expect(slowRuns).toBeLessThanOrEqual(2);
    expect(slow.length).toBe(slowRuns); // stopped: no more
    // The slow chore runs in a tick the fast one runs in too: one wake-up for both.
    for (const s of slow) expect(fast.some((f) => Math.abs(f.at - s.at) < 5)).toBe(true);
  } finally {
    stopFast();
    stopSlow();
  }
});

test("every(): a period that is not a multiple of the tick is refused", () => {
  expect(() => every(TICK_MS + 1, () => {})).toThrow(RangeError);
  expect(() => every(0, () => {})).toThrow(RangeError);
});
