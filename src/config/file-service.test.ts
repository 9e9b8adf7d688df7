// A service's keys in the config file: pools, routes, http, TLS, the engine, client deadlines.
import { testPem } from "./tls-fixture";
import { DEADLINE_DEFAULTS } from "./deadlines";
import { describe, expect, test } from "bun:test";
import { parseArgs } from "../cli/args";
import { parseConfig } from "./file";
import { FILE, error, web } from "./file-fixture";

describe("pools, routes, http and TLS", () => {
  const pem = testPem();
  const PEM = { "/tls/cert.pem": pem.cert, "/tls/key.pem": pem.key } as Record<string, string>;
  const read = (path: string) => {
    if (PEM[path] === undefined) throw Object.assign(new Error("no"), { code: "ENOENT" });
    return PEM[path]!;
  };

  test("a pool with weights, balance, health and eject", () => {
    const text = web(undefined, 'origins = ["10.0.0.1:80", "10.0.0.2:80 weight=3"]\nbalance = "least-connections"\n[service.health]\ninterval = "2s"\nfall = 2\n[service.eject]\nfailures = 5\nduration = "1m"');
    expect(parseConfig(text, FILE).services[0]!.pool).toEqual({
      origins: [{ host: "10.0.0.1", port: 80, weight: 1 }, { host: "10.0.0.2", port: 80, weight: 3 }],
      balance: "least-connections",
      health: { intervalMs: 2000, timeoutMs: 2000, rise: 2, fall: 2, path: "/" },
      eject: { failures: 5, durationMs: 60_000, baseMs: 1_000 },
    });
  });

  test("eject.base_duration and health.port; without base_duration the first ejection is 1s or the maximum if shorter", () => {
    const pool = (extra: string) => parseConfig(web(undefined, `origin = "10.0.0.1"\n${extra}`), FILE).services[0]!.pool!;
    expect(pool('[service.eject]\nbase_duration = "250ms"\nduration = "10s"').eject).toEqual({ failures: 3, durationMs: 10_000, baseMs: 250 });
    expect(pool('[service.eject]\nduration = "500ms"').eject).toEqual({ failures: 3, durationMs: 500, baseMs: 500 });
    expect(pool("").eject).toEqual({ failures: 3, durationMs: 30_000, baseMs: 1_000 });
    expect(pool("[service.health]\nport = 7001").health!.port).toBe(7001);
  });

  test("http routes, most specific first, limits, TLS", () => {
    const text =
      web('prefixes = "192.0.2.0/24"\nports = [80, 443]', 'mode = "http"\norigin = "10.0.0.9:80"\nmax_body_size = "10MiB"\nfirst_byte_timeout = "5s"\ntls_cert = "/tls/cert.pem"\ntls_key = "/tls/key.pem"') +
      '[[service.route]]\npath = "/api/"\norigin = "10.0.0.1:80"\n' +
      '[[service.route]]\nhost = "Shop.Example"\norigins = ["10.0.0.2:80", "10.0.0.3:80"]\n[service.route.health]\npath = "/up"\n' +
      '[[service.route]]\nhost = "shop.example.:443"\npath = "/static"\n';
    const s = parseConfig(text, FILE, { readFile: read }).services[0]!;
    expect(s.http!.routes.map((r) => [r.host, r.path, r.pool?.origins.length])).toEqual([
      ["shop.example:443", "/static", undefined],
      ["shop.example", "/", 2],
      [undefined, "/api", 1],
    ]);
    expect(s.http!.routes[1]!.pool!.health!.path).toBe("/up");
    expect(s.http!.maxBodyBytes).toBe(10 * 1024 * 1024);
    expect(s.http!.firstByteTimeoutMs).toBe(5000);
    expect(s.tls!.certificates[0]!.cert).toContain("BEGIN CERTIFICATE");
    expect([s.http!.http2, s.http!.http2MaxConcurrentStreams]).toEqual([true, 100]);
  });

  test("http2 and http2_max_concurrent_streams: set, and bad values named", () => {
    const http = (keys: string) => parseConfig(web(undefined, `mode = "http"\n${keys}`), FILE).services[0]!.http!;
    expect(http("http2 = false\nhttp2_max_concurrent_streams = 7")).toMatchObject({ http2: false, http2MaxConcurrentStreams: 7 });
    expect(() => http('http2 = "yes"')).toThrow(/http2: .*true or false/);
    expect(() => http("http2_max_concurrent_streams = 0")).toThrow(/http2_max_concurrent_streams/);
    expect(() => http("http2_max_concurrent_streams = 5000")).toThrow(/http2_max_concurrent_streams/);
    expect(() => parseConfig(web(undefined, "http2 = false"), FILE)).toThrow(/http2: is for http services/);
  });

  test("engine: auto (the default) is epoll wherever the engine serves the service, else bun; $EDGEPROXY_ENGINE=bun is the escape hatch; an explicit epoll it cannot serve is one line", () => {
    const saved = process.env.EDGEPROXY_ENGINE;
    const engine = (service: string, extra = "") => parseConfig(web(undefined, service) + extra, FILE, { readFile: read }).services[0]!.engine;
    const tls = 'tls_cert = "/tls/cert.pem"\ntls_key = "/tls/key.pem"';
    try {
      delete process.env.EDGEPROXY_ENGINE;
      expect(engine('origin = "10.0.0.1:80"')).toBe("epoll");
      expect(engine('origin = "10.0.0.1:80"\nengine = "auto"')).toBe("epoll");
      expect(engine('origin = "10.0.0.1:80"\nengine = "bun"')).toBe("bun");
      expect(engine('origin = "10.0.0.1:80"\nengine = "epoll"')).toBe("epoll");
      // What the engine does not serve stays on Bun's sockets without a word.
      expect(engine("")).toBe("bun"); // the built-in responder
      expect(engine(`origin = "10.0.0.1:443"\n${tls}`)).toBe("bun");
      expect(engine('origin = "10.0.0.1:443"\norigin_tls = "insecure"')).toBe("bun");
      expect(engine('origin = "10.0.0.9:443"', '[[service.route]]\nsni = "a.example"\norigin = "10.0.0.1:443"\n')).toBe("bun");
      // http: plain HTTP/1.1 to origins on the engine too (TLS and HTTP/2 stay on Bun's sockets); udp has one data plane.
      expect(engine('mode = "http"\norigin = "10.0.0.1:80"')).toBe(process.env.EDGEPROXY_ENGINE === "bun" ? "bun" : "epoll");
      expect(engine('mode = "http"\norigin = "10.0.0.1:80"\nengine = "epoll"')).toBe("epoll");
      expect(parseConfig(web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 53', 'mode = "udp"\norigin = "10.0.0.1:53"'), FILE).services[0]!.engine).toBeUndefined();
      expect(error(web(undefined, `origin = "10.0.0.1:443"\nengine = "epoll"\n${tls}`), read)).toBe('edgeproxy.toml: service "web": engine: "epoll" does not terminate TLS yet; use "auto" or "bun"');
      expect(error(web(undefined, `mode = "http"\norigin = "10.0.0.1:443"\nengine = "epoll"\n${tls}`), read)).toBe('edgeproxy.toml: service "web": engine: "epoll" does not terminate TLS (nor HTTP/2) on http services yet; use "auto" or "bun"');
      expect(error(web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 53', 'mode = "udp"\norigin = "10.0.0.1:53"\nengine = "epoll"'))).toBe('edgeproxy.toml: service "web": engine: "epoll" is for tcp and http services; a udp service has one data plane of its own: leave it out or say "auto"');
      expect(error(web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 53', 'mode = "udp"\norigin = "10.0.0.1:53"\nengine = "bun"'))).toBe('edgeproxy.toml: service "web": engine: "bun" is for tcp and http services; a udp service has one data plane of its own: leave it out or say "auto"');
      expect(parseConfig(web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 53', 'mode = "udp"\norigin = "10.0.0.1:53"\nengine = "auto"'), FILE).services[0]!.engine).toBeUndefined();
      expect(error(web(undefined, 'origin = "10.0.0.1:80"\nengine = "uring"'))).toBe('edgeproxy.toml: service "web": engine: "uring" is not one of auto, epoll, bun');
      // The flag completes the same way.
      const flag = (...more: string[]) => {
        const r = parseArgs(["--ports", "80", "--prefix", "192.0.2.0/24", ...more]);
        return r.kind === "serve" ? r.config.services[0]!.engine : r.kind;
      };
      expect(flag("--origin", "10.0.0.1:80")).toBe("epoll");
      expect(flag("--origin", "10.0.0.1:80", "--engine", "bun")).toBe("bun");
      expect(flag()).toBe("bun");
      expect(() => flag("--origin", "10.0.0.1:80", "--engine", "uring")).toThrow('--engine: "uring" is not one of auto, epoll, bun');
      // The process default: bun forces Bun's sockets; a service's own setting still wins.
      process.env.EDGEPROXY_ENGINE = "bun";
      expect(engine('origin = "10.0.0.1:80"')).toBe("bun");
      expect(engine('origin = "10.0.0.1:80"\nengine = "auto"')).toBe("bun");
      expect(engine('origin = "10.0.0.1:80"\nengine = "epoll"')).toBe("epoll");
      expect(flag("--origin", "10.0.0.1:80")).toBe("bun");
      process.env.EDGEPROXY_ENGINE = "epoll";
      expect(engine('origin = "10.0.0.1:80"')).toBe("epoll");
      expect(engine('mode = "http"\norigin = "10.0.0.1:80"')).toBe("epoll");
      expect(engine(`origin = "10.0.0.1:443"\n${tls}`)).toBe("bun");
      process.env.EDGEPROXY_ENGINE = "fast";
      expect(error(web(undefined, 'origin = "10.0.0.1:80"'))).toBe('$EDGEPROXY_ENGINE: "fast" is not one of auto, epoll, bun');
      // Also where no service would have used it: a udp service, a tcp one with its own engine.
      expect(error(web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 53', 'mode = "udp"\norigin = "10.0.0.1:53"'))).toBe('$EDGEPROXY_ENGINE: "fast" is not one of auto, epoll, bun');
      expect(error(web(undefined, 'origin = "10.0.0.1:80"\nengine = "bun"'))).toBe('$EDGEPROXY_ENGINE: "fast" is not one of auto, epoll, bun');
    } finally {
      if (saved === undefined) delete process.env.EDGEPROXY_ENGINE;
      else process.env.EDGEPROXY_ENGINE = saved;
    }
  });

  test("sni routes (tcp): names lower-cased without a trailing dot, a pool each, handshake_timeout allowed", () => {
    const text =
      web(undefined, 'origin = "10.0.0.9:443"\nhandshake_timeout = "3s"') +
      '[[service.route]]\nsni = ["A.Example.", "*.b.example"]\norigin = "10.0.0.1:443"\n' +
      '[[service.route]]\nsni = "c.example"\norigins = ["10.0.0.2:443", "10.0.0.3:443"]\nbalance = "least-connections"\n[service.route.health]\ninterval = "2s"\n';
    const s = parseConfig(text, FILE).services[0]!;
    expect(s.sniRoutes!.map((r) => [r.names, r.pool.origins.length, r.pool.balance])).toEqual([
      [["a.example", "*.b.example"], 1, "round-robin"],
      [["c.example"], 2, "least-connections"],
    ]);
    expect(s.sniRoutes![1]!.pool.health!.intervalMs).toBe(2000);
    expect(s.deadlines.handshakeMs).toBe(3000);
    // Without routes: none, and handshake_timeout is refused as before.
    expect(parseConfig(web(undefined, 'origin = "10.0.0.9:443"'), FILE).services[0]!.sniRoutes).toBeUndefined();
    // No origins of its own: unmatched connections are reset.
    expect(parseConfig(web() + '[[service.route]]\nsni = "a.example"\norigin = "10.0.0.1:443"\n', FILE).services[0]!.pool).toBeUndefined();
  });

  test.each([
    ['[[service.route]]\norigin = "10.0.0.1:443"\n', 'edgeproxy.toml: service "web": route[1]: missing required field "sni" (the TLS server names this route takes, like ["a.example", "*.b.example"])'],
    ['[[service.route]]\nsni = []\norigin = "10.0.0.1:443"\n', 'edgeproxy.toml: service "web": route[1].sni: must not be empty'],
    ['[[service.route]]\nsni = "a.example"\n', 'edgeproxy.toml: service "web": route[1]: missing required field "origins" (an sni route sends its connections to origins of its own)'],
    ['[[service.route]]\nsni = "a b"\norigin = "10.0.0.1:443"\n', 'edgeproxy.toml: service "web": route[1].sni: "a b" is not a host name, or "*." and a host name'],
    ['[[service.route]]\nsni = "a.*.example"\norigin = "10.0.0.1:443"\n', 'edgeproxy.toml: service "web": route[1].sni: "a.*.example" is not a host name, or "*." and a host name'],
    ['[[service.route]]\nsni = "*"\norigin = "10.0.0.1:443"\n', 'edgeproxy.toml: service "web": route[1].sni: "*" is not a host name, or "*." and a host name'],
    ['[[service.route]]\nsni = ["a.example", "A.example."]\norigin = "10.0.0.1:443"\n', 'edgeproxy.toml: service "web": route[1].sni: "A.example." is already in this route'],
    ['[[service.route]]\nsni = "*.a.example"\norigin = "10.0.0.1:443"\n[[service.route]]\nsni = "*.A.example"\norigin = "10.0.0.2:443"\n', 'edgeproxy.toml: service "web": route[2].sni: "*.A.example" is already route[1]\'s'],
    ['[[service.route]]\nhost = "a.example"\norigin = "10.0.0.1:443"\n', 'edgeproxy.toml: service "web": route[1]: unknown field "host" (host and path route http services; a tcp service\'s routes match the TLS server name (sni))'],
  ])("sni route error %#", (route, expected) => {
    expect(error(web() + route)).toBe(expected);
  });

  test("sni routes and TLS termination, or an http service with sni: one line each", () => {
    expect(error(web(undefined, 'tls_cert = "/tls/cert.pem"\ntls_key = "/tls/key.pem"') + '[[service.route]]\nsni = "a.example"\norigin = "10.0.0.1:443"\n', read)).toBe(
      'edgeproxy.toml: service "web": route: sni routes pass TLS through to their origins; they cannot be combined with tls_cert/tls_key (TLS termination)',
    );
    expect(error(web(undefined, 'mode = "http"') + '[[service.route]]\nsni = "a.example"\norigin = "10.0.0.1:443"\n')).toBe(
      'edgeproxy.toml: service "web": route[1]: unknown field "sni" (sni routes are for tcp services, which pass TLS through; an http service routes by host and path)',
    );
  });

  test("client deadlines: defaults, and every key set", () => {
    expect(parseConfig(web(), FILE).services[0]!.deadlines).toEqual(DEADLINE_DEFAULTS);
    const keys = 'proxy_header_timeout = "3s"\nhandshake_timeout = "4s"\nheader_timeout = "5s"\nkeepalive_timeout = "6s"\nbody_timeout = "7s"';
    const text = web(undefined, `mode = "http"\naccept_proxy = "10.0.0.0/8"\ntls_cert = "/tls/cert.pem"\ntls_key = "/tls/key.pem"\n${keys}`);
    const http = parseConfig(text, FILE, { readFile: read }).services[0]!;
    expect(http.deadlines).toEqual({ proxyHeaderMs: 3000, handshakeMs: 4000, headerMs: 5000, keepaliveMs: 6000, bodyMs: 7000 });
    expect(parseConfig(web(undefined, 'accept_proxy = "10.0.0.0/8"\nproxy_header_timeout = "3s"'), FILE).services[0]!.deadlines.proxyHeaderMs).toBe(3000);
  });

  test.each([
    [web(undefined, 'mode = "http"') + '[[service.route]]\norigin = "10.0.0.1"\n', 'edgeproxy.toml: service "web": route[1]: a route needs host, path or both'],
    [web(undefined, 'mode = "http"') + '[[service.route]]\npath = "api"\n', 'edgeproxy.toml: service "web": route[1].path: "api" is not an absolute path prefix (like /api/)'],
    [web(undefined, 'mode = "http"') + '[[service.route]]\npath = "/a/../b"\n', 'edgeproxy.toml: service "web": route[1].path: "/a/../b" is not an absolute path prefix (like /api/)'],
    [web(undefined, 'mode = "http"') + '[[service.route]]\npath = "/users/:id"\n', 'edgeproxy.toml: service "web": route[1].path: "/users/:id" is not an absolute path prefix (like /api/)'],
    [web(undefined, 'mode = "http"') + '[[service.route]]\nhost = "a b"\n', 'edgeproxy.toml: service "web": route[1].host: "a b" is not a host name or IP literal with an optional port'],
    [web(undefined, 'mode = "http"') + '[[service.route]]\npath = "/x"\n[[service.route]]\npath = "/x/"\n', 'edgeproxy.toml: service "web": route[2]: host (any) and path /x are already route[1]\'s'],
    [web(undefined, 'origin = "10.0.0.1:80"\norigins = ["10.0.0.2:80"]'), 'edgeproxy.toml: service "web": set origin (one) or origins (a pool), not both'],
    [web(undefined, 'origins = []'), 'edgeproxy.toml: service "web": origins: must not be empty'],
    [web(undefined, 'balance = "hash"'), 'edgeproxy.toml: service "web": balance: applies to a pool: set origin or origins too'],
    [web(undefined, 'origin = "10.0.0.1:80"\n[service.health]\npath = "/x"'), 'edgeproxy.toml: service "web": health.path: tcp pools are checked by TCP connect; path is for http services'],
    [web(undefined, 'origin = "10.0.0.1:80"\n[service.health]\ninterval = "1s"\ntimeout = "3s"'), 'edgeproxy.toml: service "web": health: the check timeout (3000 ms) is longer than the interval (1000 ms)'],
    [web(undefined, 'origin = "10.0.0.1:80"\n[service.eject]\nfailures = 0'), 'edgeproxy.toml: service "web": eject.failures: 0 is not a whole number from 1 to 2147483647'],
    [web(undefined, 'origin = "10.0.0.1:80"\n[service.eject]\nbase_duration = "5s"\nduration = "2s"'), 'edgeproxy.toml: service "web": eject.base_duration: the first ejection (5000 ms) is longer than the longest (duration, 2000 ms)'],
    [web(undefined, 'origin = "10.0.0.1"\n[service.health]\nport = 70000'), 'edgeproxy.toml: service "web": health.port: "70000" is not a port (1-65535)'],
    [web('prefixes = "192.0.2.0/24"\nports = "1000-2000"', 'origin = "10.0.0.1:3000-3999"'), 'edgeproxy.toml: service "web": origins: origin ports 3000-3999 (1000) and edge ports 1000-2000 (1001) differ in size'],
    [web(undefined, 'mode = "http"\nmax_body_size = "0"'), 'edgeproxy.toml: service "web": max_body_size: "0" must be at least 1 byte and at most 1 PiB'],
    [web(undefined, 'tls_cert = "/tls/cert.pem"\ntls_key = "/tls/cert.pem"'), 'edgeproxy.toml: service "web": tls_key: "/tls/cert.pem" holds no PEM private key'],
    [web(undefined, 'tls_cert = "/tls/none.pem"\ntls_key = "/tls/key.pem"'), 'edgeproxy.toml: service "web": tls_cert: cannot read "/tls/none.pem": ENOENT'],
    [web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 53', 'mode = "udp"\naccept_proxy = "10.0.0.0/8"'), 'edgeproxy.toml: service "web": accept_proxy: PROXY headers are accepted on tcp and http services only'],
  ])("%#", (text, expected) => {
    expect(error(text, read)).toBe(expected);
  });

  test("a one-range edge maps onto an origin range of the same size", () => {
    const s = parseConfig(web('prefixes = "192.0.2.0/24"\nports = "1000-2000"', 'origin = "10.0.0.1:3000-4000"'), FILE).services[0]!;
    expect(s.pool!.origins[0]!.ports).toEqual({ lo: 3000, hi: 4000 });
  });
});
