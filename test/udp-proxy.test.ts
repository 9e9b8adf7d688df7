// UDP end to end: edgeproxy --mode udp in a namespace of each test's own,
// connected UDP clients (which accept replies only from the address they
// sent to), origins that record what they get.
import { describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { pool, randomPorts } from "./helpers/net";
import { UdpClient, udpExchange, udpOrigin, udpText } from "./helpers/udp";

const f = proxyFixture();

describe("udp proxy", () => {
  test("200+ random ports on 3 addresses of a /24 and of a /64 reach the origin; replies reach connected clients", async () => {
    const origin = await udpOrigin();
    f.ep = await EdgeproxyProcess.start([
      "--mode", "udp", "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`,
    ]);
    const ports = randomPorts(200, 11);
    const targets = ["192.0.2.1", "192.0.2.77", "192.0.2.254", "2001:db8::1", "2001:db8::beef", "2001:db8::ffff:ffff:ffff:fffe"].flatMap((host) =>
      ports.map((port) => ({ host, port })),
    );
    expect(targets.length).toBeGreaterThanOrEqual(6 * 202);
    const failures = (
      await pool(targets, 64, async ({ host, port }) => {
        const payload = `${host} ${port} ${randomBytes(8).toString("hex")}`;
        const got = udpText(await udpExchange(host, port, payload));
        return got === payload ? undefined : `${host} ${port}: ${got}`;
      })
    ).filter(Boolean);
    expect(failures).toEqual([]);
    expect(origin.received.length).toBe(targets.length);
    origin.socket.close();
  }, 60_000);

  test("without an origin the built-in responder echoes, IPv4 and IPv6, up to 65,507 bytes intact", async () => {
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53,5000-6000", "--prefix", "192.0.2.0/24", "--prefix", "2001:db8::/64"]);
    expect(udpText(await udpExchange("192.0.2.53", 53, "v4 echo"))).toBe("v4 echo");
    expect(udpText(await udpExchange("2001:db8::53", 5999, "v6 echo"))).toBe("v6 echo");
    const big = randomBytes(65_507);
    const got = await udpExchange("192.0.2.53", 5000, big);
    expect(got.kind === "data" && Buffer.from(got.bytes).equals(big)).toBe(true);
  }, 20_000);

  test("UDP sockets already bound in the ranges are left alone and reported", async () => {
    const ordinary = await udpOrigin("192.0.2.10", () => "ordinary");
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "1-65535", "--prefix", "192.0.2.0/24"]);
    expect(f.ep.stderr).toContain(`left alone 1 already-listening socket(s): udp 192.0.2.10:${ordinary.port}`);
    expect(udpText(await udpExchange("192.0.2.10", ordinary.port, "hi"))).toBe("ordinary");
    expect(udpText(await udpExchange("192.0.2.11", ordinary.port, "hi"))).toBe("hi");
    ordinary.socket.close();
  }, 20_000);

  test("an idle UDP-only server does not spin", async () => {
    // Regression: with nothing but signal handlers referenced, Bun's loop spun a core at 100%.
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24"]);
    const ticks = () => readFileSync(`/proc/${f.ep!.pid}/stat`, "utf8").split(") ")[1]!.split(" ").slice(11, 13).map(Number).reduce((a, b) => a + b);
    await Bun.sleep(300);
    const t0 = ticks();
    await Bun.sleep(1000);
    // A spinning loop takes ~100 ticks a second; an idle one takes a few at most.
    expect(ticks() - t0).toBeLessThan(30);
  }, 20_000);

  test("an origin without a port gets the port the client sent to", async () => {
    const origins = await Promise.all([7001, 7050].map(() => udpOrigin("127.0.0.1", (d) => `origin saw ${d.bytes.length} bytes`)));
    // Port-preserving: bind the range onto the origins' own ports.
    const [a, b] = origins.map((o) => o.port);
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", `${a},${b}`, "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1"]);
    expect(udpText(await udpExchange("192.0.2.3", a!, "abc"))).toBe("origin saw 3 bytes");
    expect(udpText(await udpExchange("192.0.2.4", b!, "abcd"))).toBe("origin saw 4 bytes");
    expect([origins[0]!.received.length, origins[1]!.received.length]).toEqual([1, 1]);
    for (const o of origins) o.socket.close();
  }, 20_000);

  test("200 concurrent flows to one address and port stay apart over 5 rounds each", async () => {
    // The origin answers with what it got and the source port it got it from:
    // each flow must come from its own origin-side socket.
    const origin = await udpOrigin("127.0.0.1", (d) => `${Buffer.from(d.bytes).toString()} via ${d.port}`);
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
    const clients = await Promise.all(Array.from({ length: 200 }, () => UdpClient.connect("192.0.2.53", 53)));
    const upstreamPortOf = new Map<number, number>();
    let retries = 0;
    for (let round = 0; round < 5; round++) {
      // UDP may drop under load (the test origin's socket has the default
      // 208 KiB receive buffer and takes 200 datagrams at once), so a client
      // asks again once, as a resolver would, and like a resolver matches the
      // answer to the question (a late answer to the first ask is skipped
      // later); what is checked is which flow answers.
      const ask = async (c: UdpClient, payload: string) => {
        c.send(payload);
        let resent = false;
        for (let reads = 0; reads < 10; reads++) {
          const got = await c.next(resent ? 3000 : 1500);
          if (got === undefined) {
            if (resent) return "<timeout>";
            resent = true;
            retries++;
            c.send(payload);
            continue;
          }
          const text = Buffer.from(got).toString();
          if (text.startsWith(`${payload} via `)) return text;
        }
        return "<no matching answer>";
      };
      const replies = await Promise.all(clients.map((c, i) => ask(c, `client ${i} round ${round}`)));
      replies.forEach((r, i) => {
        const m = /^client (\d+) round (\d+) via (\d+)$/.exec(r);
        expect(m && [Number(m[1]), Number(m[2])]).toEqual([i, round]);
        const via = Number(m![3]);
        if (round === 0) upstreamPortOf.set(i, via);
        else expect(via).toBe(upstreamPortOf.get(i)!);
      });
    }
    expect(new Set(upstreamPortOf.values()).size).toBe(200);
    expect(retries).toBeLessThan(20);
    for (const c of clients) c.close();
    origin.socket.close();
  }, 30_000);
});
