// A udp origin whose path reports an ICMP error other than port unreachable
// (a firewall's "administratively prohibited": EHOSTUNREACH on the flow's
// connected origin socket, udp(7)). The error comes first from a read, ahead
// of datagrams queued before it: those must still reach the client (the
// flow sockets are edge-triggered: no later event would tell of them).
// edgeproxy is stopped (SIGSTOP) while the origin's reply and the ICMP error
// are queued, so both are there when it reads.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { scrape, workdir, writeConfig } from "./helpers/pools";
import { UdpClient, udpOrigin, type Received } from "./helpers/udp";

const f = proxyFixture();
const ORIGIN_PORT = 9000;

/**
 * An ICMP destination unreachable, code 13 (communication administratively prohibited, RFC 1812
 * §5.2.7.1: what a filtering firewall sends), to the socket 127.0.0.1:`from` that sent a datagram
 * to 127.0.0.1:`to`: it embeds that datagram's IP and UDP headers (RFC 792). Sent with a raw
 * socket (python3: Bun has none).
 */
function icmpProhibited(from: number, to: number): void {
  const py = `
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
lo = socket.inet_aton('127.0.0.1')
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 32, 0, 0, 64, 17, 0, lo, lo)
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
icmp = struct.pack('!BBHI', 3, 13, 0, 0) + ip + struct.pack('!HHHH', int(sys.argv[1]), int(sys.argv[2]), 12, 0)
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).sendto(icmp, ('127.0.0.1', 0))
`;
  const p = Bun.spawnSync(["python3", "-c", py, String(from), String(to)], { stderr: "pipe" });
  expect(p.stderr.toString()).toBe("");
  expect(p.exitCode).toBe(0);
}

/** Until every thread of `pid` is stopped (SIGSTOP takes effect asynchronously), at most 2 s. */
async function stopped(pid: number): Promise<void> {
  const state = (tid: string) => /\) (\w)/.exec(readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8"))?.[1];
  for (let i = 0; i < 100; i++) {
    if (readdirSync(`/proc/${pid}/task`).every((t) => state(t) === "T")) return;
    await Bun.sleep(20);
  }
  throw new Error(`edgeproxy ${pid} did not stop`);
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
      process.kill(f.ep.pid, "SIGSTOP");
      await stopped(f.ep.pid);
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
