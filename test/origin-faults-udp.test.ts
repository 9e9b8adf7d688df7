// A udp origin whose path reports an ICMP error other than port unreachable
// (a firewall's "administratively prohibited": EHOSTUNREACH on the flow's
// connected origin socket, udp(7)). The error comes first from a read, ahead
// of datagrams queued before it: those must still reach the client (the
// flow sockets are edge-triggered: no later event would tell of them).
// edgeproxy is stopped (SIGSTOP) while the origin's reply and the ICMP error
// (made here, on a raw socket) are queued, so both are there when it reads.
import { describe, expect, test } from "bun:test";
import { ptr } from "bun:ffi";
import { libc } from "../src/system/libc";
import { encodeSockaddr } from "../src/system/sockaddr";
import { EdgeproxyProcess, sigstop } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { scrape, workdir, writeConfig } from "./helpers/pools";
import { UdpClient, udpOrigin, type Received } from "./helpers/udp";

const f = proxyFixture();
const ORIGIN_PORT = 9000;

/** The Internet checksum (RFC 1071) of `b` (even length). */
function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += b.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum >>> 16) + (sum & 0xffff);
  return ~sum & 0xffff;
}

/**
 * An ICMP destination unreachable, code 13 (communication administratively prohibited, RFC 1812
 * §5.2.7.1: what a filtering firewall sends), to the socket 127.0.0.1:`from` that sent a datagram
 * to 127.0.0.1:`to`: it embeds that datagram's IP and UDP headers (RFC 792). Sent on a raw socket.
 */
function icmpProhibited(from: number, to: number): void {
  const ip = Buffer.from([0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
  ip.writeUInt16BE(checksum(ip), 10);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(from, 0);
  udp.writeUInt16BE(to, 2);
  udp.writeUInt16BE(12, 4);
  const icmp = Buffer.concat([Buffer.from([3, 13, 0, 0, 0, 0, 0, 0]), ip, udp]);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const fd = libc.socket(2 /* AF_INET */, 3 /* SOCK_RAW */, 1 /* IPPROTO_ICMP */);
  expect(fd).toBeGreaterThanOrEqual(0);
  try {
    const to4 = encodeSockaddr({ family: 4, addr: new Uint8Array([127, 0, 0, 1]), port: 0 });
    expect(Number(libc.sendto(fd, ptr(icmp), icmp.length, 0, ptr(to4), to4.length))).toBe(icmp.length);
  } finally {
    libc.close(fd);
  }
}

describe("a udp origin behind a filter that reports an ICMP error", () => {
  test("datagrams the origin sent before the error still reach the client; the flow goes on", async () => {
    const w = workdir();
    let flow: Received | undefined;
    const origin = await udpOrigin("127.0.0.1", (d) => ((flow = d), "r1"), ORIGIN_PORT);
    const c = await UdpClient.connect("192.0.2.1", 7000);
    try {
      writeConfig(w, { mode: "udp", origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(await c.request("first", 2000)).toBe("r1");
      // The flow's origin socket (its address as the origin saw it) gets a reply, then the error, while edgeproxy is stopped.
      await sigstop(f.ep.pid);
      try {
        origin.socket.send("r2", flow!.port, flow!.address);
        await Bun.sleep(50);
        icmpProhibited(flow!.port, ORIGIN_PORT);
        await Bun.sleep(50);
      } finally {
        process.kill(f.ep.pid, "SIGCONT");
      }
      expect(Buffer.from((await c.next(2000)) ?? "<timeout>").toString()).toBe("r2");
      // The flow goes on both ways.
      expect(await c.request("again", 2000)).toBe("r1");
      expect((await scrape(w.admin))("edgeproxy_udp_flows_active")).toBe(1);
    } finally {
      c.close();
      origin.socket.close();
      w.done();
    }
  });
});
