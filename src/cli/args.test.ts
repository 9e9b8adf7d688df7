import { describe, expect, test } from "bun:test";
import { formatPrefix } from "../config/address";
import { DEADLINE_DEFAULTS } from "../config/deadlines";
import { parseArgs } from "./args";

const serve = (argv: string[]) => {
  const c = parseArgs(argv);
  if (c.kind !== "serve") throw new Error(c.kind);
  return c.config.services[0]!;
};

describe("parseArgs", () => {
  test("defaults: the embedded responder on 127.0.0.1/32, all ports", () => {
    const s = serve([]);
    expect(s.pool).toBeUndefined();
    expect(s.bindings[0]!.prefixes.map(formatPrefix)).toEqual(["127.0.0.1/32"]);
    expect(s.bindings[0]!.ports).toEqual([{ lo: 1, hi: 65535 }]);
    expect(s.mode).toBe("tcp");
  });

  test("lists and repeats", () => {
    const s = serve(["--ports", "22,80,8000-8999", "--ports=443", "--prefix", "127.0.0.2/32", "--prefix", "::1/128,192.0.2.0/24"]);
    expect(s.bindings[0]!.ports).toEqual([
      { lo: 22, hi: 22 },
      { lo: 80, hi: 80 },
      { lo: 8000, hi: 8999 },
      { lo: 443, hi: 443 },
    ]);
    expect(s.bindings[0]!.prefixes.map(formatPrefix)).toEqual(["127.0.0.2/32", "::1/128", "192.0.2.0/24"]);
  });

  test("origins with and without a port", () => {
    const first = (args: string[]) => serve(args).pool?.origins[0];
    expect(first(["--origin", "127.0.0.1:9000"])).toEqual({ host: "127.0.0.1", port: 9000, weight: 1 });
    expect(first(["--origin", "10.0.0.1"])).toEqual({ host: "10.0.0.1", weight: 1 });
    expect(first(["--origin", "[::1]:80"])).toEqual({ host: "::1", port: 80, weight: 1 });
    expect(first(["--origin", "::1"])).toEqual({ host: "::1", weight: 1 });
    expect(first(["--origin", "origin.example:8080 weight=5"])).toEqual({ host: "origin.example", port: 8080, weight: 5 });
    expect(first(["--origin", "10.0.0.1:3000-4000", "--ports", "1000-2000"])).toEqual({ host: "10.0.0.1", ports: { lo: 3000, hi: 4000 }, weight: 1 });
  });

  test("http mode, health checks, accepted PROXY headers", () => {
    const s = serve(["--mode", "http", "--origin", "10.0.0.1:80", "--health-interval", "500ms", "--health-path", "/healthz", "--max-body-size", "100MiB", "--accept-proxy", "10.1.0.0/16,2001:db8::/32"]);
    expect(s.mode).toBe("http");
    expect(s.pool!.health).toEqual({ intervalMs: 500, timeoutMs: 500, rise: 2, fall: 3, path: "/healthz" });
    expect(s.http).toEqual({ firstByteTimeoutMs: 60_000, maxBodyBytes: 100 * 1024 ** 2, maxHeaderBytes: 16 * 1024, http2: true, http2MaxConcurrentStreams: 100, requestIdInResponse: false, routes: [] });
    expect(s.acceptProxy.map((p) => p.family)).toEqual([4, 6]);
    expect(serve(["--origin", "10.0.0.1", "--health-interval", "1s", "--health-port", "7001"]).pool!.health!.port).toBe(7001);
    expect(serve(["--origin", "10.0.0.1:80"]).http).toBeUndefined();
    expect(serve(["--mode", "http", "--origin", "10.0.0.1:80", "--no-http2", "--http2-max-concurrent-streams", "8"]).http).toMatchObject({ http2: false, http2MaxConcurrentStreams: 8 });
  });

  test("repeated --origin makes a pool", () => {
    const pool = serve(["--origin", "10.0.0.1:80", "--origin", "10.0.0.2:80 weight=3", "--balance", "least-connections"]).pool!;
    expect(pool.origins.map((o) => o.weight)).toEqual([1, 3]);
    expect(pool.balance).toBe("least-connections");
  });

  test("timeouts", () => {
    const s = serve(["--connect-timeout", "250ms", "--idle-timeout", "2m"]);
    expect([s.connectTimeoutMs, s.idleTimeoutMs]).toEqual([250, 120_000]);
  });

  test("client deadlines: on by default, one flag each", () => {
    expect(serve([]).deadlines).toEqual(DEADLINE_DEFAULTS);
    const h = serve(["--mode", "http", "--header-timeout", "2s", "--keepalive-timeout", "3s", "--body-timeout", "4s"]).deadlines;
    expect([h.headerMs, h.keepaliveMs, h.bodyMs]).toEqual([2000, 3000, 4000]);
    expect(serve(["--accept-proxy", "10.0.0.0/8", "--proxy-header-timeout", "3500ms"]).deadlines.proxyHeaderMs).toBe(3500);
  });

  test.each([
    [["--ports", "0-5"], /--ports/],
    [["--ports", "70000"], /--ports/],
    [["--ports", "5-3"], /--ports/],
    [["--prefix", "10.0.0.0/33"], /--prefix/],
    [["--bogus"], /unknown option/],
    [["garbage"], /unexpected argument/],
    [["--ports"], /needs a value/],
    [["--origin", "a:b:c:d:"], /--origin/],
    [["--origin", "1.2.3.4:0"], /--origin/],
    [["--mode", "quic"], /--mode/],
    [["--health-timeout", "1s", "--origin", "10.0.0.1:80"], /--health-timeout: needs --health-interval/],
    [["--health-port", "7001", "--origin", "10.0.0.1"], /--health-port: needs --health-interval/],
    [["--health-interval", "1s", "--health-port", "0", "--origin", "10.0.0.1"], /--health-port: "0" is not a port \(1-65535\)/],
    [["--health-interval", "1s", "--health-port", "65536", "--origin", "10.0.0.1"], /--health-port: "65536" is not a port/],
    [["--health-interval", "1s", "--health-timeout", "2s", "--origin", "10.0.0.1:80"], /longer than the interval/],
    [["--health-interval", "1s", "--health-path", "/h", "--origin", "10.0.0.1:80"], /--health-path is for --mode http/],
    [["--balance", "hash"], /--balance: applies to a pool/],
    [["--max-body-size", "1MiB"], /--max-body-size: is for --mode http/],
    [["--no-http2"], /--no-http2: is for --mode http/],
    [["--mode", "http", "--http2-max-concurrent-streams", "0"], /--http2-max-concurrent-streams: /],
    [["--mode", "http", "--http2-max-concurrent-streams", "1001"], /--http2-max-concurrent-streams: /],
    [["--mode", "http", "--max-body-size", "lots"], /not a size/],
    [["--origin", "10.0.0.1:3000-3100", "--ports", "1000-2000"], /differ in size/],
    [["--origin", "10.0.0.1:3000-3100", "--ports", "1000-1100,2000"], /one edge port range/],
    [["--mode", "udp", "--accept-proxy", "10.0.0.0/8"], /tcp and http services only/],
    [["--mode", "udp", "--tls-cert", "/x", "--tls-key", "/y"], /udp has no TLS/],
    [["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], /--tls-cert: cannot read "\/nonexistent.pem": ENOENT/],
    [["--tls-cert", "/x"], /--tls-key: is needed/],
    [["--header-timeout", "2s"], /--header-timeout: is for http services; this one is tcp/],
    [["--mode", "http", "--handshake-timeout", "2s"], /--handshake-timeout: applies to TLS-terminating services/],
    [["--proxy-header-timeout", "2s"], /--proxy-header-timeout: applies to services that accept PROXY headers/],
    [["--mode", "http", "--body-timeout", "2s", "--body-timeout", "3s"], /--body-timeout: given twice/],
    [["--mode", "udp", "--connect-timeout", "1s"], /UDP has no connections/],
    [["--proxy-protocol", "spp"], /tcp services take v1 or v2/],
    [["--mode", "udp", "--proxy-protocol", "v1"], /udp services take v2 or spp/],
    [["--max-flows", "0"], /--max-flows: 0 is not a whole number from 1 to/],
    [["--idle-timeout", "soon"], /duration/],
    [["--balance", "random"], /--balance: "random" is not one of/],
    [["--origin", "1.2.3.4:80 weight=0"], /weight=N/],
    [["--origin", "1.2.3.4:90-80"], /port range/],
    [["--source-connections", "0"], /--source-connections: 0 is not a whole number from 1 to 2147483647/],
    [["--source-connections", "99999999999999999999"], /--source-connections: 99999999999999999999 is not a whole number from 1 to 2147483647/],
    [["--source-rate", "2000000"], /--source-rate: 2000000 is not a whole number from 1 to 1000000/],
    [["--source-rate-burst", "5"], /--source-rate-burst: needs --source-rate/],
    [["--source-prefix-v6", "129", "--source-rate", "5"], /--source-prefix-v6: 129 is not a whole number from 1 to 128/],
    [["--source-prefix-v6", "48"], /--source-prefix-v6: groups clients for --source-connections and --source-rate; set one of them/],
    [["--mode", "udp", "--source-rate", "5"], /--source-rate: applies to tcp and http connections; for udp flows use --source-connections/],
  ])("%p is rejected", (argv, message) => {
    expect(() => parseArgs(argv as string[])).toThrow(message);
  });

  test("per-client limits: burst defaults to the rate, IPv6 clients grouped by /64 unless told", () => {
    expect(serve(["--source-connections", "10"]).sourceLimits).toEqual({ connections: 10, prefixV6: 64 });
    expect(serve(["--source-rate", "20", "--source-prefix-v6", "56"]).sourceLimits).toEqual({ connections: 0, rate: { perSecond: 20, burst: 20 }, prefixV6: 56 });
    expect(serve(["--source-rate", "20", "--source-rate-burst", "3"]).sourceLimits!.rate).toEqual({ perSecond: 20, burst: 3 });
    expect(serve(["--mode", "udp", "--source-connections", "4"]).sourceLimits).toEqual({ connections: 4, prefixV6: 64 });
    expect(serve([]).sourceLimits).toBeUndefined();
  });

  test("--mode udp binds udp, flows idle 30 s by default", () => {
    const s = serve(["--mode", "udp", "--proxy-protocol", "v2", "--ports", "53"]);
    expect([s.mode, s.bindings[0]!.protocol, s.idleTimeoutMs, s.proxyProtocol]).toEqual(["udp", "udp", 30_000, "v2"]);
    const c = parseArgs(["--mode", "udp", "--max-flows", "100"]);
    expect(c.kind === "serve" && c.config.maxFlows).toBe(100);
  });

  test("help and version", () => {
    expect(parseArgs(["--help"]).kind).toBe("help");
    expect(parseArgs(["-V"]).kind).toBe("version");
  });

  test("--instance names the instance (default: default); with --config it and --take-over go with the file", () => {
    const flags = parseArgs(["--instance", "edge-2", "--ports", "80"]);
    expect(flags.kind === "serve" && flags.config.instance).toBe("edge-2");
    const plain = parseArgs([]);
    expect(plain.kind === "serve" && plain.config.instance).toBe("default");
    expect(parseArgs(["--config", "/etc/e.toml", "--instance=b", "--take-over"])).toEqual({
      kind: "serve-file",
      file: "/etc/e.toml",
      overrides: { bpffs: undefined, workers: undefined, drainTimeoutMs: undefined, instance: "b", admin: undefined, pidFile: undefined, takeOver: true },
    });
    expect(() => parseArgs(["--instance", "../x"])).toThrow('--instance: "../x": use 1-63 of a-z A-Z 0-9 _ . -');
  });
});
