// A route's pool as an http service on the engine sees it: the endpoints the
// main thread last sent (health checks, DNS and ejection decisions stay there
// with the OriginPool), picked with the same balancing code and panic rule
// (EndpointSet), and reports back of every connect that failed or succeeded
// (the pool's passive ejection), as the tcp engine does (dial.ts).
import { parseAddress, formatAddress } from "../config/address";
import type { EjectConfig, OriginConfig } from "../config/pool";
import type { Member, OriginFailure } from "../origin/member";
import type { Pick } from "../origin/pool";
import type { RoutePool } from "../proxy/http/context";
import { EndpointSet, type UdpOrigins, type WorkerEndpoint } from "../proxy/udp/origins";

const NO_ADDRESS = new Uint8Array(0);
const MAX_MEMBERS = 4096;

/** What a pool's member reports are told to (the main thread's pool.member(key, port)). */
export type OriginReport = (key: string, port: number, failure: OriginFailure | undefined) => void;

class EngineMember implements Member {
  constructor(
    private readonly pool: EnginePool,
    private readonly endpoint: WorkerEndpoint,
    readonly port: number,
    readonly address: string,
  ) {}

  /** Read only with origin_tls, which the engine refuses (config/service.ts epollUnsupported). */
  get origin(): OriginConfig {
    throw new Error("origin config is not on the engine's thread");
  }

  acquired(): void {
    this.endpoint.active++;
  }

  released(): void {
    this.endpoint.active--;
  }

  failed(kind: OriginFailure): void {
    this.endpoint.refused(this.port);
    this.endpoint.connectFailed(this.port, this.pool.eject);
    this.pool.report(this.endpoint.key, this.port, kind);
  }

  succeeded(): void {
    this.endpoint.connected(this.port);
    if (this.endpoint.failing.delete(this.port)) this.pool.report(this.endpoint.key, this.port, undefined);
  }
}

export class EnginePool implements RoutePool {
  /** The engine refuses origin_tls. */
  readonly tls = undefined;
  readonly endpoints: EndpointSet;
  private readonly hash: boolean;
  /**
   * The member per endpoint and origin port, made once (a pick per request
   * must not format an address): bounded, cleared when full (port-preserving
   * origins have a port per edge port).
   */
  private readonly members = new Map<WorkerEndpoint, Map<number, EngineMember>>();
  private memberCount = 0;

  constructor(
    origins: UdpOrigins,
    readonly followsEdgePort: boolean,
    readonly eject: EjectConfig,
    readonly report: OriginReport,
  ) {
    this.endpoints = new EndpointSet(origins.balance, origins.edgeRange, origins.endpoints);
    this.hash = origins.balance === "hash";
  }

  /** The main thread's new view of the endpoints (members of endpoints gone are dropped). */
  update(endpoints: UdpOrigins["endpoints"]): void {
    this.endpoints.update(endpoints);
    this.members.clear();
    this.memberCount = 0;
  }

  pick(client: string, edgePort: number): Pick | undefined {
    const chosen = this.endpoints.pick(this.hash ? (parseAddress(client) ?? NO_ADDRESS) : NO_ADDRESS, edgePort);
    if (!chosen) return undefined;
    const { endpoint, target } = chosen;
    let ports = this.members.get(endpoint);
    let member = ports?.get(target.port);
    if (!member) {
      if (this.memberCount >= MAX_MEMBERS) {
        this.members.clear();
        this.memberCount = 0;
      }
      if (!ports || !this.members.has(endpoint)) this.members.set(endpoint, (ports = new Map()));
      ports.set(target.port, (member = new EngineMember(this, endpoint, target.port, formatAddress(endpoint.addr))));
      this.memberCount++;
    }
    return { host: member.address, port: target.port, member };
  }
}
