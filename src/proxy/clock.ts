/**
 * A coarse clock and one sweep timer for all connection deadlines, so the
 * per-chunk hot path reads a number instead of calling a clock or arming a
 * timer. Deadlines are honoured to within one tick.
 *
 * It ticks only while something sweeps on it (a tcp or http service on
 * Bun's sockets: src/proxy/tcp.ts, src/proxy/http/service.ts). A process
 * whose services all run on the epoll engine or are UDP has none, and
 * would otherwise wake ten times a second for nothing; its readers (the
 * busiest-clients count) then get the time read at each call.
 */
export class CoarseClock {
  private ticked = performance.now();
  private timer: Timer | undefined;
  private readonly sweepers = new Set<(now: number) => void>();

  constructor(private readonly tickMs = 100) {}

  /** The time (performance.now()) as of the last tick while ticking, else now. */
  get now(): number {
    return this.timer ? this.ticked : performance.now();
  }

  onTick(sweep: (now: number) => void): () => void {
    this.sweepers.add(sweep);
    if (!this.timer) {
      this.ticked = performance.now();
      this.timer = setInterval(() => {
        this.ticked = performance.now();
        for (const s of this.sweepers) s(this.ticked);
      }, this.tickMs);
      this.timer.unref();
    }
    return () => {
      this.sweepers.delete(sweep);
      if (this.sweepers.size === 0) this.stop();
    };
  }

  close(): void {
    this.stop();
    this.sweepers.clear();
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
