import { METHOD_NAME_ALL } from "hono/router";
import { RegExpRouter } from "hono/router/reg-exp-router";
import type { PoolConfig, RouteConfig } from "../../config/pool";

/*
 * Request routing: Host (with or without port) first, then the longest path
 * prefix in whole segments.
 *
 * Hono's router is used on its own, not through a Hono app: an app routes
 * Request objects, and building one per request (URL parsing, a Headers
 * object) is the cost this data plane exists to avoid. RegExpRouter
 * compiles every path of a host into one regular expression, so a lookup is
 * one exec whatever the number of routes.
 */

/** Where a request goes: a pool (as the service runs it, `P`), or (pool undefined) the built-in responder. */
export interface Route<P> {
  /** Index in the service's routes; the catch-all is routes.length. */
  readonly index: number;
  readonly pool: P | undefined;
}

/** Routes to pools; `running` turns a configured pool into what requests are sent through (the service's OriginPool). */
export class HttpRouter<P = PoolConfig> {
  // Keys: "host:port" for routes with a port, "host" for the rest; "" for any host.
  private readonly byHost = new Map<string, RegExpRouter<Route<P>>>();
  private readonly catchAll: Route<P>;
  /** Some route names a port: match() needs the edge port (else any value does). */
  readonly byPort: boolean;

  constructor(routes: readonly RouteConfig[], catchAllPool: PoolConfig | undefined, running: (p: PoolConfig) => P = (p) => p as P) {
    const runningOf = (p: PoolConfig | undefined) => (p ? running(p) : undefined);
    this.catchAll = { index: routes.length, pool: runningOf(catchAllPool) };
    const grouped = new Map<string, Route<P>[]>();
    const paths = new Map<Route<P>, string>();
    routes.forEach((r, index) => {
      const key = r.host?.toLowerCase() ?? "";
      const route = { index, pool: runningOf(r.pool) };
      paths.set(route, r.path);
      grouped.set(key, [...(grouped.get(key) ?? []), route]);
    });
    for (const [key, list] of grouped) {
      const m = new RegExpRouter<Route<P>>();
      for (const route of list) {
        const path = paths.get(route)!.replace(/\/+$/, "");
        // Whole segments: "/api" is "/api" itself and anything under "/api/".
        if (path) m.add(METHOD_NAME_ALL, escapePath(path), route);
        m.add(METHOD_NAME_ALL, `${escapePath(path)}/*`, route);
      }
      this.byHost.set(key, m);
    }
    this.byPort = [...this.byHost.keys()].some((k) => /:\d+$/.test(k));
  }

  /**
   * The route for `host` (the Host field, as sent; undefined for none), the
   * port the client dialled and `path` (the target without its query).
   */
  match(host: string | undefined, edgePort: number, path: string): Route<P> {
    if (this.byHost.size === 0) return this.catchAll;
    let name = "";
    let port = edgePort;
    if (host) {
      name = host.toLowerCase();
      // "[v6]:port", "name:port", "name"
      const colon = name.lastIndexOf(":");
      if (colon > name.lastIndexOf("]")) {
        port = Number(name.slice(colon + 1)) || edgePort;
        name = name.slice(0, colon);
      }
      if (name.endsWith(".")) name = name.slice(0, -1);
    }
    if (name) {
      const r = this.lookup(`${name}:${port}`, path) ?? this.lookup(name, path);
      if (r) return r;
    }
    return this.lookup("", path) ?? this.catchAll;
  }

  private lookup(key: string, path: string): Route<P> | undefined {
    const m = this.byHost.get(key);
    if (!m) return undefined;
    const found = m.match(METHOD_NAME_ALL, path)[0];
    if (found.length === 0) return undefined;
    // Several prefixes can match ("/" and "/api"): the configured order is most specific first.
    let best = found[0]![0];
    for (let i = 1; i < found.length; i++) if (found[i]![0].index < best.index) best = found[i]![0];
    return best;
  }
}

// Route paths are literal: characters Hono's path syntax gives meaning to are not allowed through.
function escapePath(p: string): string {
  if (/[:*{}()?]/.test(p)) throw new Error(`route path "${p}" contains a pattern character`);
  return p;
}
