import { describe, expect, test } from "bun:test";
import { newRingMemory, ringBytes, RingReader, RingWriter } from "./ring";

const enc = new TextEncoder();
const head = enc.encode('{"n":');

/** Write line `n` (`{"n":N,"pad":"xxx…"}`, its length varying with n) through the writer; false when the ring dropped it. */
function writeLine(w: RingWriter, n: number, padLen = (n * 7919) % 300): boolean {
  const lw = w.begin(head, 40 + padLen);
  // Null: full, dropped and counted, nothing to write.
  if (lw === null) return false;
  if (!lw) throw new Error("line refused");
  lw.int(n).raw(',"pad":"').raw("x".repeat(padLen)).raw('"}');
  w.finish();
  return true;
}

/** Everything unread, as text, given back to the writer. */
function drain(r: RingReader): string {
  const got = r.read();
  if (!got) return "";
  const text = got.views.map((v) => Buffer.from(v).toString("utf8")).join("");
  expect(text.length).toBe(got.bytes);
  r.release(got);
  return text;
}

describe("log ring (data plane thread → main thread)", () => {
  test("ringBytes: the bound rounded down to a power of two, from 64 KiB", () => {
    expect(ringBytes(1024 * 1024)).toBe(1 << 20);
    expect(ringBytes(1024 * 1024 + 5)).toBe(1 << 20);
    expect(ringBytes(3 << 20)).toBe(2 << 20);
    expect(ringBytes(1000)).toBe(1 << 16);
  });

  test("lines of every length through many laps, read at uneven times: all arrive whole and in order", () => {
    const memory = newRingMemory(1 << 16);
    const w = new RingWriter(memory, () => {});
    const r = new RingReader(memory);
    let text = "";
    let n = 0;
    for (let round = 0; round < 400; round++) {
      const burst = 1 + ((round * 37) % 60);
      for (let i = 0; i < burst; i++) expect(writeLine(w, n++)).toBe(true);
      text += drain(r);
    }
    const lines = text.split("\n");
    expect(lines.pop()).toBe("");
    expect(lines.length).toBe(n);
    lines.forEach((l, i) => expect(JSON.parse(l).n).toBe(i));
    expect(r.counts()).toEqual({ lines: n, dropped: 0, sampledOut: 0 });
    // The writer went round the ring many times (64 KiB).
    expect(text.length).toBeGreaterThan(20 * (1 << 16));
  });

  test("full: lines are dropped and counted, never torn; room given back lets lines in again; one nudge per read", () => {
    const memory = newRingMemory(1 << 16);
    let nudges = 0;
    const w = new RingWriter(memory, () => nudges++);
    const r = new RingReader(memory);
    let written = 0;
    for (let n = 0; n < 2000; n++) if (writeLine(w, n, 100)) written++;
    expect(nudges).toBe(1);
    // Full: no writer to make a line with (nothing is formatted for a line that cannot be kept), and it is counted.
    expect(w.begin(head, 100)).toBeNull();
    const c = r.counts();
    expect(c.lines).toBe(written);
    expect(c.lines + c.dropped).toBe(2001);
    expect(c.dropped).toBeGreaterThan(1000);
    const kept = drain(r).split("\n").slice(0, -1);
    expect(kept.length).toBe(c.lines);
    kept.forEach((l, i) => expect(JSON.parse(l).n).toBe(i));
    writeLine(w, 5000);
    expect(JSON.parse(drain(r)).n).toBe(5000);
    for (let n = 0; n < 300; n++) writeLine(w, n, 100);
    expect(nudges).toBe(2);
  });

  test("a line longer than an eighth of the ring is refused (the caller counts it dropped)", () => {
    const w = new RingWriter(newRingMemory(1 << 16), () => {});
    expect(w.begin(head, 9000)).toBeUndefined();
    expect(w.begin(head, 100)).toBeDefined();
  });

  test("a sleeping reader is nudged by the next line, once; one that finds a line unread stays awake", () => {
    const memory = newRingMemory(1 << 16);
    let nudges = 0;
    const w = new RingWriter(memory, () => nudges++);
    const r = new RingReader(memory);
    // Awake (the timer reads): small lines ask for nothing.
    writeLine(w, 0);
    expect(nudges).toBe(0);
    // A line unread: no sleep.
    expect(r.sleep()).toBe(false);
    writeLine(w, 1);
    expect(nudges).toBe(0);
    expect(drain(r).split("\n").length).toBe(3);
    expect(r.sleep()).toBe(true);
    writeLine(w, 2);
    writeLine(w, 3);
    expect(nudges).toBe(1);
    drain(r);
    // Woken by its timer's restart instead (another ring's nudge): lines ask for nothing again.
    expect(r.sleep()).toBe(true);
    r.wake();
    writeLine(w, 4);
    expect(nudges).toBe(1);
  });

  test("across threads, a reader that sleeps whenever the ring is empty and waits for the nudge: no line is left behind", async () => {
    const memory = newRingMemory(1 << 16);
    const r = new RingReader(memory);
    const worker = new Worker(new URL("./ring.fixture.ts", import.meta.url).href);
    let finished = false;
    let nudged: (() => void) | undefined;
    let nudges = 0;
    let stuck = false;
    worker.onmessage = (e) => {
      if (e.data === "done" || e.data === "stuck") finished = true;
      if (e.data === "stuck") stuck = true;
      else if (e.data === "nudge") nudges++;
      nudged?.();
    };
    const lines = 5_000;
    worker.postMessage({ memory, lines, pauseEvery: 20 });
    let text = "";
    let sleeps = 0;
    const deadline = Date.now() + 30_000;
    while (!finished && Date.now() < deadline) {
      const got = drain(r);
      text += got;
      if (got || !r.sleep()) {
        await Bun.sleep(0);
        continue;
      }
      sleeps++;
      // Asleep: only a nudge (or the writer's end) wakes this reader. A lost wake-up: the writer waits for a read
      // that never comes and says it is stuck.
      const woke = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 10_000);
        nudged = () => {
          clearTimeout(t);
          resolve(true);
        };
        if (finished) nudged();
      });
      nudged = undefined;
      expect(woke).toBe(true);
      r.wake();
    }
    text += drain(r);
    worker.terminate();
    expect(stuck).toBe(false);
    const got = text.split("\n").slice(0, -1);
    expect(got.length).toBe(lines);
    expect(got.every((l, i) => l.startsWith(`{"n":${i},`))).toBe(true);
    // The reader did sleep, and the writer's nudges woke it.
    expect(sleeps).toBeGreaterThan(10);
    expect(nudges).toBeGreaterThan(10);
  }, 40_000);

  test("the race itself: a writer that writes the moment the ring is empty, a reader that sleeps whenever it is: no wake-up lost", async () => {
    const memory = newRingMemory(1 << 16);
    const flag = new SharedArrayBuffer(4);
    const f = new Int32Array(flag);
    const r = new RingReader(memory);
    const worker = new Worker(new URL("./ring-race.fixture.ts", import.meta.url).href);
    let said = "";
    worker.onmessage = (e) => (said = e.data);
    const lines = 20_000;
    worker.postMessage({ memory, flag, lines });
    let read = 0;
    let sleeps = 0;
    let lost = 0;
    const deadline = Date.now() + 10_000;
    while (read < lines && lost === 0 && Date.now() < deadline) {
      const got = r.read();
      if (got) {
        r.release(got);
        read += got.bytes / 2;
        continue;
      }
      if (!r.sleep()) continue;
      sleeps++;
      // Asleep: only the writer's nudge wakes this reader; 200 ms without one while a line waits is a lost wake-up.
      if (Atomics.wait(f, 0, 0, 200) === "timed-out" && r.unread) lost++;
      Atomics.store(f, 0, 0);
      r.wake();
    }
    // The worker's messages (its end, or "stuck") come once this thread yields.
    await Bun.sleep(50);
    worker.terminate();
    expect(lost).toBe(0);
    expect(said).not.toStartWith("stuck");
    expect(read).toBe(lines);
    // The reader slept often, inside the writer's stream of lines.
    expect(sleeps).toBeGreaterThan(lines / 10);
  }, 20_000);

  test("across threads: a worker writes 200,000 lines while this thread reads; every line arrives once, whole, in order", async () => {
    const memory = newRingMemory(1 << 16);
    const r = new RingReader(memory);
    const worker = new Worker(new URL("./ring.fixture.ts", import.meta.url).href);
    const done = new Promise<void>((resolve) => (worker.onmessage = () => resolve()));
    worker.postMessage({ memory, lines: 200_000 });
    let text = "";
    let finished = false;
    void done.then(() => (finished = true));
    const deadline = Date.now() + 30_000;
    while (!finished && Date.now() < deadline) {
      text += drain(r);
      await Bun.sleep(0);
    }
    text += drain(r);
    worker.terminate();
    const lines = text.split("\n").slice(0, -1);
    expect(lines.length).toBe(200_000);
    for (let i = 0; i < lines.length; i += 997) expect(JSON.parse(lines[i]!).n).toBe(i);
    expect(lines.every((l, i) => l.startsWith(`{"n":${i},`))).toBe(true);
  }, 40_000);
});
