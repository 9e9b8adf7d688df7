import type { ServiceConfig } from "../config/service";
import { ConfigError } from "../errors";
import type { Admission } from "../proxy/admission";
import type { CoarseClock } from "../proxy/clock";
import type { DataPlaneService } from "../proxy/service";
import { TcpService } from "../proxy/tcp";
import { UdpPlane } from "../proxy/udp/plane";
import { resolveOrigin, UdpService } from "../proxy/udp/service";
import type { Endpoint } from "../system/sockaddr";

/** What services share in one process: the clock, the TCP connection cap, the UDP data plane. */
export class DataPlanes {
  private udp: UdpPlane | undefined;

  constructor(
    readonly clock: CoarseClock,
    readonly admission: Admission,
    /** The process's cap on UDP flows (0: none were budgeted at start). */
    readonly maxFlows: number,
  ) {}

  /** A service's data plane, not yet listening. */
  create(cfg: ServiceConfig, origins: Map<string, Endpoint>): DataPlaneService {
    if (cfg.mode !== "udp") return new TcpService(cfg, this.clock, this.admission);
    if (this.maxFlows < 1) {
      throw new ConfigError(`service ${cfg.name}`, "no file descriptors were set aside for UDP flows at startup; restart with max_flows (--max-flows) set");
    }
    this.udp ??= new UdpPlane(this.maxFlows);
    return new UdpService(cfg, this.udp, origins.get(cfg.name));
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

/** Resolve the origins of UDP services, by service name (TCP resolves per connection). Call before the pin lock: it awaits DNS. */
export async function resolveUdpOrigins(services: readonly ServiceConfig[]): Promise<Map<string, Endpoint>> {
  const out = new Map<string, Endpoint>();
  for (const s of services) if (s.mode === "udp" && s.origin) out.set(s.name, await resolveOrigin(s.origin, `service ${s.name}: origin`));
  return out;
}
