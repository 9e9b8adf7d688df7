// Per-client limits end to end (issue 15), connections and their rate:
// edgeproxy processes in the test's own namespace, the real BPF program, real
// connections from several client addresses. The program's parts alone:
// test/source-limits-bpf.test.ts; behind a balancer, http, udp and TLS:
// test/source-limits-protocols.test.ts.
import { describe, expect, test } from "bun:test";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin, exchange, text } from "./helpers/net";
import { workdir, writeConfig } from "./helpers/pools";
import { type Held, adminDir, hold, metrics, sum } from "./helpers/sourcelimits";
import { until } from "./helpers/wait";

const f = proxyFixture();

describe("per-client limits", () => {
  test("--source-connections holds exactly across 2 workers: N open, the next refused in the kernel, another client unaffected, a close frees a place", async () => {
    const { admin, done } = adminDir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const N = 6;
    try {
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`, "--source-connections", String(N)]);
      const A = "192.0.2.201";
      const B = "192.0.2.202";
      const held: Held[] = [];
      for (let i = 0; i < N; i++) held.push(await hold("192.0.2.1", 7000 + i, A));
      expect(held.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      const workers = (await (await fetch("http://localhost/workers", { unix: admin } as RequestInit)).json()) as { services: { total: number }[] }[];
      console.log(`connections per worker: ${workers.map((w) => w.services[0]!.total).join(", ")}`);
      // The N+1th, to another port too: the count is the client's, for the whole service.
      for (const port of [7000, 7050]) expect((await hold("192.0.2.1", port, A)).outcome).toBe("refused");
      const other = await hold("192.0.2.1", 7000, B);
      expect(other.outcome).toBe("open");
      other.close();
      const m = await metrics(admin);
      expect(sum(m, "kernel_source_limited_total", 'limit="connections"')).toBe(2);
      expect(sum(m, "kernel_drops_total", 'reason="limited"')).toBe(2);
      // Only the accepted ones reached user space.
      expect(sum(m, "connections_total")).toBe(N + 1);
      // Close one: its count goes at close, and a new one is let in; then the limit holds again.
      held.pop()!.close();
      expect(
        await until(async () => {
          const h = await hold("192.0.2.1", 7001, A, undefined, 1000);
          if (h.outcome === "open") held.push(h);
          return h.outcome === "open";
        }),
      ).toBe(true);
      expect((await hold("192.0.2.1", 7002, A)).outcome).toBe("refused");
      for (const h of held) h.close();
      // All closed: the client's count is back to zero, N open again.
      await Bun.sleep(200);
      const again: Held[] = [];
      for (let i = 0; i < N; i++) again.push(await hold("192.0.2.1", 7010 + i, A));
      expect(again.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      for (const h of again) h.close();
    } finally {
      done();
    }
  }, 40_000);

  test("a crashed worker's counts are not stuck: the restarted workers reclaim them", async () => {
    const { admin, done } = adminDir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const N = 3;
    type W = { index: number; pid: number; ready: boolean };
    const workers = async () => (await (await fetch("http://localhost/workers", { unix: admin } as RequestInit)).json()) as W[];
    try {
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`, "--source-connections", String(N)]);
      const A = "192.0.2.201";
      const held: Held[] = [];
      for (let i = 0; i < N; i++) held.push(await hold("192.0.2.1", 7000 + i, A));
      expect(held.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      expect((await hold("192.0.2.1", 7000, A)).outcome).toBe("refused");
      // SIGKILL: no close handler runs, so nothing takes the counts back but the reclaim.
      const before = await workers();
      for (const w of before) process.kill(w.pid, "SIGKILL");
      const restarted = await until(async () => {
        const now = await workers();
        return now.every((w) => w.ready && !before.some((b) => b.pid === w.pid));
      }, 15_000);
      expect(restarted).toBe(true);
      expect(f.ep.stderr).toMatch(/released \d+ client connection counts of processes that are gone/);
      const again: Held[] = [];
      for (let i = 0; i < N; i++) again.push(await hold("192.0.2.1", 7010 + i, A));
      expect(again.map((h) => h.outcome)).toEqual(new Array(N).fill("open"));
      expect((await hold("192.0.2.1", 7020, A)).outcome).toBe("refused");
      for (const h of [...held, ...again]) h.close();
    } finally {
      done();
    }
  }, 40_000);

  test("a reload changes the limit: connections open before it still count, and are given back when they close", async () => {
    const w = workdir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    try {
      writeConfig(w, { origins: [`127.0.0.1:${origin.port}`], ports: "7000-7099", extra: "source_connections = 1" });
      f.ep = await EdgeproxyProcess.start(["--config", w.file, "--workers", "1"]);
      const A = "192.0.2.201";
      const first = await hold("192.0.2.1", 7000, A);
      expect(first.outcome).toBe("open");
      expect((await hold("192.0.2.1", 7001, A)).outcome).toBe("refused");
      writeConfig(w, { origins: [`127.0.0.1:${origin.port}`], ports: "7000-7099", extra: "source_connections = 3" });
      const r = await runEdgeproxy(["reload", "--admin", w.admin]);
      expect([r.code, r.stderr]).toEqual([0, ""]);
      const more = [await hold("192.0.2.1", 7002, A), await hold("192.0.2.1", 7003, A)];
      expect(more.map((h) => h.outcome)).toEqual(["open", "open"]);
      expect((await hold("192.0.2.1", 7004, A)).outcome).toBe("refused");
      // The connection from before the reload gives its count back through the old data plane.
      first.close();
      let last: Held | undefined;
      expect(
        await until(async () => {
          last = await hold("192.0.2.1", 7005, A, undefined, 1000);
          return last.outcome === "open";
        }),
      ).toBe(true);
      for (const h of [...more, last!]) h.close();
    } finally {
      w.done();
    }
  }, 30_000);

  test("--source-rate: a flooding client is refused in the kernel (limited moves, user space accepts none of them); other clients pass", async () => {
    const { admin, done } = adminDir();
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    try {
      f.ep = await EdgeproxyProcess.start(["--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--origin", `127.0.0.1:${origin.port}`, "--source-rate", "2", "--source-rate-burst", "5"]);
      const attempts = 40;
      const t0 = performance.now();
      const outcomes = await Promise.all(Array.from({ length: attempts }, (_, i) => exchange("192.0.2.1", 7000 + i, "x", 3000, "192.0.2.201")));
      const seconds = (performance.now() - t0) / 1000;
      const ok = outcomes.filter((o) => text(o) === "x").length;
      const refused = outcomes.filter((o) => o.kind === "refused").length;
      // The burst, plus what 2/s refills while the attempts run.
      expect(ok).toBeGreaterThanOrEqual(5);
      expect(ok).toBeLessThanOrEqual(5 + Math.ceil(2 * seconds) + 1);
      expect(ok + refused).toBe(attempts);
      const m = await metrics(admin);
      expect(sum(m, "kernel_source_limited_total", 'limit="rate"')).toBe(refused);
      // Every refusal happened in the kernel: user space accepted exactly the ones that got through.
      expect(sum(m, "connections_total")).toBe(ok);
      expect(sum(m, "source_limited_total")).toBe(0);
      expect(text(await exchange("192.0.2.1", 7000, "y", 3000, "192.0.2.202"))).toBe("y");
    } finally {
      done();
    }
  }, 30_000);

  test("IPv6 clients count per /64 (--source-prefix-v6 default): another address of the /64 is the same client, another /64 is not", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const addrs = ["2001:db8:5:1::a", "2001:db8:5:1::b", "2001:db8:5:2::a"];
    for (const a of addrs) {
      const p = Bun.spawnSync(["ip", "-6", "addr", "add", `${a}/128`, "dev", "lo", "nodad"], { stderr: "pipe" });
      expect(p.stderr.toString()).toBe("");
    }
    f.ep = await EdgeproxyProcess.start(["--ports", "7000-7099", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`, "--source-connections", "2"]);
    const a1 = await hold("2001:db8::1", 7000, addrs[0]!);
    const a2 = await hold("2001:db8::1", 7001, addrs[1]!);
    expect([a1.outcome, a2.outcome]).toEqual(["open", "open"]);
    expect((await hold("2001:db8::1", 7002, addrs[0]!)).outcome).toBe("refused");
    expect((await hold("2001:db8::1", 7002, addrs[1]!)).outcome).toBe("refused");
    const b = await hold("2001:db8::1", 7003, addrs[2]!);
    expect(b.outcome).toBe("open");
    for (const h of [a1, a2, b]) h.close();
  }, 30_000);

  test("the built-in responder (no --origin) counts connections too", async () => {
    f.ep = await EdgeproxyProcess.start(["--ports", "7000-7099", "--prefix", "192.0.2.0/25", "--source-connections", "1"]);
    const a = await hold("192.0.2.1", 7000, "192.0.2.201");
    expect(a.outcome).toBe("open");
    expect((await hold("192.0.2.1", 7001, "192.0.2.201")).outcome).toBe("refused");
    a.close();
  }, 30_000);
});
