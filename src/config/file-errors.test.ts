// A bad config file gets one line naming the file, the service and the field; numbers are bounded where parsed.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../errors";
import { loadConfig, parseConfig } from "./file";
import { FILE, TOKEN, error, web } from "./file-fixture";
import { DEFAULTS } from "./service";

const dir = mkdtempSync(join(tmpdir(), "edgeproxy-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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

  test("loadConfig: a device never ends and a FIFO holds a reload: refused before reading", async () => {
    await expect(loadConfig("/dev/zero")).rejects.toThrow(new ConfigError("/dev/zero", "cannot read config file: not a regular file (a device or socket)"));
    const fifo = join(dir, "fifo.toml");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    // Before: the read waited for a writer, forever (a reload never answered, and every later one waited too).
    await expect(loadConfig(fifo, { reread: true })).rejects.toThrow(new ConfigError(fifo, "cannot re-read config file: a FIFO (a reload reads a regular file)"));
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
