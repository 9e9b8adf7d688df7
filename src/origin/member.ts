// One endpoint of a pool (an address of an origin) and what the data plane
// reports about its ports: connections open, connects failed and succeeded.
import { parseAddress } from "../config/address";
import { formatOrigin, type OriginConfig, type PoolConfig } from "../config/pool";
import type { Weighted } from "./balance";
import { PortEjections } from "./eject";
import { HealthState, type HealthChecker, type ProbeResult } from "./health";

/** What failed when talking to an origin, for passive ejection and metrics. */
export type OriginFailure = "refused" | "timeout" | "unreachable" | "reset" | "tls" | "other";

/** One endpoint port of a pool as the data plane sees it: tell it how its connections go. */
export interface Member {
  readonly origin: OriginConfig;
  /** The IP literal this endpoint is. */
  readonly address: string;
  /** The origin port these reports are about. */
  readonly port: number;
  /** A connection (request, flow) to it began: least-connections counts these. */
  acquired(): void;
  /** ...and ended. */
  released(): void;
  /** A connect to it failed (passive ejection counts consecutive ones, per port). */
  failed(kind: OriginFailure): void;
  /** A connect to it succeeded. */
  succeeded(): void;
}

/** What an endpoint needs of its pool. */
export interface MemberOwner {
  readonly config: PoolConfig;
  /** An endpoint's eligibility changed: log why (if given) and tell the listeners. */
  changed(why: string | undefined): void;
  /** The port active checks probe on an endpoint of `o`; undefined without checks. */
  checkPort(o: OriginConfig): number | undefined;
}

/** Reports about one port of an endpoint. */
export class PortMember implements Member {
  constructor(
    private readonly m: PoolMember,
    readonly port: number,
  ) {}
  get origin(): OriginConfig {
    return this.m.origin;
  }
  get address(): string {
    return this.m.address;
  }
  acquired(): void {
    this.m.active++;
  }
  released(): void {
    this.m.active--;
  }
  failed(kind: OriginFailure): void {
    this.m.failed(this.port, kind);
  }
  succeeded(): void {
    this.m.ports.succeeded(this.port, Date.now());
  }
}

/**
 * One endpoint: an address of one configured origin, with its active-check
 * state (for the whole endpoint), its ports' ejection state and its counts.
 */
export class PoolMember implements Weighted {
  readonly key: string;
  weight: number;
  current = 0;
  active = 0;
  panics = 0;
  readonly health: HealthState | undefined;
  readonly ports: PortEjections;
  checker: HealthChecker | undefined;
  lastCheck: string | undefined;
  private ejectTimer: ReturnType<typeof setTimeout> | undefined;
  // An origin with a fixed port reports through one object, made once.
  private readonly fixed: PortMember | undefined;

  constructor(
    private readonly pool: MemberOwner,
    readonly origin: OriginConfig,
    readonly address: string,
    weight: number,
  ) {
    this.key = `${address}|${origin.port ?? ""}|${origin.ports ? `${origin.ports.lo}-${origin.ports.hi}` : ""}`;
    this.weight = weight;
    this.health = pool.config.health && new HealthState(pool.config.health);
    this.ports = new PortEjections(pool.config.eject);
    this.fixed = origin.port === undefined ? undefined : new PortMember(this, origin.port);
  }

  /** New connections to origin port `port` may come here. */
  eligible(now: number, port: number): boolean {
    return (this.health?.healthy ?? true) && !this.ports.out(port, now);
  }

  /** The reports object for origin port `port`. */
  at(port: number): PortMember {
    return this.fixed ?? new PortMember(this, port);
  }

  failed(port: number, kind: OriginFailure): void {
    const now = Date.now();
    const ms = this.ports.failed(port, now);
    if (ms === 0) return;
    // With active checks, the port they probe comes back only once they pass
    // again (they speak for the whole endpoint); other ports when their time ends.
    if (port === this.pool.checkPort(this.origin)) this.health?.markDown();
    this.pool.changed(`${this.describe(port)} ejected for ${ms}ms after ${this.pool.config.eject.failures} failed connects (last: ${kind})`);
    this.wakeAtNextEnd(now);
  }

  // One timer per endpoint, at the earliest end of its ports' ejections, so
  // that listeners (the UDP worker's copy) hear when a port is back.
  private wakeAtNextEnd(now: number): void {
    clearTimeout(this.ejectTimer);
    const next = this.ports.nextEnd(now);
    if (next === undefined) return;
    this.ejectTimer = setTimeout(() => {
      const t = Date.now();
      this.pool.changed(this.health?.healthy === false ? undefined : `${this.describe()} ${this.fixed ? "back" : "port(s) back"} after ejection`);
      this.wakeAtNextEnd(t);
    }, next - now);
    this.ejectTimer.unref?.();
  }

  checked(r: ProbeResult): void {
    this.lastCheck = `${r.pass ? "pass" : r.local ? "skipped" : "fail"}: ${r.detail}`;
    // A check this host could not make (out of ports or descriptors) moves the origin neither way.
    if (r.local || !this.health?.record(r.pass)) return;
    const up = this.health.healthy;
    this.pool.changed(`${this.describe()} ${up ? "up" : "down"}: check ${r.pass ? "passed" : `failed (${r.detail})`}`);
  }

  describe(port?: number): string {
    const o = formatOrigin({ ...this.origin, weight: 1 });
    const where = parseAddress(this.origin.host) ? `origin ${o}` : `origin ${o} at ${this.address}`;
    return port === undefined || this.fixed ? where : `${where} port ${port}`;
  }

  stop(): void {
    this.checker?.stop();
    clearTimeout(this.ejectTimer);
  }
}
