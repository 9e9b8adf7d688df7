// The UDP worker's copy of a service's pool: the endpoints, their health and
// ejected ports as the main thread last sent them (health checks and
// ejection run there), picked with the same balancing code and the same
// panic rule as the TCP data plane (origin/pool.ts).
import { formatAddress, parseAddress, type Family } from "../../config/address";
import type { Balance } from "../../config/pool";
import type { PortRange } from "../../config/ports";
import { choose, originPort, type Weighted } from "../../origin/balance";
import { Ejection, MAX_PORT_STATES } from "../../origin/eject";
import type { EjectConfig } from "../../config/pool";
import type { EndpointSpec } from "../../origin/pool";
import type { Endpoint } from "../../system/sockaddr";

/** What the worker is told about a service's origins. */
export interface UdpOrigins {
  readonly balance: Balance;
  readonly edgeRange?: PortRange;
  /** The endpoints now; replaced by an "origins" message whenever their health or ejected ports change. */
  readonly endpoints: readonly EndpointSpec[];
}

/** One endpoint in the worker; `active` counts its flows. */
export class WorkerEndpoint implements Weighted {
  current = 0;
  active = 0;
  /**
   * Origin ports with a refusal reported and no answer since: the next
   * answer from one is reported too (it resets the pool's count). Bounded
   * like the pool's per-port state; when full, it starts over (an answer
   * then goes unreported, and the pool's count resets at the next success).
   */
  readonly failing = new Set<number>();
  /** Flows opened in panic (nothing eligible), not yet told to the main thread. */
  panics = 0;
  readonly family: Family;
  readonly addr: Uint8Array;
  weight: number;
  spec: EndpointSpec;
  private ejected: ReadonlySet<number>;

  constructor(spec: EndpointSpec) {
    this.spec = spec;
    this.addr = parseAddress(spec.address)!;
    this.family = this.addr.length === 4 ? 4 : 6;
    this.weight = spec.weight;
    this.ejected = new Set(spec.ejectedPorts);
  }

  /** The main thread's new view of this endpoint. */
  set(spec: EndpointSpec): void {
    this.spec = spec;
    // The pool has heard every failure this thread reported before this view: it decides from here.
    this.local = undefined;
    this.weight = spec.weight;
    this.ejected = new Set(spec.ejectedPorts);
  }

  /** New flows to origin port `port` may come here. */
  eligible(port: number): boolean {
    return this.spec.healthy && !this.ejected.has(port) && !(this.local !== undefined && this.local.get(port)?.out(Date.now()));
  }

  /**
   * The tcp engine's own count of consecutive connect failures per port, by
   * the pool's rule (origin/eject.ts): the port is out here at the failure
   * that ejects it, not a message later, when the main thread's next view
   * (which replaces this) arrives.
   */
  private local: Map<number, Ejection> | undefined;

  /** A connect to origin port `port` failed on this thread. */
  connectFailed(port: number, cfg: EjectConfig): void {
    this.local ??= new Map();
    let e = this.local.get(port);
    if (!e) {
      if (this.local.size >= MAX_PORT_STATES) this.local.clear();
      this.local.set(port, (e = new Ejection()));
    }
    e.failed(Date.now(), cfg);
  }

  /** A connect to origin port `port` succeeded on this thread. */
  connected(port: number): void {
    this.local?.get(port)?.succeeded();
  }

  /** A refusal from origin `port` was reported. */
  refused(port: number): void {
    if (this.failing.size >= MAX_PORT_STATES) this.failing.clear();
    this.failing.add(port);
  }

  get key(): string {
    return this.spec.key;
  }
}

const always = () => true;

/** Flows opened in panic, per endpoint key, since the last call. */
export type PanicCounts = [key: string, flows: number][];

/** A service's endpoints in the worker and the choice among them. */
export class EndpointSet {
  private list: WorkerEndpoint[] = [];

  constructor(
    private readonly balance: Balance,
    private readonly edgeRange: PortRange | undefined,
    endpoints: readonly EndpointSpec[],
  ) {
    this.update(endpoints);
  }

  /** The main thread's new list: endpoints that stay keep their flow counts and round-robin state. */
  update(endpoints: readonly EndpointSpec[]): void {
    const old = new Map(this.list.map((e) => [e.key, e]));
    this.list = endpoints.map((s) => {
      const kept = old.get(s.key);
      if (!kept) return new WorkerEndpoint(s);
      kept.set(s);
      return kept;
    });
  }

  /**
   * The endpoint and origin address for a new flow from `client` (address
   * bytes) to edge port `dstPort`: an eligible endpoint, else (panic) any,
   * counted; undefined only when there is none at all.
   */
  pick(client: Uint8Array, dstPort: number): { endpoint: WorkerEndpoint; target: Endpoint } | undefined {
    // The same text as the TCP and HTTP planes hash, so one client reaches the same endpoint over each.
    const text = this.balance === "hash" ? formatAddress(client) : "";
    let e = choose(this.balance, this.list, (x) => x.eligible(originPort(x.spec, dstPort, this.edgeRange)), text);
    if (!e) {
      e = choose(this.balance, this.list, always, text);
      if (!e) return undefined;
      e.panics++;
    }
    return { endpoint: e, target: { family: e.family, addr: e.addr, port: originPort(e.spec, dstPort, this.edgeRange) } };
  }

  /** Open flows (tcp engine: connections) per endpoint key. */
  activeCounts(): [key: string, n: number][] {
    return this.list.map((e) => [e.key, e.active]);
  }

  /** Flows opened in panic since the last call, per endpoint key (for the main thread's counts); empty when none. */
  takePanics(): PanicCounts {
    const out: PanicCounts = [];
    for (const e of this.list) {
      if (e.panics === 0) continue;
      out.push([e.key, e.panics]);
      e.panics = 0;
    }
    return out;
  }
}
