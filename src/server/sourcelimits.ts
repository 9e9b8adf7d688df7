import type { ServiceConfig } from "../config/service";
import type { Dispatcher } from "../dispatcher/dispatcher";
import { SourceOwner } from "../dispatcher/sources";
import { SourceLimit, sourceLimitEntry } from "../proxy/sourcelimit";

/**
 * This process's part in the per-client limits: writing each service's
 * limits where the BPF program reads them, and the owner slot its
 * connections are counted in (claimed on first need, held until close).
 */
export class SourceLimiting {
  private owner: SourceOwner | undefined;
  private claimed = false;

  constructor(private readonly dispatcher: Dispatcher) {}

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
      } else if (this.owner.reclaimed) {
        process.stderr.write(`edgeproxy: released ${this.owner.reclaimed} client connection counts of processes that are gone\n`);
      }
    }
    return new SourceLimit(id, l, this.owner?.counter);
  }

  /** The fd and slot a UDP thread counts with (it makes its own SourceCounter); undefined without a slot. */
  get counting(): { progFd: number; owner: number } | undefined {
    const fd = this.dispatcher.sourceFd;
    return this.owner && fd !== undefined ? { progFd: fd, owner: this.owner.counter.owner } : undefined;
  }

  close(): void {
    this.owner?.close();
  }
}
