// The config file's valid forms: a full round trip, defaults, and the file and the flags agreeing.
// A service's keys: file-service.test.ts; errors and bounds: file-errors.test.ts.
import { DEADLINE_DEFAULTS } from "./deadlines";
import { poolOf } from "./origin";
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "../cli/args";
import { parsePrefix } from "./address";
import { loadConfig, parseConfig } from "./file";
import { FILE, TOKEN, error, web } from "./file-fixture";
import { DEFAULTS, runDir } from "./service";

// The file's instance is its base name, and its admin socket is named after it.
const DEFAULT_SOCKET = join(runDir(), "edgeproxy.sock");

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
