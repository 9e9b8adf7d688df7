import type { SniRouteConfig } from "../../config/pool";

/*
 * Which route a server name goes to: exact names first, then wildcards,
 * where "*.b.example" matches exactly one label more ("x.b.example", not
 * "b.example" nor "y.x.b.example"), as a certificate's wildcard does
 * (RFC 6125 §6.4.3). Names are compared as the parser gives them: lower
 * case, no trailing dot. Config validation makes every name unique across
 * routes, so the order of routes does not matter.
 */
export class SniRouter<R> {
  private readonly exact = new Map<string, R>();
  /** By the part after "*.". */
  private readonly wildcard = new Map<string, R>();

  constructor(routes: readonly SniRouteConfig[], running: (r: SniRouteConfig, index: number) => R) {
    routes.forEach((r, i) => {
      const route = running(r, i);
      for (const name of r.names) {
        if (name.startsWith("*.")) this.wildcard.set(name.slice(2), route);
        else this.exact.set(name, route);
      }
    });
  }

  /** The route for `name`, or undefined (the service's own origins). */
  match(name: string): R | undefined {
    const exact = this.exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf(".");
    return dot > 0 ? this.wildcard.get(name.slice(dot + 1)) : undefined;
  }
}
