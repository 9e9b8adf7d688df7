/*
 * One timer for a serving process's periodic chores: the steering watchdog
 * (src/server/watchdog.ts, every 250 ms), the connection cap's steering
 * repair (steering.ts) and the kernel refusals' access log lines
 * (src/log/kernel.ts), every second. A timer of its own each woke the
 * process on its own, and at idle the wake-ups are the cost (~150 µs of
 * CPU each, the process's threads together: an empty 250 ms timer measured
 * 0.6 ms/s, bench/idle.sh); on one timer the chores share them.
 */

/** The period every chore's is a multiple of. */
export const TICK_MS = 250;

interface Chore {
  readonly ticks: number;
  readonly fn: () => void;
  n: number;
}

const chores = new Set<Chore>();
let timer: Timer | undefined;

function tick(): void {
  // A snapshot: a chore added by a chore joins at the next tick (its first run one period later, as every() says).
  for (const c of [...chores]) {
    if (++c.n % c.ticks !== 0) continue;
    try {
      c.fn();
    } catch (e) {
      // As a timer of its own would: uncaught; the other chores still run.
      queueMicrotask(() => {
        throw e;
      });
    }
  }
}

/**
 * Run `fn` every `ms` (a multiple of TICK_MS; the first run one period from
 * now, as setInterval's) until the returned function is called. The timer
 * never holds the process open.
 */
export function every(ms: number, fn: () => void): () => void {
  const ticks = Math.round(ms / TICK_MS);
  if (ticks < 1 || ticks * TICK_MS !== ms) throw new RangeError(`every(${ms}): not a multiple of ${TICK_MS} ms`);
  const chore: Chore = { ticks, fn, n: 0 };
  chores.add(chore);
  if (!timer) {
    timer = setInterval(tick, TICK_MS);
    timer.unref();
  }
  return () => {
    chores.delete(chore);
    if (chores.size === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}
