import type { ServiceConfig } from "../config/service";
import { ConfigError } from "../errors";
import type { Admission } from "../proxy/admission";
import type { CoarseClock } from "../proxy/clock";
import type { DataPlaneService } from "../proxy/service";
import { HttpService } from "../proxy/http/service";
import { TcpService } from "../proxy/tcp";
import { UdpPlane } from "../proxy/udp/plane";
import { UdpService } from "../proxy/udp/service";
import type { ResolvedOrigins } from "./bindings";

/** What services share in one process: the clock, the TCP connection cap, the UDP data plane. */
export class DataPlanes {
  private udp: UdpPlane | undefined;

  constructor(
    readonly clock: CoarseClock,
    readonly admission: Admission,
    /** The process's cap on UDP flows (0: none were budgeted at start). */
    readonly maxFlows: number,
  ) {}

  /** A service's data plane, not yet listening. TCP dials its origin by name per connection; UDP takes the first address resolved at start or reload. */
  create(cfg: ServiceConfig, origins: ResolvedOrigins): DataPlaneService {
    if (cfg.mode !== "udp") {
      if (this.admission.max < 1) {
        throw new ConfigError(`service ${cfg.name}`, "no file descriptors were set aside for TCP connections at startup; restart with max_connections (--max-connections) set");
      }
      if (cfg.mode === "http") return new HttpService(cfg, this.clock, this.admission, origins);
      return new TcpService(cfg, this.clock, this.admission);
    }
    if (this.maxFlows < 1) {
      throw new ConfigError(`service ${cfg.name}`, "no file descriptors were set aside for UDP flows at startup; restart with max_flows (--max-flows) set");
    }
    this.udp ??= new UdpPlane(this.maxFlows);
    const first = cfg.pool?.origins[0];
    const addr = first && origins.get(first.host)?.[0];
    const origin = first && addr ? { family: addr.length === 4 ? (4 as const) : (6 as const), addr, port: first.port ?? 0 } : undefined;
    return new UdpService(cfg, this.udp, origin);
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

