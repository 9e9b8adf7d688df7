// UDP bursts: flow sockets are edge-triggered and drained in batches
// (src/proxy/udp/engine.ts), so a burst larger than one batch, or than the
// batches one event may read, must still arrive whole and in order, both
// ways. A loop turn's sends are staged and submitted together
// (src/proxy/udp/sendring.ts), so datagrams of many flows and of different
// sizes share one submission: each must reach its own peer, intact, in order. The origin echoes each datagram and, on "burst N", sends N numbered
// datagrams of its own at once.
import { describe, expect, test } from "bun:test";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { UdpClient, udpOrigin } from "./helpers/udp";

const f = proxyFixture();

// Below the default 208 KiB receive buffers with room to spare (a small
// datagram costs ~1 KiB of buffer), so the kernel drops none and order is all
// that can go wrong.
const BURST = 150;

describe("udp bursts", () => {
  test(`${BURST} datagrams sent at once on one flow reach the origin in order; ${BURST} sent back at once reach the client in order`, async () => {
    const origin = await udpOrigin("127.0.0.1", (d) => {
      const text = Buffer.from(d.bytes).toString();
      const m = /^burst (\d+)$/.exec(text);
      if (!m) return undefined;
      for (let i = 0; i < Number(m[1]); i++) origin.socket.send(`reply ${i}`, d.port, d.address);
      return undefined;
    });
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
    const c = await UdpClient.connect("192.0.2.53", 53);
    // The flow exists before the burst, so the burst goes through the flow's own socket.
    c.send("hello");
    const deadline = Date.now() + 3000;
    while (origin.received.length < 1 && Date.now() < deadline) await Bun.sleep(10);
    expect(origin.received.length).toBe(1);
    for (let i = 0; i < BURST; i++) c.send(`request ${i}`);
    const until = Date.now() + 5000;
    while (origin.received.length < BURST + 1 && Date.now() < until) await Bun.sleep(10);
    expect(origin.received.slice(1).map((d) => Buffer.from(d.bytes).toString())).toEqual(Array.from({ length: BURST }, (_, i) => `request ${i}`));
    // One origin-side socket for the whole flow.
    expect(new Set(origin.received.map((d) => d.port)).size).toBe(1);

    c.send(`burst ${BURST}`);
    const got: string[] = [];
    for (let i = 0; i < BURST; i++) {
      const d = await c.next(3000);
      if (!d) break;
      got.push(Buffer.from(d).toString());
    }
    expect(got).toEqual(Array.from({ length: BURST }, (_, i) => `reply ${i}`));
    c.close();
    origin.socket.close();
  }, 20_000);

  test("20 flows each send 8 datagrams of different sizes at once: every one reaches the origin intact and in order per flow, and every echo its own client", async () => {
    const origin = await udpOrigin("127.0.0.1");
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
    const clients = await Promise.all(Array.from({ length: 20 }, () => UdpClient.connect("192.0.2.53", 53)));
    // Every flow exists before the burst (its first exchange), so the burst goes through the flows' own sockets.
    for (const [k, c] of clients.entries()) expect(await c.request(`hello ${k}`)).toBe(`hello ${k}`);
    const payload = (k: number, i: number) => `flow ${k} datagram ${i} `.padEnd(1 + ((k * 8 + i) * 97) % 1400, String.fromCharCode(97 + ((k + i) % 26)));
    // In 8 waves of 20 (a datagram per flow each), a few ms apart: a wave's datagrams reach 20 flow sockets at
    // once and leave in one loop turn's submission; all 160 at once (up to 1.4 kB each, ~2–3 KiB of receive
    // buffer apiece) would overflow the one origin socket's default 208 KiB, and the kernel would drop some
    // there, which says nothing about the proxy (a full suite run failed that way once).
    for (let i = 0; i < 8; i++) {
      for (const [k, c] of clients.entries()) c.send(payload(k, i));
      await Bun.sleep(5);
    }
    for (const [k, c] of clients.entries()) {
      const got: string[] = [];
      for (let i = 0; i < 8; i++) {
        const d = await c.next(3000);
        if (!d) break;
        got.push(Buffer.from(d).toString());
      }
      expect(got).toEqual(Array.from({ length: 8 }, (_, i) => payload(k, i)));
    }
    // At the origin: per source port (one per flow), the flow's datagrams in order.
    const byPort = new Map<number, string[]>();
    for (const d of origin.received) byPort.set(d.port, [...(byPort.get(d.port) ?? []), Buffer.from(d.bytes).toString()]);
    expect(byPort.size).toBe(20);
    for (const seen of byPort.values()) {
      const k = Number(/^hello (\d+)$/.exec(seen[0]!)?.[1]);
      expect(seen).toEqual([`hello ${k}`, ...Array.from({ length: 8 }, (_, i) => payload(k, i))]);
    }
    for (const c of clients) c.close();
    origin.socket.close();
  }, 20_000);
});
