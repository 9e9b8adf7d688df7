import { describe, expect, test } from "bun:test";
import { ClientTracker, mergeClients } from "./clients";

const clock = (now = 0) => ({ now });

describe("ClientTracker", () => {
  test("exact counts while the addresses fit; busiest first; refusals of tracked addresses; ::ffff: shown as IPv4", () => {
    const c = clock(1_000);
    const t = new ClientTracker(c, 60_000, 4);
    for (let i = 0; i < 5; i++) t.seen("::ffff:192.0.2.10");
    for (let i = 0; i < 3; i++) t.seen("192.0.2.20");
    t.seen("2001:db8::1");
    t.refused("192.0.2.20");
    t.refused("198.51.100.1"); // not tracked: nothing
    t.closed("::ffff:192.0.2.10", 300);
    t.closed("::ffff:192.0.2.10", 200);
    t.closed("198.51.100.1", 999); // not tracked: nothing
    c.now += 2_000;
    expect(t.snapshot()).toEqual({
      windowSeconds: 2,
      counters: 4,
      top: [
        { address: "192.0.2.10", connections: 5, refused: 0, error: 0, bytes: 500 },
        { address: "192.0.2.20", connections: 3, refused: 1, error: 0, bytes: 0 },
        { address: "2001:db8::1", connections: 1, refused: 0, error: 0, bytes: 0 },
      ],
    });
  });

  test("bounded: many distinct addresses keep the capacity; a heavy hitter among them is listed, its count at most `error` over", () => {
    const t = new ClientTracker(clock(), 60_000, 8);
    let heavy = 0;
    for (let i = 0; i < 10_000; i++) {
      // One connection in 5 from the heavy hitter (more than 1/8: Space-Saving guarantees it is kept), the rest each from a new address.
      if (i % 5 === 0) {
        t.seen("192.0.2.1");
        heavy++;
      } else t.seen(`10.0.${i >> 8}.${i & 255}`);
    }
    const s = t.snapshot(100);
    expect(s.top.length).toBe(8);
    const top = s.top[0]!;
    expect(top.address).toBe("192.0.2.1");
    expect(top.connections).toBeGreaterThanOrEqual(heavy);
    expect(top.connections - top.error).toBeLessThanOrEqual(heavy);
    // Every listed count's overestimate is bounded by N / capacity.
    for (const r of s.top) expect(r.error).toBeLessThanOrEqual(10_000 / 8);
  });

  test("the window: a snapshot covers the current and the previous generation; older ones are gone", () => {
    const c = clock(0);
    const t = new ClientTracker(c, 10_000, 4);
    t.seen("192.0.2.1");
    c.now = 10_500; // the first generation becomes the previous one
    t.seen("192.0.2.2");
    t.seen("192.0.2.2");
    t.closed("192.0.2.1", 70); // accepted in the previous generation: its bytes go there
    expect(t.snapshot().top.map((r) => [r.address, r.connections, r.bytes])).toEqual([["192.0.2.2", 2, 0], ["192.0.2.1", 1, 70]]);
    c.now = 21_000; // rotated by the snapshot itself: 192.0.2.1's generation is dropped
    const s = t.snapshot();
    expect(s.top.map((r) => [r.address, r.connections])).toEqual([["192.0.2.2", 2]]);
    expect(s.windowSeconds).toBe(11);
    c.now = 60_000; // idle for more than a window: nothing left
    expect(t.snapshot().top).toEqual([]);
  });

  test("mergeClients adds workers' counts per address, busiest first, longest window", () => {
    const a = { windowSeconds: 30, counters: 64, top: [{ address: "192.0.2.1", connections: 5, refused: 1, error: 0, bytes: 10 }, { address: "192.0.2.2", connections: 4, refused: 0, error: 0, bytes: 20 }] };
    const b = { windowSeconds: 40, counters: 64, top: [{ address: "192.0.2.2", connections: 3, refused: 0, error: 1, bytes: 5 }] };
    expect(mergeClients([a, undefined, b])).toEqual({
      windowSeconds: 40,
      counters: 64,
      top: [
        { address: "192.0.2.2", connections: 7, refused: 0, error: 1, bytes: 25 },
        { address: "192.0.2.1", connections: 5, refused: 1, error: 0, bytes: 10 },
      ],
    });
    expect(mergeClients([undefined])).toBeUndefined();
    expect(mergeClients([a], 1)!.top).toHaveLength(1);
  });
});
