import { describe, expect, test } from "bun:test";
import { parseArgs } from "../cli/args";
import { parseConfig } from "../config/file";
import type { AdminConfig, ServiceConfig } from "../config/service";
import { ConfigError } from "../errors";
import { refuseSelfReach } from "./bindings";

const ADMIN: AdminConfig = { kind: "tcp", host: "127.0.0.1", port: 9901, token: "0123456789abcdef" };

function service(args: string[]): ServiceConfig {
  const c = parseArgs(args);
  if (c.kind !== "serve") throw new Error(c.kind);
  return c.config.services[0]!;
}

async function refusal(admin: AdminConfig, services: ServiceConfig[]): Promise<string> {
  const e = await refuseSelfReach(admin, services).then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(ConfigError);
  expect((e as Error).message).not.toContain("\n");
  return (e as Error).message;
}

describe("the admin listener cannot be reached through a service", () => {
  test.each([
    ["127.0.0.1:9901"],
    ["localhost:9901"],
    ["0.0.0.0:9901"],
    ["[::ffff:127.0.0.1]:9901"],
    ["[::ffff:0.0.0.0]:9901"],
    ["127.0.0.1:9900-9910"],
  ])("origin %s (admin on 127.0.0.1:9901) is refused", async (origin) => {
    const s = service(["--prefix", "192.0.2.0/24", "--ports", origin.endsWith("9910") ? "1000-1010" : "80", "--origin", origin]);
    expect(await refusal(ADMIN, [s])).toMatch(/^service default: origin .* reaches the admin API on 127\.0\.0\.1:9901; clients would be proxied to it/);
  });

  test("a port-preserving origin at the admin address is refused when the service binds the admin port", async () => {
    const s = service(["--prefix", "192.0.2.0/24", "--ports", "80,9000-9999", "--origin", "127.0.0.1"]);
    expect(await refusal(ADMIN, [s])).toBe("service default: origin 127.0.0.1 (port-preserving) reaches the admin API on 127.0.0.1:9901; clients would be proxied to it: use another origin or move the admin listener");
    // Without the admin port among its ports it reaches other ports only.
    await refuseSelfReach(ADMIN, [service(["--prefix", "192.0.2.0/24", "--ports", "80,443", "--origin", "127.0.0.1"])]);
  });

  test("an http route's origin counts as well", async () => {
    const text = `[admin]\nlisten = "[::1]:9901"\ntoken = "0123456789abcdef"\n[[service]]\nname = "web"\nmode = "http"\norigin = "10.0.0.1:80"\n[[service.route]]\npath = "/admin"\norigin = "[::]:9901"\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 80\n`;
    const c = parseConfig(text, "edgeproxy.toml");
    expect(await refusal(c.admin, [...c.services])).toMatch(/^service web: origin \[::\]:9901 reaches the admin API on \[::1\]:9901/);
  });

  test("a binding that steers the admin address and port is refused", async () => {
    expect(await refusal(ADMIN, [service(["--prefix", "127.0.0.0/8", "--ports", "9901"])])).toBe(
      "admin.listen: 127.0.0.1:9901 lies inside the bindings of service default; the admin API must not be reachable from steered ports",
    );
  });

  test("what does not reach it passes: other ports, other loopback addresses, udp, a unix-socket admin", async () => {
    await refuseSelfReach(ADMIN, [service(["--prefix", "192.0.2.0/24", "--ports", "80", "--origin", "127.0.0.1:9902"])]);
    await refuseSelfReach(ADMIN, [service(["--prefix", "192.0.2.0/24", "--ports", "80", "--origin", "127.0.0.2:9901"])]);
    await refuseSelfReach(ADMIN, [service(["--prefix", "192.0.2.0/24", "--ports", "80", "--origin", "[::1]:9901"])]);
    await refuseSelfReach(ADMIN, [service(["--mode", "udp", "--prefix", "192.0.2.0/24", "--ports", "53", "--origin", "127.0.0.1:9901"])]);
    await refuseSelfReach({ kind: "unix", path: "/run/edgeproxy/admin.sock" }, [service(["--prefix", "192.0.2.0/24", "--ports", "80", "--origin", "127.0.0.1:9901"])]);
  });

  test("an origin at 0.0.0.0 loops into bindings of 127.0.0.1 (the kernel dials 127.0.0.1)", async () => {
    const message = await refusal({ kind: "off" }, [service(["--prefix", "127.0.0.1/32", "--ports", "9000-9100", "--origin", "0.0.0.0:9000"])]);
    expect(message).toMatch(/^service default: origin 127\.0\.0\.1:9000 is inside edgeproxy's own bindings/);
  });
});
