import type { SourceLimits } from "../config/service";
import { EP_SOURCE_LIMIT_EXEMPT, NO_SOURCE_LIMIT, type SourceLimitEntry, type SourceKey } from "../dispatcher/sourceabi";
import type { SourceCounter } from "../dispatcher/sources";
import type { Endpoint } from "../system/sockaddr";
import type { PipelineOptions } from "./pipelineapi";

/** A service's per-client limits as the BPF program takes them (struct ep_source_limit). */
export function sourceLimitEntry(l: SourceLimits | undefined, exempt: boolean): SourceLimitEntry {
  if (!l) return NO_SOURCE_LIMIT;
  // GCRA: one connection per interval; `burst` back to back is a tolerance of burst - 1 intervals.
  const interval = l.rate ? BigInt(Math.round(1e9 / l.rate.perSecond)) : 0n;
  return { connections: l.connections, prefixV4: 32, prefixV6: l.prefixV6, flags: exempt ? EP_SOURCE_LIMIT_EXEMPT : 0, rateIntervalNs: interval, rateToleranceNs: l.rate ? interval * BigInt(l.rate.burst - 1) : 0n };
}

/** A service's connection (flow) limit for a thread that counts on its own: structured-clone safe. */
export interface SourceCounting {
  readonly progFd: number;
  readonly owner: number;
  readonly service: number;
  readonly connections: number;
  readonly prefixV6: number;
}

/**
 * A service's per-client limits at accept, against the counts every process
 * shares (bpf/dispatcher.h, ep_source_conns). The BPF program refuses the SYNs
 * of a client already at its limit (and charges the rate); this counts the
 * connections that get through: +1 at accept, -1 at close, one syscall each
 * and only when the service has source_connections. It also refuses what the
 * program cannot see: a few SYNs racing each other's accept, and clients a
 * trusted PROXY header names (the kernel saw their load balancer).
 *
 * Admission stage of the client pipeline (pipelineHooks): acquire() once a
 * connection's client is known, release() when it closes (once per acquire
 * that returned true).
 */
export class SourceLimit {
  /** Connections (udp: flows) refused here, by the limit they hit. */
  readonly refused = { connections: 0, rate: 0 };

  constructor(
    readonly service: number,
    readonly limits: SourceLimits,
    /** Absent when no owner slot was free (see SourceOwner.claim): then connections are not counted here. */
    private readonly counter: SourceCounter | undefined,
  ) {}

  /** What another thread (the UDP data plane) needs to count with its own SourceCounter; undefined when nothing is counted. */
  counting(): SourceCounting | undefined {
    if (!this.limits.connections || !this.counter) return undefined;
    return { progFd: this.counter.progFd, owner: this.counter.owner, service: this.service, connections: this.limits.connections, prefixV6: this.limits.prefixV6 };
  }

  private key(client: Endpoint): SourceKey {
    return { service: this.service, addr: client.addr, prefixLen: client.family === 4 ? 32 : this.limits.prefixV6 };
  }

  /**
   * Count a new connection of `client`; false (nothing counted) when it is
   * over a limit. `named`: the client comes from a PROXY header, so its rate
   * is charged here (the program charged the load balancer's, which is exempt).
   */
  acquire(client: Endpoint, named = false): boolean {
    try {
      return this.check(client, named);
    } catch (e) {
      // The kernel refused the count (it should not): let the connection in rather than refuse every client.
      this.failed(e);
      return true;
    }
  }

  private failures = 0;

  private failed(e: unknown): void {
    if (this.failures++ === 0) process.stderr.write(`edgeproxy: service ${this.service}: per-client count failed, connections pass uncounted: ${(e as Error).message}\n`);
  }

  private check(client: Endpoint, named: boolean): boolean {
    if (named && this.limits.rate && this.counter?.rateExceeded(this.key(client))) {
      this.refused.rate++;
      return false;
    }
    if (!this.limits.connections || !this.counter) return true;
    const key = this.key(client);
    if (this.counter.add(key, 1) > this.limits.connections) {
      this.counter.add(key, -1);
      this.refused.connections++;
      return false;
    }
    return true;
  }

  release(client: Endpoint): void {
    if (!this.limits.connections || !this.counter) return;
    try {
      this.counter.add(this.key(client), -1);
    } catch (e) {
      this.failed(e);
    }
  }

  /**
   * The client pipeline's admission hooks (pipeline.ts): acquire() at accept,
   * or for the client a trusted PROXY header names (rate-charged here: the
   * program charged its load balancer, which is exempt); release() at close.
   */
  pipelineHooks(): Required<Pick<PipelineOptions, "admitClient" | "releaseClient">> {
    return {
      admitClient: (client, when) => this.acquire(client, when === "proxy_header"),
      releaseClient: (client) => this.release(client),
    };
  }
}
