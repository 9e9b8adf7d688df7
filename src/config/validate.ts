import { ConfigError } from "../errors";
import { formatPorts } from "./ports";
import { poolsOf } from "./pool";
import type { ServiceConfig } from "./service";

/**
 * Checks that span several fields of one service, shared by the command line
 * and the config file. `at(key)` names a field in messages.
 */
export function checkService(s: ServiceConfig, at: (key: string) => string): void {
  if (s.mode === "udp" && s.acceptProxy.length) throw new ConfigError(at("accept_proxy"), "PROXY headers are accepted on tcp and http services only");
  // Routing by SNI reads the ClientHello and forwards it: the origin, not edgeproxy, completes the handshake.
  if (s.sniRoutes && s.tls) throw new ConfigError(at("route"), "sni routes pass TLS through to their origins; they cannot be combined with tls_cert/tls_key (TLS termination)");
  // The client's own TLS goes through unread: wrapping it in a second TLS session to the origin is not what sni routing is for.
  if (s.sniRoutes && s.pool?.tls) throw new ConfigError(at("origin_tls"), "sni routes pass the client's TLS through to the origins; origin_tls cannot be combined with them");
  const ranged = poolsOf(s).flatMap((p) => p.origins).filter((o) => o.ports);
  if (ranged.length === 0) return;
  // Spectrum's port-range mapping: edge LO-HI to origin LO'-HI' by offset, so
  // the edge side must be one range, the same in every binding.
  const edge = [...new Set(s.bindings.flatMap((b) => b.ports.map(formatPorts)))];
  const key = s.pool?.origins.some((o) => o.ports) ? "origins" : "route";
  if (edge.length !== 1) {
    throw new ConfigError(at(key), `an origin port range maps one edge port range by offset, but the service binds ${edge.join(", ")}; bind one range or give the origin one port`);
  }
  const { lo, hi } = s.bindings[0]!.ports[0]!;
  for (const o of ranged) {
    if (o.ports!.hi - o.ports!.lo !== hi - lo) {
      throw new ConfigError(at(key), `origin ports ${o.ports!.lo}-${o.ports!.hi} (${o.ports!.hi - o.ports!.lo + 1}) and edge ports ${lo}-${hi} (${hi - lo + 1}) differ in size`);
    }
  }
}
