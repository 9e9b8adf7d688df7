import type { SniSnapshot } from "../../admin/backend";
import { HELLO_ERRORS, type HelloError } from "./hello";

/** Why a connection went to the service's own origins: no server_name, a name no route has, not TLS at all. */
export type Unmatched = "no_sni" | "unknown_name" | "not_tls";
export const UNMATCHED: readonly Unmatched[] = ["no_sni", "unknown_name", "not_tls"];

/** One route's figures (and the service's own origins', as route "default"). */
export class SniRouteStats {
  connections = 0;
  bytesFromClients = 0;
  bytesFromOrigins = 0;
  constructor(
    /** "1".."N" in config order, or "default". */
    readonly route: string,
    /** The route's names joined with ","; "" for the default. */
    readonly names: string,
  ) {}
}

/** A tcp service's SNI routing counters (edgeproxy_sni_* in /metrics). */
export class SniStats {
  readonly unmatched: Record<Unmatched, number> = { no_sni: 0, unknown_name: 0, not_tls: 0 };
  readonly parseErrors = Object.fromEntries(HELLO_ERRORS.map((r) => [r, 0])) as Record<HelloError, number>;
  /** Unmatched connections reset because the service has no origins of its own. */
  noRoute = 0;

  constructor(readonly routes: readonly SniRouteStats[]) {}

  snapshot(): SniSnapshot {
    return {
      routes: this.routes.map((r) => ({ route: r.route, sni: r.names, connections: r.connections, bytesFromClients: r.bytesFromClients, bytesFromOrigins: r.bytesFromOrigins })),
      unmatched: { ...this.unmatched },
      parseErrors: { ...this.parseErrors },
      noRoute: this.noRoute,
    };
  }
}
