import { formatAddress, parseAddress } from "../config/address";
import { formatOrigin, POOL_DEFAULTS, type OriginConfig, type PoolConfig } from "../config/pool";
import type { PortRange } from "../config/ports";
import { choose, originPort } from "./balance";
import { HealthChecker, type PoolKind } from "./health";
import { PoolMember, type Member, type MemberOwner } from "./member";
import { NameWatcher, type DnsApi } from "./resolver";
import { OriginTls } from "./tls";

/*
 * A pool's unit is the endpoint: one address of one configured origin (a
 * name with three A records is three endpoints sharing the origin's weight).
 * Active checks act per endpoint, since one address of a name can die while
 * the others serve; passive ejection per endpoint PORT, since one port of a
 * port-preserving origin can be closed while the others serve.
 *
 * Ejection never leaves a pool with nothing to try: when no endpoint is
 * eligible for a connection, it goes to any of them, balanced as usual (the
 * panic mode of Envoy's healthy_panic_threshold at 0%), and is counted.
 * An origin that is down refuses fast; one that was merely ejected answers.
 */

export type { Member, OriginFailure } from "./member";

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
  /** Passively ejected until this Unix time in ms; absent when not (origins with a fixed port). */
  readonly ejectedUntil?: number;
  /** Ports ejected now and until when (origins without a fixed port: each port on its own). */
  readonly ejectedPorts?: readonly { readonly port: number; readonly until: number }[];
  /** Ejections of any of its ports. */
  readonly ejections: number;
  /** Connections sent to it while it was not eligible, because no endpoint of the pool was (panic). */
  readonly panics: number;
  /** Ports whose ejection state was forgotten because the bounded per-port map was full. */
  readonly portStatesEvicted: number;
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

/** An endpoint as plain data, for a data plane on another thread (the UDP worker). */
export interface EndpointSpec {
  readonly key: string;
  readonly address: string;
  readonly port?: number;
  readonly ports?: PortRange;
  readonly weight: number;
  /** Active checks pass (true when none run). */
  readonly healthy: boolean;
  /** Origin ports passively ejected now. */
  readonly ejectedPorts: readonly number[];
}

export interface PoolOptions {
  /** The service's edge port range: origins given as a port range map by offset into it; a port-preserving origin is checked at its first port (or health.port). */
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

const always = () => true;
// Ejection and panic lines: a burst of this many, then one a second.
const LOG_BURST = 20;
// A pool in panic says so at most this often.
const LOG_EVERY_MS = 10_000;

/** One configured origin and the endpoints its host resolves to. */
interface Group {
  readonly origin: OriginConfig;
  members: PoolMember[];
  watcher?: NameWatcher;
}

/**
 * The origins of one service or route, and the choice among them: healthy
 * endpoints not ejected on the port in question, else (panic) any. Owns its
 * health checkers, name watchers and timers until close().
 */
export class OriginPool implements MemberOwner {
  private readonly groups: Group[];
  private members: PoolMember[] = [];
  private readonly listeners = new Set<() => void>();
  private readonly log: (line: string) => void;
  private closed = false;
  private running = false;
  private logTokens: number = LOG_BURST;
  private logRefilled = Date.now();
  private logSuppressed = 0;
  private lastPanicLog = -Infinity;
  /**
   * Whether an endpoint's port depends on the edge port (port-preserving and
   * port-range origins, which have no fixed `port`); else pick() ignores it,
   * and callers need not read it (with Bun sockets, a getsockname(2)).
   */
  readonly followsEdgePort: boolean;
  /** TLS to the origins (origin_tls); absent: plain TCP. */
  readonly tls: OriginTls | undefined;

  constructor(
    readonly config: PoolConfig,
    private readonly options: PoolOptions = {},
  ) {
    this.followsEdgePort = config.origins.some((o) => o.port === undefined);
    this.tls = config.tls && new OriginTls(config.tls);
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


  /**
   * The endpoint for a new connection from `client` (an IP literal) to edge
   * port `edgePort`: an eligible one (healthy, that origin port not
   * ejected); with none, any (panic, counted). Undefined only when the pool
   * has no endpoint at all (a name that resolves to nothing).
   */
  pick(client: string, edgePort: number): Pick | undefined {
    const now = Date.now();
    const range = this.options.edgeRange;
    let m = choose(this.config.balance, this.members, (x) => x.eligible(now, originPort(x.origin, edgePort, range)), client);
    if (!m) {
      m = choose(this.config.balance, this.members, always, client);
      if (!m) return undefined;
      this.panicked(m, 1);
    }
    const port = originPort(m.origin, edgePort, range);
    return { host: m.address, port, member: m.at(port) };
  }

  /** Every endpoint with its health and ejected ports, as plain data (for the UDP worker, which picks and panics alike). */
  endpoints(): EndpointSpec[] {
    const now = Date.now();
    return this.members.map((m) => ({
      key: m.key,
      address: m.address,
      port: m.origin.port,
      ports: m.origin.ports,
      weight: m.weight,
      healthy: m.health?.healthy ?? true,
      ejectedPorts: m.ports.ejected(now).map((e) => e.port),
    }));
  }

  /** Reports about origin port `port` of the endpoint with this key (EndpointSpec.key), from another thread; undefined once it is gone. */
  member(key: string, port: number): Member | undefined {
    return this.members.find((m) => m.key === key)?.at(port);
  }

  /** Another thread's count of open connections to the endpoint with this key (the tcp engine's, src/engine/). */
  setActive(key: string, n: number): void {
    const m = this.members.find((x) => x.key === key);
    if (m) m.active = n;
  }

  /** Another thread sent `n` connections (flows) to the endpoint with this key in panic. */
  panics(key: string, n: number): void {
    const m = this.members.find((x) => x.key === key);
    if (m) this.panicked(m, n);
  }

  /** Call `fn` whenever the eligible endpoints may have changed (health, ejection, DNS). Returns the unsubscribe. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  snapshot(): OriginStatus[] {
    const now = Date.now();
    return this.groups.map((g) => {
      const endpoints = g.members.map((m): EndpointStatus => {
        const out = m.ports.ejected(now);
        const fixed = m.origin.port;
        return {
          address: m.address,
          // A port-following endpoint takes new connections on its other ports while some are ejected.
          up: fixed === undefined ? (m.health?.healthy ?? true) : m.eligible(now, fixed),
          healthy: m.health?.healthy ?? true,
          ...(fixed !== undefined && out.length ? { ejectedUntil: out[0]!.until } : {}),
          ...(fixed === undefined && out.length ? { ejectedPorts: out } : {}),
          ejections: m.ports.ejections,
          panics: m.panics,
          portStatesEvicted: m.ports.evicted,
          active: m.active,
          ...(m.lastCheck ? { lastCheck: m.lastCheck } : {}),
        };
      });
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
    if (why) this.logLimited(why);
    for (const fn of this.listeners) fn();
  }

  private panicked(m: PoolMember, n: number): void {
    m.panics += n;
    const now = Date.now();
    if (now - this.lastPanicLog < LOG_EVERY_MS) return;
    this.lastPanicLog = now;
    this.logLimited(`no endpoint eligible (all down or ejected): trying them anyway (panic), ${this.members.reduce((n, x) => n + x.panics, 0)} connection(s) so far`);
  }

  // Clients choose which ports fail (each closed port of a port-preserving
  // origin is ejected on its own), so ejection lines are rate limited: a
  // bucket of LOG_BURST lines refilled one per second; what is left out is
  // counted in the next line.
  private logLimited(line: string): void {
    const now = Date.now();
    this.logTokens = Math.min(LOG_BURST, this.logTokens + (now - this.logRefilled) / 1000);
    this.logRefilled = now;
    if (this.logTokens < 1) {
      this.logSuppressed++;
      return;
    }
    this.logTokens--;
    const more = this.logSuppressed ? ` (${this.logSuppressed} earlier lines left out)` : "";
    this.logSuppressed = 0;
    this.log(`${this.owner()}: ${line}${more}`);
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

  // Which port active checks probe: an origin's fixed port; else health.port
  // if set; else the first of the origin's port range, or of the service's
  // edge range for a port-preserving origin. A check speaks for the whole
  // endpoint (every port): pick a port the origin always serves.
  /** @internal The port active checks probe on an endpoint of origin `o`; undefined without checks. */
  checkPort(o: OriginConfig): number | undefined {
    const h = this.config.health;
    return h && (o.port ?? h.port ?? o.ports?.lo ?? this.options.edgeRange?.lo);
  }

  private startChecks(m: PoolMember): void {
    const h = this.config.health;
    const port = this.checkPort(m.origin);
    if (!h || port === undefined || m.checker) return;
    // With origin_tls a check does the handshake too, verified as live traffic's is: a port that
    // accepts but whose certificate is refused would fail every connection sent to it.
    const tls = this.tls && { options: this.tls.options(m.origin.host), verdict: this.tls };
    m.checker = new HealthChecker(this.options.kind ?? "tcp", { address: m.address, port, hostHeader: m.origin.host, ...(tls ? { tls } : {}) }, h, (r) => m.checked(r));
    m.checker.start();
  }
}
