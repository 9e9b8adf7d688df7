import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../errors";
import { parseArgs, SERVE_FLAGS, USAGE } from "./args";
import { CONTROL_FLAGS, parseControl } from "./control";
import { INSTANCE_FLAGS, parseInstanceCommand, type InstanceCommand } from "./instance-commands";
import { tokenize } from "./flags";
import { testPem } from "../config/tls-fixture";

// parseTls checks the key is the certificate's: a real pair.
const dir = mkdtempSync(join(tmpdir(), "ep-flags-"));
const cert = join(dir, "cert.pem");
const key = join(dir, "key.pem");
const pem = testPem();
writeFileSync(cert, pem.cert);
writeFileSync(key, pem.key);
// The origin TLS flags parse their files (createSecureContext): a real self-signed pair from openssl.
const realCert = join(dir, "real-cert.pem");
const realKey = join(dir, "real-key.pem");
const made = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=flags.test", "-keyout", realKey, "-out", realCert], { stderr: "pipe" });
if (made.exitCode !== 0) throw new Error(`openssl req: ${made.stderr.toString()}`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A valid value for every flag that takes one, and the other arguments it
 * needs to be accepted. A flag added to a table without a sample here fails
 * the coverage tests below, so `--flag=value` is checked for every flag.
 */
const SERVE_SAMPLES: Record<string, { value: string; with?: string[] }> = {
  "--config": { value: "/etc/edgeproxy/edgeproxy.toml" },
  "--instance": { value: "edge-1" },
  "--admin": { value: "/run/ep/admin.sock" },
  "--pid-file": { value: "/run/edgeproxy.pid" },
  "--ports": { value: "80,8000-8999" },
  "--prefix": { value: "192.0.2.0/24" },
  "--origin": { value: "127.0.0.1:9000 weight=2" },
  "--balance": { value: "least-connections", with: ["--origin", "127.0.0.1:9000"] },
  "--health-interval": { value: "5s", with: ["--origin", "127.0.0.1:9000"] },
  "--health-timeout": { value: "1s", with: ["--origin", "127.0.0.1:9000", "--health-interval", "5s"] },
  "--health-path": { value: "/ready", with: ["--mode", "http", "--origin", "127.0.0.1:9000", "--health-interval", "5s"] },
  "--health-port": { value: "8080", with: ["--origin", "127.0.0.1:9000", "--health-interval", "5s"] },
  "--mode": { value: "http" },
  "--proxy-protocol": { value: "v2" },
  "--accept-proxy": { value: "10.0.0.0/8" },
  "--tls-cert": { value: cert, with: ["--tls-key", key] },
  "--tls-min-version": { value: "1.3", with: ["--tls-cert", cert, "--tls-key", key] },
  "--tls-ciphers": { value: "ECDHE-RSA-AES128-GCM-SHA256", with: ["--tls-cert", cert, "--tls-key", key] },
  "--tls-key": { value: key, with: ["--tls-cert", cert] },
  "--origin-tls": { value: "verify", with: ["--origin", "127.0.0.1:9000"] },
  "--origin-ca": { value: realCert, with: ["--origin", "127.0.0.1:9000", "--origin-tls", "verify"] },
  "--origin-sni": { value: "origin.example", with: ["--origin", "127.0.0.1:9000", "--origin-tls", "verify"] },
  "--origin-cert": { value: realCert, with: ["--origin", "127.0.0.1:9000", "--origin-tls", "verify", "--origin-key", realKey] },
  "--origin-key": { value: realKey, with: ["--origin", "127.0.0.1:9000", "--origin-tls", "verify", "--origin-cert", realCert] },
  "--first-byte-timeout": { value: "10s", with: ["--mode", "http"] },
  "--max-body-size": { value: "1MiB", with: ["--mode", "http"] },
  "--http2-max-concurrent-streams": { value: "10", with: ["--mode", "http"] },
  "--name": { value: "web" },
  "--workers": { value: "3" },
  "--drain-timeout": { value: "10s" },
  "--bpffs": { value: "/sys/fs/bpf" },
  "--engine": { value: "epoll", with: ["--origin", "127.0.0.1:80"] },
  "--connect-timeout": { value: "2s" },
  "--idle-timeout": { value: "1m" },
  "--max-connections": { value: "1000" },
  "--max-flows": { value: "500" },
  "--source-connections": { value: "10" },
  "--source-rate": { value: "5" },
  "--source-rate-burst": { value: "8", with: ["--source-rate", "5"] },
  "--source-prefix-v6": { value: "48", with: ["--source-connections", "10"] },
  "--proxy-header-timeout": { value: "3s", with: ["--accept-proxy", "10.0.0.0/8"] },
  "--handshake-timeout": { value: "3s", with: ["--tls-cert", cert, "--tls-key", key] },
  "--header-timeout": { value: "3s", with: ["--mode", "http"] },
  "--keepalive-timeout": { value: "3s", with: ["--mode", "http"] },
  "--body-timeout": { value: "3s", with: ["--mode", "http"] },
  "--access-log": { value: "-" },
  "--access-log-sample": { value: "0.5", with: ["--access-log", "-"] },
};

const CONTROL_SAMPLES: Record<string, { value: string; with: string[] }> = {
  "--bpffs": { value: "/sys/fs/bpf", with: [] },
  "--instance": { value: "web", with: [] },
  "--pid": { value: "99", with: [] },
  "--fd": { value: "7", with: [] },
  "--object": { value: "/tmp/dispatcher.bpf.o", with: [] },
};
// Positional arguments each control command needs.
const POSITIONAL: Record<string, string[]> = { bind: ["web", "tcp", "192.0.2.0/24", "80"], unbind: ["web", "tcp", "192.0.2.0/24", "80"], unregister: ["web"], register: ["web", "--pid", "1234", "--fd", "3"] };

const INSTANCE_SAMPLES: Record<string, string> = { "--admin": "/run/ep/admin.sock", "--instance": "web", "--binary": "/usr/local/bin/edgeproxy" };

describe("--flag=value parses as --flag value, for every flag", () => {
  test("every serve flag is in the usage text", () => {
    expect(SERVE_FLAGS.filter((f) => !USAGE.includes(`${f.name}${f.value ? " " : ""}`)).map((f) => f.name)).toEqual([]);
  });

  test("every serve flag has a sample", () => {
    const missing = SERVE_FLAGS.filter((f) => f.value !== undefined && !(f.name in SERVE_SAMPLES)).map((f) => f.name);
    expect(missing).toEqual([]);
  });

  test.each(SERVE_FLAGS.filter((f) => f.value !== undefined).map((f) => f.name))("serve %s", (flag) => {
    const { value, with: rest = [] } = SERVE_SAMPLES[flag]!;
    const spaced = parseArgs([...rest, flag, value]);
    expect(parseArgs([...rest, `${flag}=${value}`])).toEqual(spaced);
    expect(spaced.kind).toMatch(/^serve/);
  });

  test.each(SERVE_FLAGS.filter((f) => f.value === undefined && f.name.startsWith("--")).map((f) => f.name))("serve switch %s takes no value", (flag) => {
    expect(() => parseArgs([`${flag}=yes`])).toThrow(ConfigError);
  });

  const controlCases = Object.entries(CONTROL_FLAGS).flatMap(([command, specs]) => specs.filter((s) => s.value !== undefined).map((s) => [command, s.name] as const));
  test("every control flag has a sample", () => {
    expect(controlCases.filter(([, flag]) => !(flag in CONTROL_SAMPLES))).toEqual([]);
  });

  test.each(controlCases)("%s %s", (command, flag) => {
    const { value, with: rest } = CONTROL_SAMPLES[flag]!;
    const base = [command, ...(POSITIONAL[command] ?? []), ...rest];
    const spaced = parseControl([...base, flag, value]);
    expect(parseControl([...base, `${flag}=${value}`])).toEqual(spaced);
  });

  const instanceCases = Object.entries(INSTANCE_FLAGS).flatMap(([command, specs]) => specs.map((s) => [command as InstanceCommand, s.name] as const));
  test("every instance-command flag has a sample", () => {
    expect(instanceCases.filter(([, flag]) => !(flag in INSTANCE_SAMPLES))).toEqual([]);
  });

  test.each(instanceCases)("%s %s", (command, flag) => {
    const value = INSTANCE_SAMPLES[flag]!;
    const spaced = parseInstanceCommand(command, [flag, value]);
    expect(parseInstanceCommand(command, [`${flag}=${value}`])).toEqual(spaced);
    expect(Object.values(spaced)).toEqual([value]);
  });

  test("upgrade --admin=PATH (a usage error before)", () => {
    expect(parseInstanceCommand("upgrade", ["--admin=/run/ep.sock", "--binary", "/x"])).toEqual({ admin: "/run/ep.sock", binary: "/x" });
  });
});

describe("tokenize", () => {
  const specs = [{ name: "--a", value: "X" }, { name: "--s" }];
  test("values may contain = and start with -", () => {
    expect(tokenize(["--a=b=c", "--a", "-1", "pos", "--s"], specs)).toEqual([{ flag: "--a", value: "b=c" }, { flag: "--a", value: "-1" }, { arg: "pos" }, { flag: "--s" }]);
  });
  test.each([[["--a"]], [["--a="]], [["--s=1"]], [["--b"]], [["--b=1"]]])("%p is one ConfigError", (argv) => {
    expect(() => tokenize(argv, specs, "cmd")).toThrow(ConfigError);
  });
  test("errors name the command and the flag", () => {
    expect(() => tokenize(["--zz=1"], specs, "reload")).toThrow("reload --zz: unknown option (see --help)");
  });
});

describe("instance commands", () => {
  test("a positional argument or a repeated flag is a usage error", () => {
    expect(() => parseInstanceCommand("reload", ["web"])).toThrow("usage: edgeproxy reload [--admin PATH] [--instance NAME]");
    expect(() => parseInstanceCommand("health", ["--instance", "a", "--instance=b"])).toThrow("given twice");
  });
  test("serve: --no-admin and --admin exclude each other; --instance names the default socket", () => {
    expect(() => parseArgs(["--no-admin", "--admin", "/x.sock"])).toThrow(ConfigError);
    const c = parseArgs(["--instance=edge-1"]);
    if (c.kind !== "serve") throw new Error(c.kind);
    expect(c.config.instance).toBe("edge-1");
    expect(c.config.admin).toEqual({ kind: "unix", path: join(process.env.EDGEPROXY_RUN_DIR!, "edge-1.sock") });
    const off = parseArgs(["--no-admin"]);
    expect(off.kind === "serve" && off.config.admin).toEqual({ kind: "off" });
    expect(() => parseArgs(["--instance", "../x"])).toThrow(ConfigError);
    expect(() => parseArgs(["--pid-file", "relative.pid"])).toThrow(ConfigError);
  });
  test("--config combines with the process's own flags only", () => {
    const c = parseArgs(["--config", "/etc/ep/web.toml", "--instance", "w", "--no-admin", "--pid-file=/run/ep.pid"]);
    expect(c).toEqual({ kind: "serve-file", file: "/etc/ep/web.toml", overrides: { instance: "w", admin: { kind: "off" }, pidFile: "/run/ep.pid", bpffs: undefined, workers: undefined, drainTimeoutMs: undefined } });
    expect(() => parseArgs(["--config", "/etc/ep/web.toml", "--ports", "80"])).toThrow(ConfigError);
  });
});
