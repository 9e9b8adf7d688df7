import { describe, expect, test } from "bun:test";
import type { PoolConfig, RouteConfig } from "../../config/pool";
import { POOL_DEFAULTS } from "../../config/pool";
import { HttpRouter } from "./router";

const pool = (name: string): PoolConfig => ({ origins: [{ host: name, port: 80, weight: 1 }], balance: "round-robin", eject: POOL_DEFAULTS.eject });
const A = pool("a");
const API = pool("api");
const A8080 = pool("a8080");
const ANY_API = pool("any-api");
const CATCH = pool("catch");
// Most specific first, as the config parser orders them.
const routes: RouteConfig[] = [
  { host: "a.example:8080", path: "/", pool: A8080 },
  { host: "a.example", path: "/api", pool: API },
  { host: "a.example", path: "/", pool: A },
  { path: "/api/v2", pool: undefined },
  { path: "/api", pool: ANY_API },
];

describe("routing by host and path prefix", () => {
  const r = new HttpRouter(routes, CATCH);
  const to = (host: string | undefined, port: number, path: string) => r.match(host, port, path).pool;
  test("host with port matches only that port; without, any port; case-insensitive", () => {
    expect(to("a.example:8080", 8080, "/api")).toBe(A8080);
    expect(to("A.Example:8080", 80, "/x")).toBe(A8080);
    expect(to("a.example:9090", 9090, "/x")).toBe(A);
    expect(to("A.EXAMPLE", 8080, "/x")).toBe(A8080); // no port in Host: the port dialled
    expect(to("a.example.", 80, "/x")).toBe(A);
  });
  test("path prefixes match whole segments, longest first", () => {
    expect(to("a.example", 80, "/api")).toBe(API);
    expect(to("a.example", 80, "/api/x/y")).toBe(API);
    expect(to("a.example", 80, "/apix")).toBe(A);
    expect(to("b.example", 80, "/api/v2/x")).toBeUndefined(); // a route without a pool: the responder
    expect(r.match("b.example", 80, "/api/v2/x").index).toBe(3);
    expect(to("b.example", 80, "/api/v22")).toBe(ANY_API);
    expect(to("b.example", 80, "/apix")).toBe(CATCH);
    expect(to(undefined, 80, "/")).toBe(CATCH);
  });
  test("no routes: everything to the service's pool", () => {
    expect(new HttpRouter([], CATCH).match("x", 1, "/y").pool).toBe(CATCH);
  });
  test("byPort: only routes naming a port make the edge port matter", () => {
    expect(r.byPort).toBe(true);
    expect(new HttpRouter([], CATCH).byPort).toBe(false);
    expect(new HttpRouter([{ host: "a.example", path: "/" }, { host: "[2001:db8::1]", path: "/x" }] as never, CATCH).byPort).toBe(false);
    expect(new HttpRouter([{ host: "[2001:db8::1]:8080", path: "/" }] as never, CATCH).byPort).toBe(true);
  });
});
