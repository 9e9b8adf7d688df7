import { formatAddress, parseAddress } from "../config/address";
import { formatOrigin, POOL_DEFAULTS, type OriginConfig, type PoolConfig } from "../config/pool";
import type { PortRange } from "../config/ports";
import { choose, originPort, type Weighted } from "./balance";
import { HealthChecker, HealthState, type PoolKind, type ProbeResult } from "./health";
import { NameWatcher, type DnsApi } from "./resolver";

/*
 * A pool's unit is the endpoint: one address of one configured origin (a
 * name with three A records is three endpoints sharing the origin's weight).
 * Health checks and passive ejection act per endpoint, since one address of a
 * name can die while the others serve.
 */

/** What failed when talking to an origin, for passive ejection and metrics. */
export type OriginFailure = "refused" | "timeout" | "unreachable" | "reset" | "other";

/** One endpoint of a pool as the data plane sees it: tell it how its connections go. */
export interface Member {
  readonly origin: OriginConfig;
  /** The IP literal this endpoint is. */
  readonly address: string;
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

/** One endpoint as it stands, for the admin API. */
export interface EndpointStatus {
  readonly address: string;
  /** Taking new connections: healthy and not ejected. */
  readonly up: boolean;
  /** Active checks pass (true when none run). */
  readonly healthy: boolean;
  /** Passively ejected until this Unix time in ms; absent when not. */
  readonly ejectedUntil?: number;
  readonly ejections: number;
  readonly active: number;
  readonly lastCheck?: string;
}

/** A pool's origins as they stand, for the admin API. */
export interface OriginStatus {
  /** As configured: "10.0.0.1:80", "origin.internal (port-preserving)", with weight. */
  readonly origin: string;
  readonly addresses: readonly string[];
  readonly weight: number;
  /** Some endpoint takes new connections. */
  readonly healthy: boolean;
  readonly active: number;
  readonly endpoints: readonly EndpointStatus[];
  /** Failed re-resolutions of a name (the last good addresses stay in use). */
  readonly resolveFailures: number;
}

/** An eligible endpoint as plain data, for a data plane on another thread (the UDP worker). */
export interface EndpointSpec {
  readonly key: string;
  readonly address: string;
  readonly port?: number;
  readonly ports?: PortRange;
  readonly weight: number;
}

export interface PoolOptions {
  /** The service's edge port range: origins given as a port range map by offset into it; a port-preserving origin is checked at its first port. */
  readonly edgeRange?: PortRange;
  /** Addresses already resolved (by host), so a start needs no second lookup. */
  readonly resolved?: ReadonlyMap<string, readonly Uint8Array[]>;
  /** What active checks speak; default tcp. */
  readonly kind?: PoolKind;
  /** Who the pool belongs to, in log lines ("service web"). */
  readonly owner?: string;
  readonly log?: (line: string) => void;
  readonly dns?: DnsApi;
}

class PoolMember implements Member, Weighted {
  readonly key: string;
  weight: number;
  current = 0;
  active = 0;
  readonly health: HealthState | undefined;
  checker: HealthChecker | undefined;
  lastCheck: string | undefined;
  failuresInRow = 0;
  ejectedUntil = 0;
  ejections = 0;
  private ejectTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly pool: OriginPool,
    readonly origin: OriginConfig,
    readonly address: string,
    weight: number,
  ) {
    this.key = `${address}|${origin.port ?? ""}|${origin.ports ? `${origin.ports.lo}-${origin.ports.hi}` : ""}`;
    this.weight = weight;
    this.health = pool.config.health && new HealthState(pool.config.health);
  }

  eligible(now: number): boolean {
    return (this.health?.healthy ?? true) && now >= this.ejectedUntil;
  }

  acquired(): void {
    this.active++;
  }

  released(): void {
    this.active--;
  }

  failed(kind: OriginFailure): void {
    const { failures, durationMs } = this.pool.config.eject;
    if (++this.failuresInRow < failures || Date.now() < this.ejectedUntil) return;
    this.failuresInRow = 0;
    this.ejections++;
    this.ejectedUntil = Date.now() + durationMs;
    // With active checks, it comes back only once they pass again.
    this.health?.markDown();
    this.pool.changed(`${this.describe()} ejected for ${durationMs}ms after ${failures} failed connects (last: ${kind})`);
    clearTimeout(this.ejectTimer);
    this.ejectTimer = setTimeout(() => this.pool.changed(this.eligible(Date.now()) ? `${this.describe()} back after ejection` : undefined), durationMs);
    this.ejectTimer.unref?.();
  }

  succeeded(): void {
    this.failuresInRow = 0;
  }

  checked(r: ProbeResult): void {
    this.lastCheck = `${r.pass ? "pass" : "fail"}: ${r.detail}`;
    if (!this.health?.record(r.pass)) return;
    const up = this.health.healthy;
    this.pool.changed(up && Date.now() < this.ejectedUntil ? undefined : `${this.describe()} ${up ? "up" : "down"}: check ${r.pass ? "passed" : `failed (${r.detail})`}`);
  }

  describe(): string {
    const o = formatOrigin({ ...this.origin, weight: 1 });
    return parseAddress(this.origin.host) ? `origin ${o}` : `origin ${o} at ${this.address}`;
  }

  stop(): void {
    this.checker?.stop();
    clearTimeout(this.ejectTimer);
  }
}

/** One configured origin and the endpoints its host resolves to. */
interface Group {
  readonly origin: OriginConfig;
  members: PoolMember[];
  watcher?: NameWatcher;
}

/**
 * The origins of one service or route, and the choice among them: only
 * healthy, non-ejected endpoints are picked. Owns its health checkers, name
 * watchers and timers until close().
 */
export class OriginPool {
  private readonly groups: Group[];
  private members: PoolMember[] = [];
  private readonly listeners = new Set<() => void>();
  private readonly log: (line: string) => void;
  private closed = false;
  private running = false;
  /**
   * Whether an endpoint's port depends on the edge port (port-preserving and
   * port-range origins, which have no fixed `port`); else pick() ignores it,
   * and callers need not read it (with Bun sockets, a getsockname(2)).
   */
  readonly followsEdgePort: boolean;

  constructor(
    readonly config: PoolConfig,
    private readonly options: PoolOptions = {},
  ) {
    this.followsEdgePort = config.origins.some((o) => o.port === undefined);
    this.log = options.log ?? ((line) => process.stderr.write(`edgeproxy: ${line}\n`));
    this.groups = config.origins.map((origin) => ({ origin, members: [] }));
    for (const g of this.groups) {
      const literal = parseAddress(g.origin.host);
      this.setAddresses(g, literal ? [formatAddress(literal)] : (options.resolved?.get(g.origin.host)?.map(formatAddress) ?? []));
    }
  }

  /** The service's edge port range the pool maps origin port ranges into. */
  get edgeRange(): PortRange | undefined {
    return this.options.edgeRange;
  }

  /** Start checking endpoints and watching names; resolves when every name has been resolved once (or failed to). */
  async start(): Promise<void> {
    if (this.closed || this.running) return;
    this.running = true;
    for (const m of this.members) this.startChecks(m);
    await Promise.all(
      this.groups
        .filter((g) => !parseAddress(g.origin.host))
        .map((g) => {
          g.watcher = new NameWatcher(
            g.origin.host,
            g.members.map((m) => m.address),
            (addresses) => this.setAddresses(g, addresses),
            (message) => this.log(`${this.owner()}: origin ${g.origin.host}: ${message}`),
            this.options.dns,
            POOL_DEFAULTS.resolveMs,
          );
          return g.watcher.start();
        }),
    );
  }


  /** The endpoint for a new connection from `client` (an IP literal) to edge port `edgePort`; undefined when none is usable. */
  pick(client: string, edgePort: number): Pick | undefined {
    const now = Date.now();
    const m = choose(this.config.balance, this.members, (x) => x.eligible(now), client);
    if (!m) return undefined;
    return { host: m.address, port: originPort(m.origin, edgePort, this.options.edgeRange), member: m };
  }

  /** The endpoints new connections may go to now, as plain data (for the UDP worker). */
  eligible(): EndpointSpec[] {
    const now = Date.now();
    return this.members.filter((m) => m.eligible(now)).map((m) => ({ key: m.key, address: m.address, port: m.origin.port, ports: m.origin.ports, weight: m.weight }));
  }

  /** The endpoint with this key (EndpointSpec.key), for reports from another thread; undefined once it is gone. */
  member(key: string): Member | undefined {
    return this.members.find((m) => m.key === key);
  }

  /** Call `fn` whenever the eligible endpoints may have changed (health, ejection, DNS). Returns the unsubscribe. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  snapshot(): OriginStatus[] {
    const now = Date.now();
    return this.groups.map((g) => {
      const endpoints = g.members.map((m) => ({
        address: m.address,
        up: m.eligible(now),
        healthy: m.health?.healthy ?? true,
        ...(m.ejectedUntil > now ? { ejectedUntil: m.ejectedUntil } : {}),
        ejections: m.ejections,
        active: m.active,
        ...(m.lastCheck ? { lastCheck: m.lastCheck } : {}),
      }));
      return {
        origin: formatOrigin(g.origin),
        addresses: g.members.map((m) => m.address),
        weight: g.origin.weight,
        healthy: endpoints.some((e) => e.up),
        active: endpoints.reduce((n, e) => n + e.active, 0),
        endpoints,
        resolveFailures: g.watcher?.failures ?? 0,
      };
    });
  }

  /** Stop checks, name watchers and timers. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const g of this.groups) g.watcher?.close();
    for (const m of this.members) m.stop();
    this.listeners.clear();
  }

  /** @internal A member's eligibility changed: log why (if given) and tell the listeners. */
  changed(why: string | undefined): void {
    if (this.closed) return;
    if (why) this.log(`${this.owner()}: ${why}`);
    for (const fn of this.listeners) fn();
  }

  private owner(): string {
    return this.options.owner ?? "pool";
  }

  // A name's (new) addresses: endpoints that stay keep their state and connections.
  private setAddresses(g: Group, addresses: readonly string[]): void {
    if (this.closed) return;
    const unique = [...new Set(addresses)];
    const weight = g.origin.weight / Math.max(1, unique.length);
    const before = g.members.map((m) => m.address).join(",");
    const kept = new Map(g.members.map((m) => [m.address, m]));
    g.members = unique.map((a) => {
      const m = kept.get(a) ?? new PoolMember(this, g.origin, a, weight);
      kept.delete(a);
      m.weight = weight;
      return m;
    });
    for (const gone of kept.values()) gone.stop();
    this.members = this.groups.flatMap((x) => x.members);
    if (before === unique.join(",")) return;
    if (this.running) for (const m of g.members) this.startChecks(m);
    this.changed(before === "" ? undefined : `origin ${g.origin.host} now at ${unique.join(", ") || "no addresses"}`);
  }

  private startChecks(m: PoolMember): void {
    const h = this.config.health;
    const port = m.origin.port ?? m.origin.ports?.lo ?? this.options.edgeRange?.lo;
    if (!h || port === undefined || m.checker) return;
    m.checker = new HealthChecker(this.options.kind ?? "tcp", { address: m.address, port, hostHeader: m.origin.host }, h, (r) => m.checked(r));
    m.checker.start();
  }
}
