import { formatAddress } from "../config/address";
import type { OriginConfig, PoolConfig } from "../config/pool";
import type { PortRange } from "../config/ports";

/*
 * FIRST CUT (to be replaced by the pools work): round-robin over the
 * configured origins, each at the first address resolved at start. The
 * interface (pick / Member / close / snapshot) is what the data planes use.
 */

/** What failed when talking to an origin, for passive ejection and metrics. */
export type OriginFailure = "refused" | "timeout" | "unreachable" | "reset" | "other";

/** One origin of a pool as the data plane sees it: tell it how its connections go. */
export interface Member {
  readonly origin: OriginConfig;
  /** A connection (request, flow) to it began: least-connections counts these. */
  acquired(): void;
  /** ...and ended. */
  released(): void;
  /** A connect to it failed (passive ejection counts consecutive ones). */
  failed(kind: OriginFailure): void;
  /** A connect to it succeeded. */
  succeeded(): void;
}

/** Where one new connection goes. */
export interface Pick {
  /** An IP literal, resolved. */
  readonly host: string;
  readonly port: number;
  readonly member: Member;
}

/** A pool's origins as they stand, for the admin API. */
export interface OriginStatus {
  readonly origin: string;
  readonly addresses: readonly string[];
  readonly weight: number;
  readonly healthy: boolean;
  readonly active: number;
}

export interface PoolOptions {
  /** The service's edge port range, for origins given as a port range (same size, offset kept). */
  readonly edgeRange?: PortRange;
  /** Addresses already resolved (by host), so a start needs no second lookup. */
  readonly resolved?: ReadonlyMap<string, readonly Uint8Array[]>;
}

class SimpleMember implements Member {
  active = 0;
  constructor(
    readonly origin: OriginConfig,
    readonly addresses: string[],
  ) {}
  acquired(): void {
    this.active++;
  }
  released(): void {
    this.active--;
  }
  failed(): void {}
  succeeded(): void {}
}

/** The origins of one service or route, and the choice among them. */
export class OriginPool {
  private readonly members: SimpleMember[];
  private next = 0;

  constructor(
    readonly config: PoolConfig,
    private readonly options: PoolOptions = {},
  ) {
    this.members = config.origins.map((o) => new SimpleMember(o, (options.resolved?.get(o.host) ?? []).map(formatAddress)));
  }

  /** Start resolving and checking. */
  async start(): Promise<void> {}

  /** The origin for a new connection from `client` (an IP literal) to edge port `edgePort`; undefined when none is usable. */
  pick(_client: string, edgePort: number): Pick | undefined {
    const m = this.members[this.next++ % this.members.length]!;
    const o = m.origin;
    const port = o.ports ? o.ports.lo + (edgePort - (this.options.edgeRange?.lo ?? o.ports.lo)) : (o.port ?? edgePort);
    return { host: m.addresses[0] ?? o.host, port, member: m };
  }

  snapshot(): OriginStatus[] {
    return this.members.map((m) => ({ origin: m.origin.host, addresses: m.addresses, weight: m.origin.weight, healthy: true, active: m.active }));
  }

  /** Stop checks and timers. Idempotent. */
  close(): void {}
}
