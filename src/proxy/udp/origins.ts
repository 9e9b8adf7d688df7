// The UDP worker's copy of a service's pool: the eligible endpoints as the
// main thread last sent them (health checks and ejection run there), picked
// with the same balancing code as the TCP data plane.
import { formatAddress, parseAddress, type Family } from "../../config/address";
import type { Balance } from "../../config/pool";
import type { PortRange } from "../../config/ports";
import { choose, originPort, type Weighted } from "../../origin/balance";
import type { EndpointSpec } from "../../origin/pool";
import type { Endpoint } from "../../system/sockaddr";

/** What the worker is told about a service's origins. */
export interface UdpOrigins {
  readonly balance: Balance;
  readonly edgeRange?: PortRange;
  /** The eligible endpoints now; replaced by an "origins" message whenever that changes. */
  readonly endpoints: readonly EndpointSpec[];
}

/** One endpoint in the worker; `active` counts its flows. */
export class WorkerEndpoint implements Weighted {
  current = 0;
  active = 0;
  /** A refusal was reported and no answer since: the next answer is reported too (it resets the pool's count). */
  failing = false;
  readonly family: Family;
  readonly addr: Uint8Array;
  weight: number;

  constructor(readonly spec: EndpointSpec) {
    this.addr = parseAddress(spec.address)!;
    this.family = this.addr.length === 4 ? 4 : 6;
    this.weight = spec.weight;
  }

  get key(): string {
    return this.spec.key;
  }
}

const always = () => true;

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
      kept.weight = s.weight;
      return kept;
    });
  }

  /** The endpoint and origin address for a new flow from `client` (address bytes) to edge port `dstPort`. */
  pick(client: Uint8Array, dstPort: number): { endpoint: WorkerEndpoint; target: Endpoint } | undefined {
    // The same text as the TCP and HTTP planes hash, so one client reaches the same endpoint over each.
    const e = choose(this.balance, this.list, always, this.balance === "hash" ? formatAddress(client) : "");
    if (!e) return undefined;
    return { endpoint: e, target: { family: e.family, addr: e.addr, port: originPort(e.spec, dstPort, this.edgeRange) } };
  }
}
