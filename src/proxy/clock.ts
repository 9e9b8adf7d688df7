/**
 * A coarse clock and one sweep timer for all connection deadlines, so the
 * per-chunk hot path reads a number instead of calling a clock or arming a
 * timer. Deadlines are honoured to within one tick.
 *
 * It ticks only while there may be a deadline to sweep: from the first
 * onTick() (a tcp or http service on Bun's sockets: src/proxy/tcp.ts,
 * src/proxy/http/service.ts) until a tick where every sweeper said it has
 * nothing to watch (returned false; one that returns nothing always has).
 * A process whose services all run on the epoll engine or are UDP has no
 * sweeper, and would otherwise wake ten times a second for nothing. While
 * it does not tick, `now` reads the time at each call, and a read (a
 * connection starting: every deadline is counted from `now`) starts the
 * ticks again.
 */
export class CoarseClock {
  private ticked = performance.now();
  private timer: Timer | undefined;
  private readonly sweepers = new Set<(now: number) => boolean | void>();

  constructor(private readonly tickMs = 100) {}

  /** The time (performance.now()) as of the last tick while ticking, else now. */
  get now(): number {
    if (this.timer) return this.ticked;
    if (this.sweepers.size === 0) return performance.now();
    // Stopped by sweepers with nothing to watch: a reader may be about to give it something (a deadline from now on).
    this.start();
    return this.ticked;
  }

  /** A connection to sweep came: tick again if stopped (a sweeper that has none may have stopped it). */
  wake(): void {
    if (!this.timer && this.sweepers.size !== 0) this.start();
  }

  /** Sweep on each tick; `sweep` returns false when it has no deadline to watch (its connections: none). */
  onTick(sweep: (now: number) => boolean | void): () => void {
    this.sweepers.add(sweep);
    this.start();
    return () => {
      this.sweepers.delete(sweep);
      if (this.sweepers.size === 0) this.stop();
    };
  }

  close(): void {
    this.stop();
    this.sweepers.clear();
  }

  private readonly tick = (): void => {
    this.ticked = performance.now();
    let watching = false;
    for (const s of this.sweepers) if (s(this.ticked) !== false) watching = true;
    if (!watching) this.stop();
  };

  private start(): void {
    if (this.timer) return;
    this.ticked = performance.now();
    this.timer = setInterval(this.tick, this.tickMs);
    this.timer.unref();
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
