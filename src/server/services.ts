import type { ServiceConfig } from "../config/service";
import { EngineHttpService } from "../engine/httpservice";
import { EngineTcpService } from "../engine/service";
import { ConfigError } from "../errors";
import type { Admission } from "../proxy/admission";
import type { CoarseClock } from "../proxy/clock";
import type { DataPlaneService } from "../proxy/service";
import { HttpService } from "../proxy/http/service";
import { TcpService } from "../proxy/tcp";
import { UdpPlane } from "../proxy/udp/plane";
import { UdpService } from "../proxy/udp/service";
import { OriginPool } from "../origin/pool";
import type { PortRange } from "../config/ports";
import type { ResolvedOrigins } from "./bindings";
import type { SourceLimit } from "../proxy/sourcelimit";
import { ClientTracker, mergeClients, type ClientsSnapshot } from "../proxy/clients";

/**
 * The edge range origins given as port ranges map into: the service's lowest
 * bound range (config validation makes it the only one when an origin has a
 * range); also the port a port-preserving origin's health checks use.
 */
export function edgeRangeOf(cfg: ServiceConfig): PortRange | undefined {
  return cfg.bindings.flatMap((b) => b.ports).sort((a, b) => a.lo - b.lo)[0];
}

/** What services share in one process: the clock, the TCP connection cap, the UDP data plane. */
export class DataPlanes {
  private udp: UdpPlane | undefined;
  /** The busiest client addresses of this process's tcp and http services on Bun's sockets (the engine's are merged in by clientsSnapshot; udp flows are not counted). */
  readonly clients: ClientTracker;

  constructor(
    readonly clock: CoarseClock,
    readonly admission: Admission,
    /** The process's cap on UDP flows (0: none were budgeted at start). */
    readonly maxFlows: number,
  ) {
    this.clients = new ClientTracker(clock);
  }

  /**
   * A service's data plane, not yet listening, with its origin pool (seeded
   * with the addresses resolved at start or reload; it starts checking and
   * re-resolving when the service listens, and closes with it).
   */
  create(cfg: ServiceConfig, origins: ResolvedOrigins, sourceLimit?: SourceLimit): DataPlaneService {
    if (cfg.mode !== "udp" && this.admission.max < 1) {
      throw new ConfigError(`service ${cfg.name}`, "no file descriptors were set aside for TCP connections at startup; restart with max_connections (--max-connections) set");
    }
    // http: a pool per route, made by the service.
    if (cfg.mode === "http" && cfg.engine === "epoll") return new EngineHttpService(cfg, this.dataPlane(), this.admission, { edgeRange: edgeRangeOf(cfg), resolved: origins }, sourceLimit);
    if (cfg.mode === "http") return new HttpService(cfg, this.clock, this.admission, { edgeRange: edgeRangeOf(cfg), resolved: origins }, sourceLimit, this.clients);
    const pool = cfg.pool && new OriginPool(cfg.pool, { edgeRange: edgeRangeOf(cfg), resolved: origins, kind: cfg.mode, owner: `service ${cfg.name}` });
    if (cfg.mode === "tcp" && pool && cfg.engine === "epoll") return new EngineTcpService(cfg, this.dataPlane(), this.admission, pool, sourceLimit);
    if (cfg.mode === "tcp") {
      const routes = (cfg.sniRoutes ?? []).map((r, i) => new OriginPool(r.pool, { edgeRange: edgeRangeOf(cfg), resolved: origins, kind: "tcp", owner: `service ${cfg.name} route ${i + 1} (${r.names.join(", ")})` }));
      return new TcpService(cfg, this.clock, this.admission, pool, sourceLimit, routes, this.clients);
    }
    if (this.maxFlows < 1) {
      throw new ConfigError(`service ${cfg.name}`, "no file descriptors were set aside for UDP flows at startup; restart with max_flows (--max-flows) set");
    }
    return new UdpService(cfg, this.dataPlane(), pool, sourceLimit);
  }

  /** The process's data plane thread: UDP services and tcp services on the engine share its one epoll loop. */
  private dataPlane(): UdpPlane {
    return (this.udp ??= new UdpPlane(this.maxFlows));
  }

  /** The process's busiest clients: Bun's sockets' and the engine's (which counts on the data plane's thread). */
  clientsSnapshot(rows: number): ClientsSnapshot {
    return mergeClients([this.clients.snapshot(rows), this.udp?.engineClients, this.udp?.engineHttpClients], rows)!;
  }

  /** Resolves when the data plane's thread has posted its latest counters (or soon if it does not answer): before a final summary. */
  async sync(): Promise<void> {
    await this.udp?.sync();
  }

  /** Resolves when every data plane runs (the UDP worker has started); rejects if one failed to. */
  async started(): Promise<void> {
    await this.udp?.started;
  }

  close(): void {
    this.udp?.close();
    this.clock.close();
  }
}

