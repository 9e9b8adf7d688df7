// edgeproxy end to end: the CLI in a namespace of each test's own, real
// clients and origins, the real kernel path.
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { echoOrigin, exchange, greeter, pool, randomPorts, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";

const f = proxyFixture();
const servers = f.servers;

describe("tcp proxy", () => {
  test("200+ random ports, and 1 and 65535, on 3 addresses of a /24 and of an IPv6 /64 reach the origin, bytes intact both ways", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--ports", "1-65535", "--prefix", "192.0.2.0/24", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`]);
    const ports = randomPorts(200, 7);
    const targets = ["192.0.2.1", "192.0.2.77", "192.0.2.254", "2001:db8::1", "2001:db8::beef", "2001:db8::ffff:ffff:ffff:fffe"].flatMap((host) =>
      ports.map((port) => ({ host, port })),
    );
    expect(targets.length).toBeGreaterThanOrEqual(6 * 202);
    const failures = (
      await pool(targets, 64, async ({ host, port }) => {
        const payload = randomBytes(1 + (port % 3000));
        const got = await exchange(host, port, payload);
        return got.kind === "data" && Buffer.from(got.bytes).equals(payload) ? undefined : `${host} ${port}: ${got.kind}`;
      })
    ).filter(Boolean);
    expect(failures).toEqual([]);
  }, 60_000);

  test("ports outside the ranges and addresses outside the prefixes reach their ordinary listeners", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin, greeter("192.0.2.10", 3000, "ordinary-port"), greeter("192.0.2.200", 1500, "ordinary-prefix"));
    f.ep = await EdgeproxyProcess.start(["--ports", "1000-2000", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`]);
    expect(text(await exchange("192.0.2.10", 1500, "via edgeproxy"))).toBe("via edgeproxy");
    expect(text(await exchange("192.0.2.10", 3000))).toBe("ordinary-port");
    expect(text(await exchange("192.0.2.200", 1500))).toBe("ordinary-prefix");
  }, 20_000);

  test("an origin without a port gets the port the client dialled", async () => {
    for (const p of [7001, 7050, 7100]) servers.push(greeter("127.0.0.1", p, `origin ${p}`));
    f.ep = await EdgeproxyProcess.start(["--ports", "7000-7100", "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1"]);
    expect(text(await exchange("192.0.2.3", 7050))).toBe("origin 7050");
    expect(text(await exchange("192.0.2.4", 7100))).toBe("origin 7100");
    expect(text(await exchange("192.0.2.5", 7001))).toBe("origin 7001");
  }, 20_000);

  test("already-listening sockets are left alone and reported; --take-over steers them", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin, greeter("192.0.2.10", 8080, "specific"), greeter("0.0.0.0", 8081, "wildcard"));
    const args = ["--ports", "8000-8100", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`];
    f.ep = await EdgeproxyProcess.start(args);
    expect(f.ep!.stderr).toMatch(/left alone 2 already-listening socket\(s\): tcp 192\.0\.2\.10:8080, tcp 0\.0\.0\.0:8081/);
    expect(text(await exchange("192.0.2.10", 8080))).toBe("specific");
    expect(text(await exchange("192.0.2.11", 8080, "proxied"))).toBe("proxied");
    expect(text(await exchange("192.0.2.50", 8081))).toBe("wildcard");
    expect(text(await exchange("192.0.2.50", 8082, "proxied"))).toBe("proxied");
    expect(await f.ep!.stop()).toBe(0);

    f.ep = await EdgeproxyProcess.start([...args, "--take-over"]);
    expect(f.ep!.stderr).not.toMatch(/left alone/);
    expect(text(await exchange("192.0.2.10", 8080, "taken"))).toBe("taken");
    expect(text(await exchange("192.0.2.50", 8081, "taken"))).toBe("taken");
  }, 20_000);

  test("the built-in responder: an HTTP page naming both ends, JSON on request, echo for anything else", async () => {
    f.ep = await EdgeproxyProcess.start(["--ports", "1-65535", "--prefix", "192.0.2.0/24,2001:db8::/64"]);
    const page = text(await exchange("192.0.2.9", 8443, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    expect(page).toStartWith("HTTP/1.1 200");
    expect(page).toContain("192.0.2.9:8443");
    // Raw sockets, not fetch(): Bun's HTTP client runs on a thread that stays in the machine's namespace.
    const res = text(await exchange("2001:db8::7", 31337, "GET /hello HTTP/1.1\r\nHost: h\r\nAccept: application/json\r\nConnection: close\r\n\r\n"));
    expect(res).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*content-type: application\/json/i);
    const body = JSON.parse(res.slice(res.indexOf("\r\n\r\n") + 4)) as { destination: string; client: string; path: string };
    expect(body.destination).toBe("[2001:db8::7]:31337");
    expect(body.client).toMatch(/^\[[0-9a-f:]+\]:\d+$/); // the source address the kernel picked
    expect(body.path).toBe("/hello");
    const bytes = randomBytes(200_000);
    const echoed = await exchange("192.0.2.20", 7, bytes);
    expect(echoed.kind).toBe("data");
    expect(Buffer.from((echoed as { bytes: Uint8Array }).bytes).equals(bytes)).toBe(true);
  }, 20_000);
});
