import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { formatPrefix } from "../config/address";
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
    expect(first(["--origin", "10.0.0.1:3000-4000"])).toEqual({ host: "10.0.0.1", ports: { lo: 3000, hi: 4000 }, weight: 1 });
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
    [["--mode", "http"], /not available yet/],
    [["--mode", "udp", "--connect-timeout", "1s"], /UDP has no connections/],
    [["--proxy-protocol", "spp"], /tcp services take v1 or v2/],
    [["--mode", "udp", "--proxy-protocol", "v1"], /udp services take v2 or spp/],
    [["--max-flows", "0"], /positive whole number/],
    [["--idle-timeout", "soon"], /duration/],
    [["--balance", "random"], /--balance: "random" is not one of/],
    [["--origin", "1.2.3.4:80 weight=0"], /weight=N/],
    [["--origin", "1.2.3.4:90-80"], /port range/],
  ])("%p is rejected", (argv, message) => {
    expect(() => parseArgs(argv as string[])).toThrow(message);
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
});

describe("PROXY protocol and TLS flags", () => {
  test("--accept-proxy lists and repeats; --proxy-protocol v1/v2 for tcp", () => {
    const s = serve(["--accept-proxy", "10.0.0.0/8,2001:db8::/32", "--accept-proxy=192.0.2.1", "--proxy-protocol", "v1", "--origin", "127.0.0.1:1"]);
    expect(s.acceptProxy.map(formatPrefix)).toEqual(["10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32"]);
    expect(s.proxyProtocol).toBe("v1");
    expect(serve([]).acceptProxy).toEqual([]);
    expect(() => serve(["--accept-proxy", "10.0.0.1/8"])).toThrow("--accept-proxy: \"10.0.0.1/8\" has host bits set");
    expect(() => serve(["--mode", "udp", "--accept-proxy", "10.0.0.0/8"])).toThrow("--accept-proxy: UDP datagrams carry no PROXY header");
  });

  test("--tls-cert and --tls-key read PEM files at parse time, with one-line errors", () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-args-"));
    try {
      const cert = join(dir, "c.pem");
      const key = join(dir, "k.pem");
      writeFileSync(cert, "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n");
      writeFileSync(key, "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n");
      const s = serve(["--tls-cert", cert, "--tls-key", key]);
      expect(s.tls).toEqual({ certFile: cert, keyFile: key, cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") });
      expect(serve([]).tls).toBeUndefined();
      expect(() => serve(["--tls-cert", cert])).toThrow("--tls-cert: needs --tls-key too");
      expect(() => serve(["--tls-key", key])).toThrow("--tls-key: needs --tls-cert too");
      expect(() => serve(["--tls-cert", join(dir, "nope"), "--tls-key", key])).toThrow(`--tls-cert: cannot read ${join(dir, "nope")}: ENOENT`);
      expect(() => serve(["--tls-cert", key, "--tls-key", key])).toThrow(`--tls-cert: ${key} holds no PEM certificate`);
      expect(() => serve(["--tls-cert", cert, "--tls-key", cert])).toThrow(`--tls-key: ${cert} holds no PEM private key`);
      expect(() => serve(["--mode", "udp", "--tls-cert", cert, "--tls-key", key])).toThrow("TLS termination is for tcp services");
      expect(() => serve(["--tls-cert", cert, "--tls-key", key, "--accept-proxy", "10.0.0.0/8"])).toThrow("--accept-proxy: cannot be combined with --tls-cert");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
