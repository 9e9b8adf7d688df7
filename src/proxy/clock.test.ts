import { expect, test } from "bun:test";
import { CoarseClock } from "./clock";

test("CoarseClock ticks while a sweeper watches, stops after a tick where none does, and a connection (wake, or a read of now) starts it again", async () => {
  const clock = new CoarseClock(20);
  try {
    // No sweeper: the time itself, no timer.
    const a = clock.now;
    await Bun.sleep(5);
    expect(clock.now).toBeGreaterThan(a);

    let watching = true;
    let sweeps = 0;
    clock.onTick(() => {
      sweeps++;
      return watching;
    });
    await Bun.sleep(150);
    expect(sweeps).toBeGreaterThanOrEqual(3); // ~7 at 20 ms; a busy machine delays timers
    watching = false;
    await Bun.sleep(60);
    const stoppedAt = sweeps;
    await Bun.sleep(150);
    expect(sweeps).toBe(stoppedAt); // stopped: nothing to watch
    // Stopped, its time is read at each call.
    const t = clock.now;
    expect(Math.abs(t - performance.now())).toBeLessThan(5);

    watching = true;
    clock.wake();
    await Bun.sleep(150);
    expect(sweeps).toBeGreaterThanOrEqual(stoppedAt + 3);
    watching = false;
    await Bun.sleep(60);
    const again = sweeps;
    void clock.now; // a reader (a deadline counted from now) starts it too
    await Bun.sleep(60);
    expect(sweeps).toBeGreaterThan(again);
  } finally {
    clock.close();
  }
});

test("CoarseClock: a sweeper that returns nothing always watches (http/service.ts's)", async () => {
  const clock = new CoarseClock(20);
  let sweeps = 0;
  clock.onTick(() => {
    sweeps++;
  });
  try {
    await Bun.sleep(200);
    expect(sweeps).toBeGreaterThanOrEqual(4);
  } finally {
    clock.close();
  }
  const closed = sweeps;
  await Bun.sleep(60);
  expect(sweeps).toBe(closed);
});
