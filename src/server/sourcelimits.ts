import type { ServiceConfig } from "../config/service";
import type { Dispatcher } from "../dispatcher/dispatcher";
import { SourceOwner } from "../dispatcher/sources";
import { SourceLimit, sourceLimitEntry } from "../proxy/sourcelimit";

/*
 * How often a counting process zeroes the counts of processes that are gone
 * (SourceOwner.sweep): one pass over ep_source_conns under the pin lock. A
 * crashed worker's restart does it at once; this bounds the rest (a process
 * replaced by an upgrade whose last connections were cut) to a few seconds.
 */
const SWEEP_MS = 10_000;

/**
 * This process's part in the per-client limits: writing each service's
 * limits where the BPF program reads them, and the owner slot its
 * connections are counted in (claimed on first need, held until close).
 */
export class SourceLimiting {
  private owner: SourceOwner | undefined;
  private claimed = false;
  private sweeper: Timer | undefined;

  constructor(
    private readonly dispatcher: Dispatcher,
    /** Runs fn under the pin lock (the control plane's). */
    private readonly locked: <T>(fn: () => T) => T,
  ) {}

  /**
   * Write the service's limits (ep_limits) and its load balancers, which the
   * program leaves to user space (ep_limit_exempt). Every process serving the
   * service writes the same. Call under the pin lock.
   */
  publish(cfg: ServiceConfig, id: number): void {
    this.dispatcher.setSourceLimit(id, sourceLimitEntry(cfg.sourceLimits, cfg.acceptProxy.length > 0));
    this.dispatcher.setLimitExempt(id, cfg.sourceLimits ? cfg.acceptProxy : []);
  }

  /** The service's limiter at accept; undefined when it has no limits. Call under the pin lock. */
  limiter(cfg: ServiceConfig, id: number): SourceLimit | undefined {
    const l = cfg.sourceLimits;
    if (!l) return undefined;
    if (l.connections && !this.claimed) {
      this.claimed = true;
      this.owner = SourceOwner.claim(this.dispatcher);
      if (!this.owner) {
        // Fail open, loudly: refusing every connection of the service would be worse.
        process.stderr.write(`edgeproxy: service ${cfg.name}: no free slot to count connections in (every one of the dispatcher's is held by a running process); source_connections is enforced by the other processes only\n`);
      } else {
        if (this.owner.reclaimed) process.stderr.write(`edgeproxy: released ${this.owner.reclaimed} client connection counts of processes that are gone\n`);
        this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
        this.sweeper.unref();
      }
    }
    return new SourceLimit(id, l, this.owner?.counter);
  }

  /** The fd and slot a UDP thread counts with (it makes its own SourceCounter); undefined without a slot. */
  get counting(): { progFd: number; owner: number } | undefined {
    const fd = this.dispatcher.sourceFd;
    return this.owner && fd !== undefined ? { progFd: fd, owner: this.owner.counter.owner } : undefined;
  }

  private sweep(): void {
    const owner = this.owner;
    if (!owner) return;
    try {
      const n = this.locked(() => owner.sweep(this.dispatcher));
      if (n) process.stderr.write(`edgeproxy: released ${n} client connection counts of processes that are gone\n`);
    } catch (e) {
      process.stderr.write(`edgeproxy: sweep of client connection counts: ${(e as Error).message}\n`);
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.owner?.close();
  }
}
