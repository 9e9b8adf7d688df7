import type { SniRouteConfig } from "../../config/pool";
import { ServerNames } from "../tls/names";

/*
 * Which route a server name goes to, by the same rule a certificate's names
 * match (tls/names.ts: exact names first, then a one-label wildcard, RFC 6125
 * §6.4.3). Config validation makes every name unique across routes, so the
 * order of routes does not matter.
 */
export class SniRouter<R> {
  private readonly names = new ServerNames<R>();

  constructor(routes: readonly SniRouteConfig[], running: (r: SniRouteConfig, index: number) => R) {
    routes.forEach((r, i) => {
      const route = running(r, i);
      for (const name of r.names) this.names.add(name, route);
    });
  }

  /** The route for `name`, or undefined (the service's own origins). */
  match(name: string): R | undefined {
    return this.names.match(name)?.value;
  }
}
