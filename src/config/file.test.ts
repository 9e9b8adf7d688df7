import { testPem } from "./tls-fixture";
import { DEADLINE_DEFAULTS } from "./deadlines";
import { poolOf } from "./origin";
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../cli/args";
import { ConfigError } from "../errors";
import { parsePrefix } from "./address";
import { loadConfig, parseConfig } from "./file";
import { DEFAULTS, runDir } from "./service";

const FILE = "edgeproxy.toml";
// The file's instance is its base name, and its admin socket is named after it.
const DEFAULT_SOCKET = join(runDir(), "edgeproxy.sock");
const TOKEN = "0123456789abcdef0123";

/** One service "web" with one bind; extra lines go into the service and the bind. */
const web = (bind = 'prefixes = "192.0.2.0/24"\nports = 80', service = "", name = "web") =>
  `[[service]]\nname = "${name}"\n${service}\n[[service.bind]]\n${bind}\n`;

function error(text: string, readFile?: (path: string) => string): string {
  try {
    parseConfig(text, FILE, { readFile });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const message = (e as Error).message;
    expect(message).not.toContain("\n");
    return message;
  }
  throw new Error("parsed without error");
}

const dir = mkdtempSync(join(tmpdir(), "edgeproxy-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("valid configs", () => {
  test("full config round-trip", () => {
    const text = `
take_over = true
max_connections = 5000

[admin]
listen = "127.0.0.1:9901"
token = "${TOKEN}"

[[service]]
name = "web"
origin = "127.0.0.1:8080"
connect_timeout = "2s"
idle_timeout = "10m"
allow = ["192.0.2.0/24", "2001:db8::/32"]
deny = "192.0.2.66/32"

  [[service.bind]]
  prefixes = ["192.0.2.0/24", "2001:db8::/64"]
  ports = ["80", "443", "8000-8999"]

  [[service.bind]]
  protocol = "tcp"
  prefixes = "198.51.100.0/24, 2001:db8:1::/48"
  ports = "53,5000-5100"

[[service]]
name = "ssh.bastion"
connect_timeout = 3

  [[service.bind]]
  prefixes = "192.0.2.0/24"
  ports = [22, "2222"]
`;
    const c = parseConfig(text, FILE);
    expect(c).toStrictEqual({
      instance: "edgeproxy",
      services: [
        {
          name: "web",
          mode: "tcp",
          bindings: [
            {
              protocol: "tcp",
              prefixes: [parsePrefix("192.0.2.0/24"), parsePrefix("2001:db8::/64")],
              ports: [{ lo: 80, hi: 80 }, { lo: 443, hi: 443 }, { lo: 8000, hi: 8999 }],
            },
            {
              protocol: "tcp",
              prefixes: [parsePrefix("198.51.100.0/24"), parsePrefix("2001:db8:1::/48")],
              ports: [{ lo: 53, hi: 53 }, { lo: 5000, hi: 5100 }],
            },
          ],
          pool: poolOf([{ host: "127.0.0.1", port: 8080, weight: 1 }]),
          connectTimeoutMs: 2_000,
          idleTimeoutMs: 600_000,
          deadlines: DEADLINE_DEFAULTS,
          proxyProtocol: "off",
          access: { allow: [parsePrefix("192.0.2.0/24"), parsePrefix("2001:db8::/32")], deny: [parsePrefix("192.0.2.66/32")] },
          acceptProxy: [],
          tls: undefined,
          http: undefined,
          // The default (auto) with origins and no TLS; $EDGEPROXY_ENGINE=bun, the escape hatch, says bun.
          engine: process.env.EDGEPROXY_ENGINE === "bun" ? "bun" : "epoll",
        },
        {
          name: "ssh.bastion",
          mode: "tcp",
          bindings: [{ protocol: "tcp", prefixes: [parsePrefix("192.0.2.0/24")], ports: [{ lo: 22, hi: 22 }, { lo: 2222, hi: 2222 }] }],
          pool: undefined,
          connectTimeoutMs: 3_000,
          idleTimeoutMs: DEFAULTS.idleTimeoutMs,
          deadlines: DEADLINE_DEFAULTS,
          proxyProtocol: "off",
          access: { allow: [], deny: [] },
          acceptProxy: [],
          tls: undefined,
          http: undefined,
          // No origin: the built-in responder, on Bun's sockets.
          engine: "bun",
        },
      ],
      takeOver: true,
      maxConnections: 5000,
      maxFlows: undefined,
      admin: { kind: "tcp", host: "127.0.0.1", port: 9901, token: TOKEN },
      source: FILE,
    });
  });

  test("defaults", () => {
    const c = parseConfig(web(), FILE);
    expect(c.takeOver).toBe(false);
    expect(parseConfig(`instance = "edge-1"\n${web()}`, "/etc/x.toml").instance).toBe("edge-1");
    expect(parseConfig(web(), "/etc/edgeproxy/site.v2.toml").instance).toBe("site.v2");
    expect(() => parseConfig(`instance = "a/b"\n${web()}`, FILE)).toThrow('edgeproxy.toml: instance: "a/b": use 1-63 of a-z A-Z 0-9 _ . -');
    expect(c.maxConnections).toBeUndefined();
    expect(c.admin).toEqual({ kind: "unix", path: DEFAULT_SOCKET });
    expect(c.services[0]).toMatchObject({ mode: "tcp", connectTimeoutMs: DEFAULTS.connectTimeoutMs, idleTimeoutMs: DEFAULTS.idleTimeoutMs });
  });

  test.each([
    ["[admin]\n", { kind: "unix", path: DEFAULT_SOCKET }],
    ['[admin]\nsocket = "/run/ep/admin.sock"\n', { kind: "unix", path: "/run/ep/admin.sock" }],
    ["[admin]\nenabled = false\n", { kind: "off" }],
    ["[admin]\nenabled = true\n", { kind: "unix", path: DEFAULT_SOCKET }],
    [`[admin]\nlisten = "[::1]:9901"\ntoken = "${TOKEN}"\n`, { kind: "tcp", host: "::1", port: 9901, token: TOKEN }],
    [`[admin]\nlisten = "127.0.0.2:9901"\ntoken_file = "/etc/ep/token"\n`, { kind: "tcp", host: "127.0.0.2", port: 9901, token: "from-the-file-0123" }],
  ])("admin %p", (admin, expected) => {
    const readFile = (path: string) => (path === "/etc/ep/token" ? "  from-the-file-0123\n" : "");
    expect(parseConfig(admin + web(), FILE, { readFile }).admin).toEqual(expected as never);
  });

  test("a one-service file and the command-line shortcut agree", () => {
    const cli = parseArgs([
      "serve", "--name", "web", "--ports", "80,443,8000-8999", "--prefix", "192.0.2.0/24,2001:db8::/64",
      "--origin", "[2001:db8::1]:8080", "--connect-timeout", "750ms", "--idle-timeout", "1h", "--take-over", "--max-connections", "100",
    ]);
    if (cli.kind !== "serve") throw new Error("expected serve");
    const text = `take_over = true\nmax_connections = 100\n${web(
      'prefixes = "192.0.2.0/24,2001:db8::/64"\nports = "80,443,8000-8999"',
      'origin = "[2001:db8::1]:8080"\nconnect_timeout = "750ms"\nidle_timeout = "1h"',
    )}`;
    const { source, admin, instance, ...fromFile } = parseConfig(text, FILE);
    const { source: _, admin: __, bpffs: ___, instance: ____, ...fromCli } = cli.config; // --bpffs is a command-line-only setting
    expect(instance).toBe("edgeproxy");
    expect(cli.config.instance).toBe("default");
    expect(source).toBe(FILE);
    expect(admin).toEqual({ kind: "unix", path: DEFAULT_SOCKET });
    expect(fromFile).toStrictEqual(fromCli);
  });

  test("per-client limits: the file's keys and the flags agree", () => {
    const cli = parseArgs(["--name", "web", "--ports", "80", "--prefix", "192.0.2.0/24", "--source-connections", "8", "--source-rate", "10", "--source-rate-burst", "30", "--source-prefix-v6", "48"]);
    if (cli.kind !== "serve") throw new Error("expected serve");
    const file = parseConfig(web(undefined, "source_connections = 8\nsource_rate = 10\nsource_rate_burst = 30\nsource_prefix_v6 = 48"), FILE);
    expect(file.services[0]!.sourceLimits).toEqual({ connections: 8, rate: { perSecond: 10, burst: 30 }, prefixV6: 48 });
    expect(file.services[0]).toStrictEqual(cli.config.services[0]!);
    expect(error(web(undefined, "source_prefix_v6 = 200\nsource_connections = 1"))).toBe('edgeproxy.toml: service "web": source_prefix_v6: 200 is not a whole number from 1 to 128');
    expect(error(web(undefined, 'source_rate = "fast"'))).toBe('edgeproxy.toml: service "web": source_rate: expected a positive integer, got a string');
    expect(error(`[[service]]\nname = "dns"\nmode = "udp"\nsource_rate = 5\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 53\n`)).toBe(
      'edgeproxy.toml: service "dns": source_rate: applies to tcp and http connections; for udp flows use edgeproxy.toml: service "dns": source_connections',
    );
  });

  test("loadConfig reads the file and token_file", async () => {
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, `${TOKEN}\n`);
    const file = join(dir, "ok.toml");
    writeFileSync(file, `[admin]\nlisten = "127.0.0.1:9901"\ntoken_file = "${tokenFile}"\n${web()}`);
    const c = await loadConfig(file);
    expect(c.source).toBe(file);
    expect(c.admin).toEqual({ kind: "tcp", host: "127.0.0.1", port: 9901, token: TOKEN });
  });
});

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

describe("errors name the file, the service and the field", () => {
  test.each([
    // TOML syntax
    ['take_over = false\n\n[[service]]\nname = "web"\nmode = tcp\n', 'edgeproxy.toml:5: TOML syntax error: Strings must be quoted: "tcp"'],
    ["take_over = false\ntake_over = true\n", "edgeproxy.toml:2: TOML syntax error: Cannot redefine key 'take_over'"],
    ['a = [\n 1,\n]\n[[service]]\nname = "web"\nports = [1,\n2,\n', "edgeproxy.toml:6: TOML syntax error: Unterminated array; expected ']'"],
    ['a = """\nx\n"""\nb = "abc\n', "edgeproxy.toml:4: TOML syntax error: Unterminated string; newlines must be escaped in basic strings"],
    ["b = 1\r\nc = [1, 2\r\n[d]\r\n", "edgeproxy.toml:3: TOML syntax error: Expected ',' or ']' in an array but found '['"],
    // unknown fields, at every level
    [`takeover = true\n${web()}`, 'edgeproxy.toml: unknown field "takeover" (did you mean "take_over"?)'],
    [`ports = 80\n${web()}`, 'edgeproxy.toml: unknown field "ports" (it belongs in a [[service.bind]] table)'],
    [`[admin]\nsocet = "/x"\n${web()}`, 'edgeproxy.toml: admin: unknown field "socet" (did you mean "socket"?)'],
    [web(undefined, 'orign = "x"'), 'edgeproxy.toml: service "web": unknown field "orign" (did you mean "origin"?)'],
    [web(undefined, "ports = 80"), 'edgeproxy.toml: service "web": unknown field "ports" (it belongs in a [[service.bind]] table)'],
    [web('prefix = "192.0.2.0/24"\nports = 80'), 'edgeproxy.toml: service "web": bind[1]: unknown field "prefix" (did you mean "prefixes"?)'],
    [web(undefined, 'header_timeout = "5s"'), 'edgeproxy.toml: service "web": header_timeout: is for http services; this one is tcp'],
    [web(undefined, 'handshake_timeout = "5s"'), 'edgeproxy.toml: service "web": handshake_timeout: applies to TLS-terminating services (give a certificate and key too)'],
    [web(undefined, 'proxy_header_timeout = "5s"'), 'edgeproxy.toml: service "web": proxy_header_timeout: applies to services that accept PROXY headers (give accept_proxy prefixes too)'],
    [web(undefined, 'mode = "http"\nbody_timeout = "0s"'), 'edgeproxy.toml: service "web": body_timeout: "0s" must be at least 1ms and at most 7 days'],
    [web(undefined, "xyz = 1"), 'edgeproxy.toml: service "web": unknown field "xyz" (known: name, mode, engine, origin, origins, balance, health, eject, origin_tls, origin_ca, origin_sni, origin_cert, origin_key, connect_timeout, idle_timeout, proxy_protocol, accept_proxy, tls_cert, tls_key, certificate, tls_min_version, tls_ciphers, first_byte_timeout, max_body_size, max_header_size, http2, http2_max_concurrent_streams, request_id_in_response, allow, deny, bind, route, source_connections, source_rate, source_rate_burst, source_prefix_v6, proxy_header_timeout, handshake_timeout, header_timeout, keepalive_timeout, body_timeout, access_log, access_log_sample, access_log_connect)'],
    // types and required fields
    [`take_over = "yes"\n${web()}`, "edgeproxy.toml: take_over: expected true or false, got a string"],
    [`max_connections = 0\n${web()}`, "edgeproxy.toml: max_connections: 0 is not a whole number from 1 to 2147483647"],
    [`max_connections = 1.5\n${web()}`, "edgeproxy.toml: max_connections: expected a positive integer, got a float"],
    [`admin = "/x"\n${web()}`, "edgeproxy.toml: admin: expected a table, got a string"],
    ["take_over = true\n", 'edgeproxy.toml: missing required field "service" (add a [[service]] table)'],
    ['[service]\nname = "web"\n', "edgeproxy.toml: service: expected an array of tables ([[service]]), got a table"],
    ['[[service]]\nname = "web"\n', 'edgeproxy.toml: service "web": missing required field "bind" (add a [[service.bind]] table with prefixes and ports)'],
    ['[[service]]\nname = "web"\n[service.bind]\nports = 80\n', 'edgeproxy.toml: service "web": bind: expected an array of tables ([[service.bind]]), got a table'],
    ['[[service]]\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 80\n', 'edgeproxy.toml: service[1]: missing required field "name"'],
    [web().replace('"web"', "7"), "edgeproxy.toml: service[1]: name: expected a string, got an integer"],
    [web().replace('"web"', '"a b"'), 'edgeproxy.toml: service[1]: name: "a b": use 1-64 of a-z A-Z 0-9 _ . -'],
    [web("ports = 80"), 'edgeproxy.toml: service "web": bind[1]: missing required field "prefixes"'],
    [web('prefixes = "192.0.2.0/24"'), 'edgeproxy.toml: service "web": bind[1]: missing required field "ports"'],
    [web('prefixes = []\nports = 80'), 'edgeproxy.toml: service "web": bind[1].prefixes: must not be empty'],
    [web('prefixes = "192.0.2.0/24"\nports = []'), 'edgeproxy.toml: service "web": bind[1].ports: must not be empty'],
    [web('prefixes = [1]\nports = 80'), 'edgeproxy.toml: service "web": bind[1].prefixes: item 1 is an integer; expected a string'],
    [web('prefixes = "192.0.2.0/24"\nports = true'), 'edgeproxy.toml: service "web": bind[1].ports: expected an array of strings or integers, or a string, got a boolean'],
    [web('prefixes = "192.0.2.0/24"\nports = [80, 1.5]'), 'edgeproxy.toml: service "web": bind[1].ports: item 2 is a float; expected a string or an integer'],
    [web(undefined, "allow = 1"), 'edgeproxy.toml: service "web": allow: expected an array of strings, or a string, got an integer'],
    // values
    [web('prefixes = "192.0.2.0/24"\nports = ["80", "70000"]'), 'edgeproxy.toml: service "web": bind[1].ports: "70000": port 70000 is outside 1-65535'],
    [web('prefixes = "192.0.2.0/24"\nports = [80, 70000]'), 'edgeproxy.toml: service "web": bind[1].ports: "70000": port 70000 is outside 1-65535'],
    [web('prefixes = "192.0.2.0/24"\nports = "0-5"'), 'edgeproxy.toml: service "web": bind[1].ports: "0-5": port 0 is outside 1-65535'],
    [web('prefixes = "192.0.2.0/24"\nports = "80,5-3"'), 'edgeproxy.toml: service "web": bind[1].ports: "5-3": range start is above its end'],
    [web('prefixes = "192.0.2.0/24"\nports = "80,,443"'), 'edgeproxy.toml: service "web": bind[1].ports: "80,,443" has an empty item'],
    [web('protocol = "sctp"\nprefixes = "192.0.2.0/24"\nports = 80'), 'edgeproxy.toml: service "web": bind[1].protocol: "sctp" is not one of tcp, udp'],
    [web('prefixes = ["192.0.2.1/24"]\nports = 80'), 'edgeproxy.toml: service "web": bind[1].prefixes: "192.0.2.1/24" has host bits set (did you mean 192.0.2.0/24?)'],
    [web('prefixes = "192.0.2.0/24, 2001:db8::/129"\nports = 80'), 'edgeproxy.toml: service "web": bind[1].prefixes: "2001:db8::/129": prefix length must be 0-128 for IPv6'],
    [web() + '[[service.bind]]\nprefixes = "example.com"\nports = 80\n', 'edgeproxy.toml: service "web": bind[2].prefixes: "example.com" is not an IPv4 or IPv6 prefix'],
    [web(undefined, 'deny = ["10.0.0.1/8"]'), 'edgeproxy.toml: service "web": deny: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)'],
    [web(undefined, 'connect_timeout = "5 seconds"'), 'edgeproxy.toml: service "web": connect_timeout: "5 seconds" is not a duration (like 500ms, 5s, 2m)'],
    [web(undefined, 'idle_timeout = "0s"'), 'edgeproxy.toml: service "web": idle_timeout: "0s" must be at least 1ms and at most 7 days'],
    [web(undefined, 'origin = "10.0.0.1:0"'), 'edgeproxy.toml: service "web": origin: "10.0.0.1:0": port must be 1-65535'],
    [web(undefined, 'origin = "bad host!"'), 'edgeproxy.toml: service "web": origin: "bad host!" is not HOST, HOST:PORT, HOST:LO-HI or [IPv6]:PORT, then options like weight=N'],
    [web('protocol = "tcp"\nprefixes = "192.0.2.0/24"\nports = 80', 'mode = "udp"'), 'edgeproxy.toml: service "web": bind[1].protocol: a udp service binds udp only; make a second service (mode = "tcp") for the same ports'],
    [web(undefined, 'proxy_protocol = "spp"'), 'edgeproxy.toml: service "web": proxy_protocol: spp: tcp services take v1 or v2'],
    [web(undefined, 'proxy_protocol = "v3"'), 'edgeproxy.toml: service "web": proxy_protocol: "v3" is not one of off, v1, v2, spp'],
    [web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 80', 'mode = "udp"\nconnect_timeout = "1s"'), 'edgeproxy.toml: service "web": connect_timeout: UDP has no connections to time out; use idle_timeout for flows'],
    [web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 80', 'mode = "udp"\nroute = []'), 'edgeproxy.toml: service "web": route: routes http services (by host and path) and tcp services (by TLS server name); this one is udp'],
    [web(undefined, 'mode = "sctp"'), 'edgeproxy.toml: service "web": mode: "sctp" is not one of tcp, udp, http'],
    // admin
    [`[admin]\nlisten = "0.0.0.0:9901"\ntoken = "${TOKEN}"\n${web()}`, 'edgeproxy.toml: admin.listen: "0.0.0.0:9901" must be a loopback address (127.0.0.0/8 or [::1]); the admin API is not for the network'],
    [`[admin]\nlisten = "localhost:9901"\ntoken = "${TOKEN}"\n${web()}`, 'edgeproxy.toml: admin.listen: "localhost:9901" must be a loopback address (127.0.0.0/8 or [::1]); the admin API is not for the network'],
    [`[admin]\nlisten = "127.0.0.1"\ntoken = "${TOKEN}"\n${web()}`, 'edgeproxy.toml: admin.listen: "127.0.0.1" needs a port'],
    [`[admin]\nlisten = "127.0.0.1:9901"\n${web()}`, "edgeproxy.toml: admin: listen needs token or token_file"],
    [`[admin]\nlisten = "[::1]:9901"\ntoken = "short"\n${web()}`, "edgeproxy.toml: admin.token: the token has 5 characters; use at least 16"],
    [`[admin]\nlisten = "[::1]:9901"\ntoken = "with space 0123456789"\n${web()}`, "edgeproxy.toml: admin.token: the token must be printable ASCII without spaces"],
    [`[admin]\nlisten = "[::1]:9901"\ntoken = "${TOKEN}"\ntoken_file = "/t"\n${web()}`, "edgeproxy.toml: admin: set token or token_file, not both"],
    [`[admin]\nlisten = "[::1]:9901"\ntoken_file = "token"\n${web()}`, 'edgeproxy.toml: admin.token_file: "token" is not an absolute path'],
    [`[admin]\ntoken = "${TOKEN}"\n${web()}`, "edgeproxy.toml: admin: token and token_file only apply with listen"],
    [`[admin]\nsocket = "admin.sock"\n${web()}`, 'edgeproxy.toml: admin.socket: "admin.sock" is not an absolute path'],
    [`[admin]\nsocket = "/${"a".repeat(107)}"\n${web()}`, `edgeproxy.toml: admin.socket: "/${"a".repeat(107)}" is longer than 107 bytes`],
    [`[admin]\nsocket = "/a.sock"\nlisten = "127.0.0.1:1"\n${web()}`, "edgeproxy.toml: admin: set socket or listen, not both"],
    [`[admin]\nenabled = false\nsocket = "/a.sock"\n${web()}`, "edgeproxy.toml: admin.enabled: false cannot be combined with socket"],
    // across services
    [web() + web('prefixes = "198.51.100.0/24"\nports = 80'), 'edgeproxy.toml: service[2]: name: "web" is already the name of service[1]'],
    [web() + web(undefined, "", "api"), "edgeproxy.toml: bindings: tcp 192.0.2.0/24 80 is bound by both service web and service api"],
    [
      web('prefixes = "192.0.2.0/24"\nports = "1000-1999"') + web('prefixes = "192.0.2.0/24"\nports = "1500-2499"', "", "api"),
      "edgeproxy.toml: bindings: tcp 192.0.2.0/24 1000-1999 (service web) and tcp 192.0.2.0/24 1500-2499 (service api) overlap with equal precedence",
    ],
  ])("%#", (text, expected) => {
    expect(error(text, () => "")).toBe(expected);
  });

  test("token_file that cannot be read", () => {
    const text = `[admin]\nlisten = "127.0.0.1:9901"\ntoken_file = "${join(dir, "absent")}"\n${web()}`;
    expect(error(text, undefined)).toBe(`edgeproxy.toml: admin.token_file: cannot read "${join(dir, "absent")}": no such file (ENOENT)`);
  });

  test("token_file whose token is too short", () => {
    const text = `[admin]\nlisten = "127.0.0.1:9901"\ntoken_file = "/t"\n${web()}`;
    expect(error(text, () => "abc\n")).toBe("edgeproxy.toml: admin.token_file: the token has 3 characters; use at least 16");
  });

  test("nested ranges are not conflicts", () => {
    const text = web('prefixes = "192.0.2.0/24"\nports = "1-65535"') + web('prefixes = "192.0.2.0/24"\nports = [80]', "", "api");
    expect(parseConfig(text, FILE).services.map((s) => s.name)).toEqual(["web", "api"]);
  });

  test("a tcp service cannot bind udp", () => {
    const text = web('protocol = "udp"\nprefixes = "192.0.2.0/24"\nports = 80', "", "dns");
    expect(error(text)).toBe('edgeproxy.toml: service "dns": bind[1].protocol: a tcp service binds tcp only; make a second service (mode = "udp") for the same ports');
  });

  test("udp service: binds udp by default, 30 s idle flows, proxy protocol, max_flows; tcp beside it on the same ports", () => {
    const text = `max_flows = 5000\n` + web(undefined, 'mode = "udp"\nproxy_protocol = "spp"', "dns") + web(undefined, "", "web");
    const c = parseConfig(text, FILE);
    expect(c.maxFlows).toBe(5000);
    const [dns, tcp] = c.services;
    expect(dns!.mode).toBe("udp");
    expect(dns!.bindings[0]!.protocol).toBe("udp");
    expect(dns!.idleTimeoutMs).toBe(DEFAULTS.udpIdleTimeoutMs);
    expect(dns!.proxyProtocol).toBe("spp");
    expect(tcp!.bindings[0]!.protocol).toBe("tcp");
  });

  test("at most 1023 services", () => {
    const many = (n: number) =>
      Array.from({ length: n }, (_, i) => web(`prefixes = "10.${i >> 8}.${i & 255}.0/24"\nports = 80`, "", `s${i}`)).join("");
    expect(parseConfig(many(1023), FILE).services).toHaveLength(1023);
    expect(error(many(1024))).toBe("edgeproxy.toml: service: 1024 services; at most 1023 are supported");
  });

  test("loadConfig: missing file and directory", async () => {
    const missing = join(dir, "nope.toml");
    await expect(loadConfig(missing)).rejects.toThrow(new ConfigError(missing, "cannot read config file: no such file (ENOENT)"));
    await expect(loadConfig(dir)).rejects.toThrow(new ConfigError(dir, "cannot read config file: is a directory (EISDIR)"));
  });

  test("loadConfig passes parse errors through with the file name", async () => {
    const file = join(dir, "bad.toml");
    writeFileSync(file, web('prefixes = "192.0.2.0/24"\nports = "70000"'));
    await expect(loadConfig(file)).rejects.toThrow(`${file}: service "web": bind[1].ports: "70000": port 70000 is outside 1-65535`);
  });
});

describe("numbers are bounded where they are parsed (numbers.ts), for every key", () => {
  const pool = 'origin = "10.0.0.1:80"';
  test.each([
    [`workers = 257\n${web()}`, "edgeproxy.toml: workers: 257 is not a whole number from 1 to 256"],
    [`workers = 0\n${web()}`, "edgeproxy.toml: workers: 0 is not a whole number from 1 to 256"],
    [`workers = -1\n${web()}`, "edgeproxy.toml: workers: -1 is not a whole number from 1 to 256"],
    [`workers = inf\n${web()}`, "edgeproxy.toml: workers: expected a positive integer, got a float"],
    [`workers = nan\n${web()}`, "edgeproxy.toml: workers: expected a positive integer, got a float"],
    [`max_connections = 2147483648\n${web()}`, "edgeproxy.toml: max_connections: 2147483648 is not a whole number from 1 to 2147483647"],
    [`max_flows = 9007199254740991\n${web()}`, "edgeproxy.toml: max_flows: 9007199254740991 is not a whole number from 1 to 2147483647"],
    [`drain_timeout = "0.4ms"\n${web()}`, 'edgeproxy.toml: drain_timeout: "0.4ms" must be at least 1ms and at most 7 days'],
    [web(undefined, "idle_timeout = 0.0004"), 'edgeproxy.toml: service "web": idle_timeout: "0.0004" must be at least 1ms and at most 7 days'],
    [web(undefined, "connect_timeout = 1e400"), 'edgeproxy.toml: service "web": connect_timeout: expected a string, got a float'],
    [web(undefined, 'connect_timeout = "8d"'), 'edgeproxy.toml: service "web": connect_timeout: "8d" is not a duration (like 500ms, 5s, 2m)'],
    [web(undefined, 'connect_timeout = "169h"'), 'edgeproxy.toml: service "web": connect_timeout: "169h" must be at least 1ms and at most 7 days'],
    [web(undefined, `${pool}\n[service.health]\ninterval = "0.5ms"`), 'edgeproxy.toml: service "web": health.interval: "0.5ms" must be at least 1ms and at most 7 days'],
    [web(undefined, `${pool}\n[service.health]\nrise = 4294967296`), 'edgeproxy.toml: service "web": health.rise: 4294967296 is not a whole number from 1 to 2147483647'],
    [web(undefined, `${pool}\n[service.eject]\nduration = "0ms"`), 'edgeproxy.toml: service "web": eject.duration: "0ms" must be at least 1ms and at most 7 days'],
    [web(undefined, 'mode = "http"\nmax_body_size = "0"'), 'edgeproxy.toml: service "web": max_body_size: "0" must be at least 1 byte and at most 1 PiB'],
    [web(undefined, 'mode = "http"\nmax_body_size = "2000000GiB"'), 'edgeproxy.toml: service "web": max_body_size: "2000000GiB" must be at least 1 byte and at most 1 PiB'],
    [web(undefined, 'mode = "http"\nfirst_byte_timeout = "0.1ms"'), 'edgeproxy.toml: service "web": first_byte_timeout: "0.1ms" must be at least 1ms and at most 7 days'],
    [web(undefined, 'origin = "10.0.0.1:0"'), 'edgeproxy.toml: service "web": origin: "10.0.0.1:0": port must be 1-65535'],
    [web(undefined, 'origin = "10.0.0.1:80 weight=1001"'), 'edgeproxy.toml: service "web": origin: "10.0.0.1:80 weight=1001": "weight=1001" is not weight=N with N 1-1000'],
    [web('prefixes = "192.0.2.0/24"\nports = 65536'), 'edgeproxy.toml: service "web": bind[1].ports: "65536": port 65536 is outside 1-65535'],
  ])("%#: %s", (text, message) => {
    expect(error(text)).toBe(message);
  });

  test("the largest values are accepted", () => {
    const c = parseConfig(`workers = 256\nmax_connections = 2147483647\n${web(undefined, 'idle_timeout = "168h"\nconnect_timeout = "1ms"')}`, FILE);
    expect(c.workers).toBe(256);
    expect(c.maxConnections).toBe(2 ** 31 - 1);
    expect(c.services[0]!.idleTimeoutMs).toBe(7 * 86_400_000);
    expect(c.services[0]!.connectTimeoutMs).toBe(1);
  });
});
