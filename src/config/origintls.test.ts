// origin_tls and its keys in the config file: per pool, a route's keys over
// its service's, files read and checked once, one-line errors.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../errors";
import { parseConfig } from "./file";

const dir = mkdtempSync(join(tmpdir(), "ep-origintls-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// A real pair (the keys are matched against the certificates with createSecureContext) and a second key.
const openssl = (...args: string[]) => {
  const r = Bun.spawnSync(["openssl", ...args], { stderr: "pipe", cwd: dir });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
};
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=ca.test", "-keyout", "ca.key", "-out", "ca.pem");
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=other.test", "-keyout", "other.key", "-out", "other.pem");
const CA = join(dir, "ca.pem");
const KEY = join(dir, "ca.key");
const OTHER_KEY = join(dir, "other.key");

const service = (lines: string, mode = "tcp") => `[[service]]\nname = "web"\nmode = "${mode}"\n${lines}\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 80\n`;
const parse = (text: string) => parseConfig(text, "edgeproxy.toml", { readFile: (p) => readFileSync(p, "utf8") }).services[0]!;
function error(text: string): string {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).not.toContain("\n");
    return (e as Error).message;
  }
  throw new Error("parsed without error");
}

describe("origin_tls", () => {
  test("off by default; verify with origin_ca, origin_sni and a client certificate", () => {
    expect(parse(service(`origin = "127.0.0.1:443"`)).pool!.tls).toBeUndefined();
    expect(parse(service(`origin = "127.0.0.1:443"\norigin_tls = "off"`)).pool!.tls).toBeUndefined();
    const tls = parse(service(`origin = "127.0.0.1:443"\norigin_tls = "verify"\norigin_ca = "${CA}"\norigin_sni = "origin.example"\norigin_cert = "${CA}"\norigin_key = "${KEY}"`)).pool!.tls!;
    expect(tls.mode).toBe("verify");
    expect(tls.caFile).toBe(CA);
    expect(tls.ca).toBe(readFileSync(CA, "utf8"));
    expect(tls.sni).toBe("origin.example");
    expect(tls.cert).toBe(readFileSync(CA, "utf8"));
    expect(tls.key).toBe(readFileSync(KEY, "utf8"));
    expect(parse(service(`origin = "127.0.0.1:443"\norigin_tls = "insecure"`)).pool!.tls).toEqual({ mode: "insecure" });
  });

  test("http routes: the service's keys are the default; a route's own keys replace them one by one", () => {
    const s = parse(
      service(
        `origin_tls = "verify"\norigin_ca = "${CA}"\norigin = "127.0.0.1:443"\n` +
          `[[service.route]]\npath = "/a"\norigin = "127.0.0.2:443"\n` +
          `[[service.route]]\npath = "/b"\norigin = "127.0.0.3:443"\norigin_sni = "b.example"\n` +
          `[[service.route]]\npath = "/c"\norigin = "127.0.0.4:80"\norigin_tls = "off"\n` +
          `[[service.route]]\npath = "/d"`,
        "http",
      ),
    );
    const byPath = Object.fromEntries(s.http!.routes.map((r) => [r.path, r.pool?.tls]));
    expect(byPath["/a"]).toEqual({ mode: "verify", caFile: CA, ca: readFileSync(CA, "utf8") });
    expect(byPath["/b"]).toEqual({ mode: "verify", caFile: CA, ca: readFileSync(CA, "utf8"), sni: "b.example" });
    expect(byPath["/c"]).toBeUndefined();
    expect(byPath["/d"]).toBeUndefined();
    expect(s.pool!.tls!.mode).toBe("verify");
  });

  test("a service with routes only may set the default", () => {
    const s = parse(service(`origin_tls = "insecure"\n[[service.route]]\npath = "/a"\norigin = "127.0.0.2:443"`, "http"));
    expect(s.pool).toBeUndefined();
    expect(s.http!.routes[0]!.pool!.tls).toEqual({ mode: "insecure" });
  });

  test.each([
    [`origin = "127.0.0.1:443"\norigin_tls = "strict"`, "tcp", /service "web": origin_tls: "strict" is not one of off, verify, insecure$/],
    [`origin = "127.0.0.1:443"\norigin_ca = "${CA}"`, "tcp", /service "web": origin_ca: needs origin_tls = "verify" or "insecure"$/],
    [`origin = "127.0.0.1:443"\norigin_tls = "verify"\norigin_ca = "/nonexistent.pem"`, "tcp", /origin_ca: cannot read "\/nonexistent.pem": ENOENT$/],
    [`origin = "127.0.0.1:443"\norigin_tls = "verify"\norigin_ca = "${KEY}"`, "tcp", /origin_ca: ".*ca.key" holds no PEM certificate$/],
    [`origin = "127.0.0.1:443"\norigin_tls = "verify"\norigin_sni = "10.0.0.1"`, "tcp", /origin_sni: "10.0.0.1" is not a host name \(RFC 6066/],
    [`origin = "127.0.0.1:443"\norigin_tls = "verify"\norigin_sni = "a b"`, "tcp", /origin_sni: "a b" is not a host name/],
    [`origin = "127.0.0.1:443"\norigin_tls = "verify"\norigin_key = "${KEY}"`, "tcp", /origin_cert: is needed with origin_key$/],
    [`origin = "127.0.0.1:443"\norigin_tls = "verify"\norigin_cert = "${CA}"\norigin_key = "${OTHER_KEY}"`, "tcp", /origin_key: ".*other.key" does not go with ".*ca.pem"/],
    [`origin_tls = "verify"`, "tcp", /service "web": origin_tls: applies to origins/],
    [`origin = "127.0.0.1:443"\norigin_tls = "verify"`, "udp", /origin_tls: udp origins get datagrams; there is no TLS to them/],
    [`origin = "127.0.0.1:443"\n[[service.route]]\npath = "/a"\norigin_tls = "verify"`, "http", /route\[1\]\.origin_tls: applies to a pool: set origin or origins too$/],
    [`origin = "127.0.0.1:443"\n[[service.route]]\npath = "/a"\norigin = "127.0.0.2:443"\norigin_sni = "a.example"`, "http", /route\[1\]\.origin_sni: needs origin_tls/],
  ])("%#: %p", (lines, mode, message) => {
    expect(error(service(lines, mode))).toMatch(message);
  });
});
