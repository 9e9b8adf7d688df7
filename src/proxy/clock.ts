/**
 * A coarse clock and one sweep timer for all connection deadlines, so the
 * per-chunk hot path stores a number instead of calling a clock or arming a
 * timer. Deadlines are honoured to within one tick.
 */
export class CoarseClock {
  now = performance.now();
  private readonly timer: Timer;
  private readonly sweepers = new Set<(now: number) => void>();

  constructor(tickMs = 100) {
    this.timer = setInterval(() => {
      this.now = performance.now();
      for (const s of this.sweepers) s(this.now);
    }, tickMs);
    this.timer.unref();
  }

  onTick(sweep: (now: number) => void): () => void {
    this.sweepers.add(sweep);
    return () => this.sweepers.delete(sweep);
  }

  close(): void {
    clearInterval(this.timer);
    this.sweepers.clear();
  }
}
