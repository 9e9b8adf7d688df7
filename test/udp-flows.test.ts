// UDP flows: idle expiry, the flow cap under a flood of distinct sources,
// PROXY v2 and SPP headers checked by a parsing origin, and tcp and udp
// services on the same ports. Each test in a namespace of its own.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { parseAddress } from "../src/config/address";
import { libc } from "../src/system/libc";
import { encodeSockaddr } from "../src/system/sockaddr";
import { bindTo, IP_FREEBIND, openUdpSocket, setIntOption, SOL_IP } from "../src/system/udp";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange, text } from "./helpers/net";
import { ip } from "./helpers/netns";
import { parseProxyV2, parseSpp } from "./helpers/proxyheaders";
import { UdpClient, udpOrigin } from "./helpers/udp";

const f = proxyFixture();

function workdir() {
  const dir = mkdtempSync(join(tmpdir(), "ep-udp-"));
  return { dir, admin: join(dir, "admin.sock"), file: join(dir, "edgeproxy.toml"), done: () => rmSync(dir, { recursive: true, force: true }) };
}

type Family = { name: string; metrics: { labels?: Record<string, string>; value: string }[] };

/** One scrape of /metrics; read samples by name and labels (service "default" unless given). */
async function scrape(adminPath: string): Promise<(name: string, labels?: Record<string, string>) => number> {
  const res = await fetch("http://localhost/metrics", { unix: adminPath } as RequestInit);
  const families = parsePrometheusTextFormat(await res.text()) as Family[];
  return (name, labels = {}) => {
    const want: Record<string, string> = { service: "default", ...labels };
    const m = families.find((x) => x.name === name)?.metrics.find((s) => Object.entries(want).every(([k, v]) => s.labels?.[k] === v));
    if (!m) throw new Error(`no ${name} ${JSON.stringify(want)}`);
    return Number(m.value);
  };
}

const metric = async (adminPath: string, name: string, labels?: Record<string, string>) => (await scrape(adminPath))(name, labels);

/** UDP sockets bound to 192.0.2.53:53 in this namespace: the flows' client-side sockets (/proc/net/udp, hex address in host order). */
const flowSockets = () => readFileSync("/proc/net/udp", "utf8").split("\n").filter((l) => /^\s*\d+: 350200C0:0035 /.test(l)).length;

async function eventually(what: () => Promise<boolean>, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await what()) return true;
    await Bun.sleep(50);
  }
  return what();
}

describe("udp flows", () => {
  test("idle flows expire and their sockets close; the client's next datagram makes a new flow", async () => {
    const w = workdir();
    try {
      const origin = await udpOrigin();
      f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--idle-timeout", "300ms", "--admin", w.admin]);
      // The data plane's thread idles first (its first sweep, within a second, finds no flow: it then waits for events
      // alone, src/proxy/udp/worker.ts); the flow's deadline must still be swept.
      await Bun.sleep(1200);
      const c = await UdpClient.connect("192.0.2.53", 53);
      expect(await c.request("one")).toBe("one");
      expect(await c.request("two")).toBe("two");
      // Watched from /proc, not the admin API: an admin read wakes the data plane's thread (a sync message, and the
      // dashboard's sampling it starts, every second), which would sweep then; the flow's own deadline must do it.
      expect(flowSockets()).toBe(1);
      expect(await eventually(async () => flowSockets() === 0, 3000)).toBe(true);
      expect(await metric(w.admin, "edgeproxy_udp_flows_active")).toBe(0);
      expect(await metric(w.admin, "edgeproxy_udp_flows_closed_total", { reason: "idle" })).toBe(1);
      expect(flowSockets()).toBe(0);
      expect(await c.request("three")).toBe("three");
      expect(await metric(w.admin, "edgeproxy_udp_flows_total")).toBe(2);
      expect(origin.received.map((d) => d.port)[2]).not.toBe(origin.received[0]!.port);
      c.close();
      origin.socket.close();
    } finally {
      w.done();
    }
  }, 20_000);

  test("the flow cap holds under 50,000 distinct sources; confirmed flows survive, new clients still get in, memory stays bounded", async () => {
    const w = workdir();
    const CAP = 1000;
    const SOURCES = 50_000;
    try {
      // The origin never answers the flood (spoofed sources would not hear it either).
      const origin = await udpOrigin("127.0.0.1", (d) => (Buffer.from(d.bytes).toString().startsWith("legit") ? d.bytes : undefined));
      f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--max-flows", String(CAP), "--admin", w.admin]);
      const steady = await UdpClient.connect("192.0.2.53", 53);
      expect(await steady.request("legit 1")).toBe("legit 1");
      expect(await steady.request("legit 2")).toBe("legit 2");
      const steadyUpstream = origin.received[0]!.port;
      await Bun.sleep(300);
      const rssBefore = f.ep.rssKiB();

      // 50,000 sources: 198.18.0.0/16 routed to this namespace, one socket each, one datagram each,
      // from port 20000: below the ephemeral range, so no wildcard socket bound by chance (a
      // resolver's, say) holds it.
      ip("route", "add", "local", "198.18.0.0/16", "dev", "lo");
      const dst = encodeSockaddr({ family: 4, addr: parseAddress("192.0.2.53")!, port: 53 });
      const payload = Buffer.from("flood");
      let maxActive = 0;
      const deadline = Date.now() + 60_000;
      for (let i = 0; i < SOURCES && Date.now() < deadline; i++) {
        const sock = openUdpSocket(4, "flood");
        const fd = sock.raw;
        setIntOption(fd, SOL_IP, IP_FREEBIND, 1, "flood");
        bindTo(fd, { family: 4, addr: Uint8Array.of(198, 18, i >> 8, i & 255), port: 20000 }, "flood");
        libc.sendto(fd, payload, payload.length, 0, dst, dst.length);
        sock.close();
        if (i % 5000 === 4999) {
          maxActive = Math.max(maxActive, await metric(w.admin, "edgeproxy_udp_flows_active"));
          expect(await steady.request(`legit during ${i}`)).toBe(`legit during ${i}`);
        }
      }
      // Let the listener's queue drain: figures read while the worker runs may be a flow apart.
      let m = await scrape(w.admin);
      for (let settled = false, tries = 0; !settled && tries < 50; tries++) {
        await Bun.sleep(200);
        const next = await scrape(w.admin);
        settled = next("edgeproxy_udp_flows_total") === m("edgeproxy_udp_flows_total");
        m = next;
      }
      maxActive = Math.max(maxActive, m("edgeproxy_udp_flows_active"));
      const made = m("edgeproxy_udp_flows_total");
      const evicted = m("edgeproxy_udp_flows_closed_total", { reason: "evicted" });
      expect(maxActive).toBeLessThanOrEqual(CAP);
      // Many sources got a flow in turn; the kernel drops the rest when the listener's queue is full.
      expect(made).toBeGreaterThan(SOURCES / 4);
      // Every flow beyond the cap was made by evicting a one-datagram flow, none refused.
      expect(evicted).toBe(made - m("edgeproxy_udp_flows_active"));
      expect(m("edgeproxy_udp_drops_total", { reason: "flow_limit" })).toBe(0);
      // The steady client's flow was never evicted: same origin-side socket throughout.
      expect(await steady.request("legit after")).toBe("legit after");
      expect(new Set(origin.received.filter((d) => Buffer.from(d.bytes).toString().startsWith("legit")).map((d) => d.port))).toEqual(new Set([steadyUpstream]));
      const late = await UdpClient.connect("192.0.2.53", 53);
      expect(await late.request("legit newcomer")).toBe("legit newcomer");
      const fds = readdirSync(`/proc/${f.ep.pid}/fd`).length;
      expect(fds).toBeLessThan(2 * CAP + 100);
      const grown = (f.ep.rssKiB() - rssBefore) / 1024;
      console.log(`flood: ${made} flows made, ${evicted} evicted, at most ${maxActive} active, ${fds} fds, RSS +${grown.toFixed(1)} MiB`);
      expect(grown).toBeLessThan(64);
      steady.close();
      late.close();
      origin.socket.close();
    } finally {
      w.done();
    }
  }, 120_000);

  test("when every flow is confirmed, a new flow is refused and counted", async () => {
    const w = workdir();
    try {
      const origin = await udpOrigin();
      f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--max-flows", "2", "--admin", w.admin]);
      const clients = await Promise.all([1, 2, 3].map(() => UdpClient.connect("192.0.2.53", 53)));
      for (const c of clients.slice(0, 2)) {
        expect(await c.request("a")).toBe("a");
        expect(await c.request("b")).toBe("b");
      }
      expect(await clients[2]!.request("c", 500)).toBe("<timeout>");
      const m = await scrape(w.admin);
      expect(m("edgeproxy_udp_drops_total", { reason: "flow_limit" })).toBe(1);
      expect([m("edgeproxy_udp_flows_active"), m("edgeproxy_udp_flows_total")]).toEqual([2, 2]);
      for (const c of clients) c.close();
      origin.socket.close();
    } finally {
      w.done();
    }
  }, 20_000);

  test("PROXY v2: the origin parses the client and edge addresses on a flow's first datagram only, IPv4 and IPv6", async () => {
    const origin = await udpOrigin("127.0.0.1", (d) => {
      const h = parseProxyV2(d.bytes);
      return h ? JSON.stringify({ ...h, payload: Buffer.from(h.payload).toString() }) : `plain ${Buffer.from(d.bytes).toString()}`;
    });
    f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "1000-2000", "--prefix", "192.0.2.0/24", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`, "--proxy-protocol", "v2"]);
    for (const [host, port] of [["192.0.2.40", 1234], ["2001:db8::40", 1999]] as const) {
      const c = await UdpClient.connect(host, port);
      const first = JSON.parse(await c.request("hello"));
      expect(first).toEqual({ transport: "dgram", source: c.local.address, sourcePort: c.local.port, destination: host, destinationPort: port, payload: "hello" });
      expect(await c.request("again")).toBe("plain again");
      c.close();
    }
    origin.socket.close();
  }, 20_000);

  test("SPP: the origin parses the 38-byte header on every datagram; its replies' headers are stripped; replies without one are dropped and counted", async () => {
    const w = workdir();
    try {
      const seen: string[] = [];
      const origin = await udpOrigin("127.0.0.1", (d) => {
        const h = parseSpp(d.bytes);
        if (!h) return "no header";
        const payload = Buffer.from(h.payload).toString();
        seen.push(`${h.source}:${h.sourcePort}>${h.destination}:${h.destinationPort} ${payload}`);
        // An SPP origin answers with the header first (Spectrum strips it).
        return payload === "bare" ? "reply without header" : Buffer.concat([d.bytes.subarray(0, 38), Buffer.from(`re: ${payload}`)]);
      });
      f.ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "1000-2000", "--prefix", "192.0.2.0/24", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`, "--proxy-protocol", "spp", "--admin", w.admin]);
      const v4 = await UdpClient.connect("192.0.2.41", 1053);
      const v6 = await UdpClient.connect("2001:db8::41", 1054);
      for (const c of [v4, v6]) {
        expect(await c.request("one")).toBe("re: one");
        expect(await c.request("two")).toBe("re: two");
      }
      expect(seen).toEqual([
        `${v4.local.address}:${v4.local.port}>192.0.2.41:1053 one`,
        `${v4.local.address}:${v4.local.port}>192.0.2.41:1053 two`,
        `${v6.local.address}:${v6.local.port}>2001:db8::41:1054 one`,
        `${v6.local.address}:${v6.local.port}>2001:db8::41:1054 two`,
      ]);
      expect(await v4.request("bare", 500)).toBe("<timeout>");
      expect(await metric(w.admin, "edgeproxy_udp_drops_total", { reason: "bad_header" })).toBe(1);
      // With the header, a 65,507-byte payload no longer fits an IPv4 datagram: dropped and counted, never cut.
      v4.send(new Uint8Array(65_507));
      expect(await eventually(async () => (await metric(w.admin, "edgeproxy_udp_drops_total", { reason: "too_big" })) === 1)).toBe(true);
      v4.close();
      v6.close();
      origin.socket.close();
    } finally {
      w.done();
    }
  }, 20_000);

  test("tcp and udp services on the same ports reach their own sockets", async () => {
    const w = workdir();
    try {
      const tcpOrigin = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (s, d) => void s.write(`tcp: ${d}`) } });
      f.servers.push(tcpOrigin);
      const udp = await udpOrigin("127.0.0.1", (d) => `udp: ${Buffer.from(d.bytes).toString()}`);
      const bind = 'prefixes = ["192.0.2.0/24", "2001:db8::/64"]\nports = "1000-2000"';
      writeFileSync(
        w.file,
        `[admin]\nsocket = "${w.admin}"\n` +
          `[[service]]\nname = "web"\norigin = "127.0.0.1:${tcpOrigin.port}"\n[[service.bind]]\n${bind}\n` +
          `[[service]]\nname = "dns"\nmode = "udp"\norigin = "127.0.0.1:${udp.port}"\n[[service.bind]]\n${bind}\n`,
      );
      f.ep = await EdgeproxyProcess.start(["--config", w.file]);
      for (const [host, port] of [["192.0.2.7", 1000], ["192.0.2.8", 2000], ["2001:db8::7", 1500]] as const) {
        expect(text(await exchange(host, port, "hi"))).toBe("tcp: hi");
        const c = await UdpClient.connect(host, port);
        expect(await c.request("hi")).toBe("udp: hi");
        c.close();
      }
      const m = await scrape(w.admin);
      expect([m("edgeproxy_connections_total", { service: "web" }), m("edgeproxy_udp_flows_total", { service: "dns" })]).toEqual([3, 3]);
      udp.socket.close();
    } finally {
      w.done();
    }
  }, 20_000);

  test("reload: a new origin takes new flows at once, open flows finish on the old one; tcp -> udp swaps the socket", async () => {
    const w = workdir();
    try {
      const a = await udpOrigin("127.0.0.1", (d) => `A ${Buffer.from(d.bytes).toString()}`);
      const b = await udpOrigin("127.0.0.1", (d) => `B ${Buffer.from(d.bytes).toString()}`);
      const tcpOrigin = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (s, d) => void s.write(`tcp ${d}`) } });
      f.servers.push(tcpOrigin);
      const svc = (name: string, mode: string, origin: number, ports: string) =>
        `[[service]]\nname = "${name}"\nmode = "${mode}"\norigin = "127.0.0.1:${origin}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "${ports}"\n`;
      const head = `max_flows = 100\n[admin]\nsocket = "${w.admin}"\n`;
      writeFileSync(w.file, head + svc("dns", "udp", a.port, "53") + svc("flip", "tcp", tcpOrigin.port, "6000"));
      f.ep = await EdgeproxyProcess.start(["--config", w.file]);
      const old = await UdpClient.connect("192.0.2.53", 53);
      expect(await old.request("1")).toBe("A 1");
      expect(text(await exchange("192.0.2.60", 6000, "x"))).toBe("tcp x");

      writeFileSync(w.file, head + svc("dns", "udp", b.port, "53") + svc("flip", "udp", b.port, "6000"));
      const res = await fetch("http://localhost/reload", { method: "POST", unix: w.admin } as RequestInit);
      expect(res.status).toBe(200);
      const fresh = await UdpClient.connect("192.0.2.53", 53);
      expect(await fresh.request("2")).toBe("B 2");
      // The open flow keeps its origin-side socket until it is idle.
      expect(await old.request("3")).toBe("A 3");
      const flipped = await UdpClient.connect("192.0.2.60", 6000);
      expect(await flipped.request("y")).toBe("B y");
      expect((await exchange("192.0.2.60", 6000, "x", 1000)).kind).not.toBe("data");
      for (const c of [old, fresh, flipped]) c.close();
      a.socket.close();
      b.socket.close();
    } finally {
      w.done();
    }
  }, 20_000);
});
