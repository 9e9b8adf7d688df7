// --workers: N processes share each service's SO_REUSEPORT group; the
// dispatcher reaches the group through any registered member.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy, stopAll } from "./helpers/edgeproxy";
import { echoOrigin, exchange, greeter, pool, text } from "./helpers/net";
import { workdir, writeConfig } from "./helpers/pools";
import { proxyFixture } from "./helpers/fixture";

const f = proxyFixture();

interface Worker {
  index: number;
  pid: number;
  ready: boolean;
  restarts: number;
  services: { name: string; active: number; total: number }[];
}

async function workers(admin: string): Promise<Worker[]> {
  return (await (await fetch("http://localhost/workers", { unix: admin } as RequestInit)).json()) as Worker[];
}

/** n new connections, `width` at a time, each one echo exchange; the failures. */
async function connections(n: number, width = 16, port = (i: number) => 7000 + (i % 100)): Promise<string[]> {
  const results = await pool(
    Array.from({ length: n }, (_, i) => i),
    width,
    async (i) => {
      const got = await exchange("192.0.2.1", port(i), `hello ${i}`, 3000);
      return text(got) === `hello ${i}` ? undefined : `${i}: ${got.kind}`;
    },
  );
  return results.filter((r): r is string => !!r);
}

describe("workers", () => {
  test("two workers share the load, and killing one loses no new connection", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-workers-"));
    const admin = join(dir, "admin.sock");
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
      expect(f.ep.stderr).toMatch(/2 workers: pids \d+, \d+/);
      expect(await connections(400)).toEqual([]);
      const before = await workers(admin);
      const totals = before.map((w) => w.services[0]!.total);
      console.log(`connections per worker: ${totals.join(", ")}`);
      expect(totals.reduce((a, b) => a + b, 0)).toBe(400);
      // The kernel's reuseport hash spreads them; each worker gets a fair share.
      for (const t of totals) expect(t).toBeGreaterThan(100);
      // /metrics: each worker's series under a worker label; the kernel's counters once.
      const metrics = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
      const perWorker = [...metrics.matchAll(/^edgeproxy_connections_total\{worker="(\d)",service="default"\} (\d+)$/gm)].map((m) => Number(m[2]));
      expect(perWorker.sort()).toEqual([...totals].sort());
      const steered = [...metrics.matchAll(/^edgeproxy_kernel_steered_total\{(.*)\} (\d+)$/gm)];
      expect(steered).toHaveLength(1);
      expect(steered[0]![1]).not.toContain("worker");
      expect(Number(steered[0]![2])).toBeGreaterThanOrEqual(400);

      // Kill one worker under load. Stopped first, so that its share of the
      // new connections is queued on its listener (handshake done, never
      // accepted) when it dies: its SOCKMAP entry goes with its socket, the
      // program falls through to the other member, and the kernel moves the
      // queue to the other worker (the migrate program). Connections a worker
      // has already accepted die with it; these were all still queued.
      const victim = before[0]!.pid;
      await stopAll(victim);
      const load = connections(200, 32);
      await Bun.sleep(300);
      process.kill(victim, "SIGKILL");
      expect(await load).toEqual([]);
      // The victim's queue went to the worker with room, placed by ep_migrate's selection.
      const migrated = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
      expect(Number(/^edgeproxy_kernel_migrations_total\{service="default",to="room"\} (\d+)$/m.exec(migrated)?.[1])).toBeGreaterThan(0);
      // The supervisor restarts it, and the new one takes connections again.
      const deadline = Date.now() + 10_000;
      let after = await workers(admin);
      while (!(after[0]!.ready && after[0]!.pid !== victim) && Date.now() < deadline) {
        await Bun.sleep(50);
        after = await workers(admin);
      }
      expect(after[0]!.pid).not.toBe(victim);
      expect(after[0]!.restarts).toBe(1);
      expect(f.ep.stderr).toMatch(new RegExp(`worker 0 \\(pid ${victim}\\) was killed by SIGKILL; restarting it`));
      expect(await connections(200)).toEqual([]);
      expect((await workers(admin))[0]!.services[0]!.total).toBeGreaterThan(20);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 40_000);
  test("a reload through the supervisor reaches every worker: all new connections go to the new origin", async () => {
    const w = workdir();
    try {
      const a = greeter("127.0.0.1", 0, "A");
      const b = greeter("127.0.0.1", 0, "B");
      f.servers.push(a, b);
      writeConfig(w, { origins: [`127.0.0.1:${a.port}`], ports: "7000-7099" });
      f.ep = await EdgeproxyProcess.start(["--config", w.file, "--workers", "2"]);
      const greet = async (n: number) => (await pool(Array.from({ length: n }, (_, i) => i), 16, async (i) => text(await exchange("192.0.2.1", 7000 + (i % 100), "", 3000))));
      expect(new Set(await greet(100))).toEqual(new Set(["A"]));
      writeConfig(w, { origins: [`127.0.0.1:${b.port}`], ports: "7000-7099" });
      const r = await runEdgeproxy(["reload", "--admin", w.admin]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      // Each worker's old listener has left the group: 200 new connections, spread over both workers, all reach B.
      expect(new Set(await greet(200))).toEqual(new Set(["B"]));
      const ws = await workers(w.admin);
      expect(ws.every((x) => x.services[0]!.total > 50)).toBe(true);
    } finally {
      w.done();
    }
  }, 30_000);
});

describe("workers: one instance's view", () => {
  test("/status and /services total every worker (equal to /metrics) after 8 requests; startup lines once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-workers-"));
    const admin = join(dir, "admin.sock");
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
      // Startup said once for the instance: the binding, one line per socket naming both workers' fds, the summed cap.
      const lines = f.ep.stderr.split("\n");
      const once = (re: RegExp) => expect(lines.filter((l) => re.test(l))).toHaveLength(1);
      once(/^edgeproxy: service default \(tcp\): tcp 192\.0\.2\.0\/24 ports 7000-7099/);
      once(/^edgeproxy: service default: ipv4 socket \S+ in each of 2 workers \(fds \d+, \d+\)$/);
      once(/^edgeproxy: dispatcher (created and pinned|joined) at /);
      once(/^edgeproxy: at most \d+ \(\d+ \+ \d+ in 2 workers\) open connections$/);
      once(/^edgeproxy: ready/);
      expect(lines.filter((l) => /^edgeproxy: worker \d+:/.test(l))).toEqual([]);

      // 8 connections over 8 ports: the kernel's hash spreads them over both workers.
      expect(await connections(8, 8)).toEqual([]);
      const ask = async (path: string) => (await fetch(`http://localhost${path}`, { unix: admin } as RequestInit)).json();
      const ws = await workers(admin);
      console.log(`connections per worker: ${ws.map((w) => w.services[0]!.total).join(", ")}`);
      const status = (await ask("/status")) as { services: { name: string; connections: { total: number; active: number } }[]; capacity: { max: number } };
      const services = (await ask("/services")) as { name: string; connections: { total: number } }[];
      const one = (await ask("/services/default")) as { connections: { total: number } };
      const metrics = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
      const perWorker = [...metrics.matchAll(/^edgeproxy_connections_total\{worker="\d",service="default"\} (\d+)$/gm)].map((m) => Number(m[1]));
      const caps = [...metrics.matchAll(/^edgeproxy_connection_cap_max\{worker="\d"\} (\d+)$/gm)].map((m) => Number(m[1]));
      expect(perWorker).toHaveLength(2);
      expect(perWorker.reduce((a, b) => a + b, 0)).toBe(8);
      expect(status.services[0]!.connections.total).toBe(8);
      expect(services[0]!.connections.total).toBe(8);
      expect(one.connections.total).toBe(8);
      expect(status.capacity.max).toBe(caps.reduce((a, b) => a + b, 0));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  test("a start error is said once, not once per worker", async () => {
    // A bpffs path that is a file: each worker fails to pin its dispatcher there, alike.
    const dir = mkdtempSync(join(tmpdir(), "ep-notbpffs-"));
    writeFileSync(join(dir, "file"), "");
    try {
      const r = await runEdgeproxy(["--workers", "2", "--bpffs", join(dir, "file"), "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1:9"]);
      console.log(r.stderr);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).not.toContain("worker");
      expect(r.code).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
