import { describe, expect, test } from "bun:test";
import { parseArgs } from "../cli/args";
import { ConfigError } from "../errors";
import { parseConfig } from "./file";
import { ACCESS_LOG_DEFAULTS } from "./accesslog";

const FILE = "edgeproxy.toml";
const service = (name: string, extra = "") => `[[service]]\nname = "${name}"\norigin = "127.0.0.1:1"\n${extra}\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = ${name === "a" ? 80 : 81}\n`;

function message(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("no error");
}

describe("access_log", () => {
  test("off by default; the top level sets every service's, a service's own keys override it", () => {
    expect(parseConfig(service("a"), FILE).services[0]!.accessLog).toBeUndefined();
    const c = parseConfig(`access_log = "/var/log/ep.log"\naccess_log_sample = 0.5\naccess_log_buffer = "64KiB"\n${service("a")}${service("b", 'access_log = "off"')}`, FILE);
    expect(c.services[0]!.accessLog).toEqual({ path: "/var/log/ep.log", sample: 0.5, connect: false, bufferBytes: 64 * 1024, instance: "edgeproxy" });
    expect(c.services[1]!.accessLog).toBeUndefined();
    const d = parseConfig(`${service("a", 'access_log = "-"\naccess_log_connect = true\naccess_log_sample = 1')}${service("b")}`, FILE);
    expect(d.services[0]!.accessLog).toEqual({ path: "-", sample: 1, connect: true, bufferBytes: ACCESS_LOG_DEFAULTS.bufferBytes, instance: "edgeproxy" });
    expect(d.services[1]!.accessLog).toBeUndefined();
  });

  test("bad values are one line naming the key", () => {
    expect(message(() => parseConfig(`access_log = "relative.log"\n${service("a")}`, FILE))).toBe('edgeproxy.toml: access_log: "relative.log" must be an absolute file path, "-" (stdout) or "off"');
    expect(message(() => parseConfig(`${service("a", "access_log_sample = 1.5")}`, FILE))).toContain('service "a": access_log_sample: 1.5 must be a number from 0 to 1');
    expect(message(() => parseConfig(`${service("a", 'access_log_sample = "half"')}`, FILE))).toContain("access_log_sample");
    expect(message(() => parseConfig(`${service("a", "access_log_buffer = 5")}`, FILE))).toContain('unknown field "access_log_buffer"');
  });

  test("--access-log and --access-log-sample", () => {
    const cmd = parseArgs(["--origin", "127.0.0.1:1", "--access-log", "/tmp/x.log", "--access-log-sample", "0.25"]);
    expect(cmd.kind === "serve" && cmd.config.services[0]!.accessLog).toEqual({ path: "/tmp/x.log", sample: 0.25, connect: false, bufferBytes: ACCESS_LOG_DEFAULTS.bufferBytes, instance: "default" });
    const off = parseArgs(["--access-log", "off"]);
    expect(off.kind === "serve" && off.config.services[0]!.accessLog).toBeUndefined();
    expect(message(() => parseArgs(["--access-log-sample", "0.5"]))).toBe("--access-log-sample: needs --access-log");
    expect(message(() => parseArgs(["--access-log", "/tmp/x", "--access-log-sample", "2"]))).toBe('--access-log-sample: "2" must be a number from 0 to 1 (the share of lines written)');
  });
});
