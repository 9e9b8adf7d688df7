// Origin pools end to end: balancing, active checks, passive ejection, DNS
// re-resolution and port-range mapping, through the real kernel path in a
// namespace of each test's own.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange, greeter, text } from "./helpers/net";
import { dnsServer, hold, holdingOrigin, scrape, workdir, writeConfig, type Held } from "./helpers/pools";
import { UdpClient, udpGreeter } from "./helpers/udp";

const f = proxyFixture();

/** A port nothing listens on now (bound, then closed). */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

const who = async (port = 1000, from?: string) => text(await exchange("192.0.2.1", port, "", 2000, from));

describe("origin pools", () => {
  test("round-robin with weights 1:3 interleaves: every four connections, one to a and three to b", async () => {
    const w = workdir();
    try {
      const a = greeter("127.0.0.1", 0, "a");
      const b = greeter("127.0.0.1", 0, "b");
      f.servers.push(a, b);
      writeConfig(w, { origins: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port} weight=3`], ports: "1000-1099" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const seq: string[] = [];
      for (let i = 0; i < 80; i++) seq.push(await who(1000 + (i % 100)));
      for (let i = 0; i < 80; i += 4) expect(seq.slice(i, i + 4).sort()).toEqual(["a", "b", "b", "b"]);
    } finally {
      w.done();
    }
  }, 30_000);

  test("least-connections sends new connections to the origin with fewer held open", async () => {
    const w = workdir();
    const held: Held[] = [];
    try {
      const a = holdingOrigin("a");
      const b = holdingOrigin("b");
      f.servers.push(a, b);
      writeConfig(w, { origins: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], balance: "least-connections", ports: "1000" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      for (let i = 0; i < 4; i++) held.push(await hold("192.0.2.1", 1000));
      expect(held.map((h) => h.name).sort()).toEqual(["a", "a", "b", "b"]);
      // End both of b's: round-robin would alternate, least-connections fills b back up first.
      for (const h of held.filter((x) => x.name === "b")) h.close();
      const deadline = Date.now() + 3000;
      const m = async () => (await scrape(w.admin))("edgeproxy_origin_active", { origin: `127.0.0.1:${b.port}`, address: "127.0.0.1" });
      while ((await m()) !== 0 && Date.now() < deadline) await Bun.sleep(20);
      expect(await m()).toBe(0);
      const next: Held[] = [];
      for (let i = 0; i < 2; i++) next.push(await hold("192.0.2.1", 1000));
      held.push(...next);
      expect(next.map((h) => h.name)).toEqual(["b", "b"]);
      const third = await hold("192.0.2.1", 1000);
      held.push(third);
      expect(["a", "b"]).toContain(third.name);
    } finally {
      for (const h of held) h.close();
      w.done();
    }
  }, 30_000);

  test("hash: a client always reaches the same origin; different clients spread over all three", async () => {
    const w = workdir();
    try {
      const origins = ["a", "b", "c"].map((n) => greeter("127.0.0.1", 0, n));
      f.servers.push(...origins);
      writeConfig(w, { origins: origins.map((o) => `127.0.0.1:${o.port}`), balance: "hash", ports: "1000-1099" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const byClient = new Map<string, Set<string>>();
      for (let c = 10; c < 40; c++) {
        const from = `127.0.0.${c}`;
        const seen = new Set<string>();
        // Different source ports and edge ports each time: only the address is hashed.
        for (let i = 0; i < 4; i++) seen.add(await who(1000 + c + i, from));
        byClient.set(from, seen);
      }
      for (const [from, seen] of byClient) expect({ from, seen: [...seen] }).toEqual({ from, seen: [expect.stringMatching(/^[abc]$/)] });
      const counts = new Map<string, number>();
      for (const seen of byClient.values()) for (const n of seen) counts.set(n, (counts.get(n) ?? 0) + 1);
      expect([...counts.keys()].sort()).toEqual(["a", "b", "c"]);
      for (const n of counts.values()) expect(n).toBeGreaterThanOrEqual(3);
    } finally {
      w.done();
    }
  }, 30_000);

  test("active checks: a dead origin is out within interval x fall, and back within interval x rise of its return", async () => {
    const w = workdir();
    const INTERVAL = 200;
    try {
      let a = greeter("127.0.0.1", 0, "a");
      const port = a.port;
      const b = greeter("127.0.0.1", 0, "b");
      f.servers.push(b);
      // Passive ejection off (a huge threshold), so only the checks take a out.
      writeConfig(w, {
        origins: [`127.0.0.1:${port}`, `127.0.0.1:${b.port}`],
        ports: "1000-1099",
        extra: `health = { interval = "${INTERVAL}ms", timeout = "100ms", fall = 2, rise = 2 }\neject = { failures = 1000000, duration = "1s" }`,
      });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(new Set([await who(), await who()])).toEqual(new Set(["a", "b"]));

      a.stop(true);
      const killed = Date.now();
      let lastFailure = killed;
      let okInRow = 0;
      for (let i = 0; i < 500 && okInRow < 20 && Date.now() - killed < 5000; i++) {
        const got = await who();
        if (got === "b") okInRow++;
        else {
          okInRow = 0;
          lastFailure = Date.now();
        }
        await Bun.sleep(5);
      }
      expect(okInRow).toBe(20);
      const outAfter = lastFailure - killed;
      const up = async () => (await scrape(w.admin))("edgeproxy_origin_up", { origin: `127.0.0.1:${port}`, address: "127.0.0.1" });
      expect(await up()).toBe(0);
      // fall checks, each up to 10% late, plus one connect's round trip.
      expect(outAfter).toBeLessThan(INTERVAL * 2 * 1.1 + 100);

      a = greeter("127.0.0.1", port, "a");
      f.servers.push(a);
      const back = Date.now();
      let first = 0;
      for (let i = 0; i < 500 && !first && Date.now() - back < 5000; i++) {
        if ((await who()) === "a") first = Date.now();
        await Bun.sleep(5);
      }
      expect(first).toBeGreaterThan(0);
      expect(first - back).toBeLessThan(INTERVAL * 2 * 1.1 + 100);
      expect(await up()).toBe(1);
      console.log(`active checks (interval ${INTERVAL}ms, fall 2, rise 2): out ${outAfter}ms after it died, back ${first - back}ms after it returned`);
    } finally {
      w.done();
    }
  }, 30_000);

  test("passive ejection: consecutive connect failures take an origin out for the duration, then it is tried again", async () => {
    const w = workdir();
    try {
      const a = greeter("127.0.0.1", 0, "a");
      const deadPort = freePort();
      f.servers.push(a);
      writeConfig(w, { origins: [`127.0.0.1:${a.port}`, `127.0.0.1:${deadPort}`], ports: "1000-1099", extra: `eject = { failures = 2, base_duration = "1500ms", duration = "1500ms" }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const first = [];
      for (let i = 0; i < 4; i++) first.push(await who());
      // The refused connects reset the client: it sees no bytes.
      expect(first).toEqual(["a", "", "a", ""]);
      const ejectedAt = Date.now();
      const during: string[] = [];
      while (Date.now() - ejectedAt < 1000) during.push(await who());
      expect(during.length).toBeGreaterThan(10);
      expect(new Set(during)).toEqual(new Set(["a"]));
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_ejections_total", { origin: `127.0.0.1:${deadPort}`, address: "127.0.0.1" })).toBe(1);
      expect(m("edgeproxy_origin_up", { origin: `127.0.0.1:${deadPort}`, address: "127.0.0.1" })).toBe(0);
      expect(m("edgeproxy_origin_errors_total", { class: "refused" })).toBe(2);

      f.servers.push(greeter("127.0.0.1", deadPort, "b"));
      await Bun.sleep(Math.max(0, ejectedAt + 1600 - Date.now()));
      const after = [await who(), await who()];
      expect(after.sort()).toEqual(["a", "b"]);
      expect(f.ep.stderr).toMatch(/service p: origin 127\.0\.0\.1:\d+ ejected for 1500ms after 2 failed connects \(last: refused\)/);
    } finally {
      w.done();
    }
  }, 30_000);

  test("an origin name is re-resolved when its TTL expires; when DNS fails, the last good address stays", async () => {
    const w = workdir();
    const resolv = join(w.dir, "resolv.conf");
    let mounted = false;
    const state = { answer: ["127.0.0.2"], ttl: 1 };
    const dns = await dnsServer("origin.pools.test", state);
    try {
      // Only this test's mount namespace (bun test runs under unshare --mount) sees it.
      writeFileSync(resolv, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
      const m = Bun.spawnSync(["mount", "--bind", resolv, "/etc/resolv.conf"], { stderr: "pipe" });
      expect(m.stderr.toString()).toBe("");
      mounted = true;
      const two = greeter("127.0.0.2", 0, "two");
      const three = greeter("127.0.0.3", two.port, "three");
      f.servers.push(two, three);
      writeConfig(w, { origins: [`origin.pools.test:${two.port}`], ports: "1000" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(await who()).toBe("two");

      state.answer = ["127.0.0.3"];
      const changed = Date.now();
      let moved = 0;
      for (let i = 0; i < 200 && !moved && Date.now() - changed < 5000; i++) {
        if ((await who()) === "three") moved = Date.now() - changed;
        else await Bun.sleep(20);
      }
      expect(moved).toBeGreaterThan(0);
      // A TTL of 1s, plus the resolution and a connect.
      expect(moved).toBeLessThan(2000);
      expect(dns.queries).toBeGreaterThanOrEqual(2);

      dns.socket.close();
      const failed = Date.now();
      // The resolver's own timeouts and retries decide when a dead server counts as failed.
      while (!f.ep.stderr.includes("cannot resolve") && Date.now() - failed < 15_000) await Bun.sleep(100);
      console.log(`dns: server gone, failure reported after ${Date.now() - failed}ms`);
      expect(await who()).toBe("three");
      expect(f.ep.stderr).toMatch(/service p: origin origin\.pools\.test: cannot resolve origin\.pools\.test: .*; keeping 127\.0\.0\.3/);
      expect((await scrape(w.admin))("edgeproxy_origin_resolve_failures_total", { origin: `origin.pools.test:${two.port}` })).toBeGreaterThanOrEqual(1);
      console.log(`dns: new address in use ${moved}ms after the answer changed (TTL 1s)`);
    } finally {
      dns.socket.close();
      if (mounted) Bun.spawnSync(["umount", "/etc/resolv.conf"]);
      w.done();
    }
  }, 30_000);

  test("udp: flows spread over two origins by weight", async () => {
    const w = workdir();
    const clients: UdpClient[] = [];
    try {
      const a = await udpGreeter("a");
      const b = await udpGreeter("b");
      writeConfig(w, { mode: "udp", origins: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port} weight=3`], ports: "53" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const got: string[] = [];
      for (let i = 0; i < 40; i++) {
        const c = await UdpClient.connect("192.0.2.53", 53);
        clients.push(c);
        got.push(await c.request("hi"));
      }
      expect(got.filter((x) => x === "a").length).toBe(10);
      expect(got.filter((x) => x === "b").length).toBe(30);
      // A flow stays with its origin.
      for (const [i, c] of clients.slice(0, 8).entries()) expect(await c.request("again")).toBe(got[i]!);
      a.socket.close();
      b.socket.close();
    } finally {
      for (const c of clients) c.close();
      w.done();
    }
  }, 30_000);

  test("udp passive ejection: an origin that refuses datagrams (ICMP port unreachable) is taken out, then tried again", async () => {
    const w = workdir();
    const clients: UdpClient[] = [];
    try {
      const a = await udpGreeter("a");
      // Bound and closed: datagrams to it draw ICMP port unreachable.
      const gone = await Bun.udpSocket({ hostname: "127.0.0.1", port: 0 });
      const deadPort = gone.port;
      gone.close();
      writeConfig(w, { mode: "udp", origins: [`127.0.0.1:${a.port}`, `127.0.0.1:${deadPort}`], ports: "53", extra: `eject = { failures = 2, base_duration = "1500ms", duration = "1500ms" }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const ask = async (timeoutMs: number) => {
        const c = await UdpClient.connect("192.0.2.53", 53);
        clients.push(c);
        return c.request("hi", timeoutMs);
      };
      // Round-robin: a, dead, a, dead: two refusals eject the dead one.
      const first = [];
      for (let i = 0; i < 4; i++) first.push(await ask(300));
      expect(first).toEqual(["a", "<timeout>", "a", "<timeout>"]);
      const ejectedAt = Date.now();
      const during: string[] = [];
      while (Date.now() - ejectedAt < 1000 && during.length < 200) during.push(await ask(300));
      expect(during.length).toBeGreaterThan(5);
      expect(new Set(during)).toEqual(new Set(["a"]));
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_ejections_total", { origin: `127.0.0.1:${deadPort}`, address: "127.0.0.1" })).toBe(1);
      expect(m("edgeproxy_udp_drops_total", { reason: "origin_refused" })).toBe(2);
      const b = await udpGreeter("b", deadPort);
      await Bun.sleep(Math.max(0, ejectedAt + 1600 - Date.now()));
      expect([await ask(1000), await ask(1000)].sort()).toEqual(["a", "b"]);
      a.socket.close();
      b.socket.close();
    } finally {
      for (const c of clients) c.close();
      w.done();
    }
  }, 30_000);

  test("port ranges map by offset: edge 1005 reaches origin 3005, for tcp and for udp", async () => {
    const w = workdir();
    try {
      for (const p of [3000, 3005, 3099]) f.servers.push(greeter("127.0.0.1", p, `tcp ${p}`));
      writeConfig(w, { origins: ["127.0.0.1:3000-3099"], ports: "1000-1099" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect([await who(1005), await who(1000), await who(1099)]).toEqual(["tcp 3005", "tcp 3000", "tcp 3099"]);
      expect(await f.ep.stop()).toBe(0);

      const u = await Promise.all([3000, 3005, 3099].map((p) => udpGreeter(`udp ${p}`, p)));
      writeConfig(w, { mode: "udp", origins: ["127.0.0.1:3000-3099"], ports: "1000-1099" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const got: string[] = [];
      for (const p of [1005, 1000, 1099]) {
        const c = await UdpClient.connect("192.0.2.1", p);
        got.push(await c.request("x"));
        c.close();
      }
      expect(got).toEqual(["udp 3005", "udp 3000", "udp 3099"]);
      for (const s of u) s.socket.close();
    } finally {
      w.done();
    }
  }, 30_000);
});
