// --max-connections with --workers: the cap holds for the instance. A worker
// at its share leaves the reuseport selection (bpf/reuseport.h, ep_migrate),
// so a newcomer goes to a worker with room and is never reset while one has
// room; a worker inside its headroom (its share minus a few, admission.ts)
// already left the selection's first tier, so what the kernel gave it before
// it left fits; with every worker full the kernel refuses newcomers
// (counted), and a worker below its resume mark takes connections again.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy, stopAll } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin, exchange, pool, text } from "./helpers/net";

const f = proxyFixture();

/** An open connection through the proxy, proven by one echoed byte; "refused" when it was reset or refused. */
function hold(port: number, hostname = "192.0.2.1"): Promise<Socket | "refused"> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve("refused"), 3000);
    const done = (r: Socket | "refused") => {
      clearTimeout(timer);
      resolve(r);
    };
    Bun.connect({
      hostname,
      port,
      socket: {
        open: (s) => void s.write("x"),
        data: (s) => done(s),
        close: () => done("refused"),
        connectError: () => done("refused"),
      },
    }).catch(() => done("refused"));
  });
}

interface WorkerView {
  index: number;
  services: { name: string; active: number; total: number }[];
}

const get = async (admin: string, path: string) => fetch(`http://localhost${path}`, { unix: admin } as RequestInit);
const active = async (admin: string) => ((await (await get(admin, "/workers")).json()) as WorkerView[]).map((w) => w.services[0]?.active ?? 0);
const totals = async (admin: string) => ((await (await get(admin, "/workers")).json()) as WorkerView[]).map((w) => w.services[0]?.total ?? 0);

/** One sample of the merged /metrics: by worker when `worker` is given. */
async function metric(admin: string, name: string, labels = "", worker?: number): Promise<number> {
  const text = await (await get(admin, "/metrics")).text();
  const re = new RegExp(`^edgeproxy_${name}\\{([^}]*)\\} (\\d+)$`, "gm");
  let sum = 0;
  for (const m of text.matchAll(re)) {
    if (labels && !m[1]!.includes(labels)) continue;
    if (worker !== undefined && !m[1]!.includes(`worker="${worker}"`)) continue;
    sum += Number(m[2]);
  }
  return sum;
}

/** A pinned map of the test namespace's dispatcher. */
const pinned = (map: string) => join(process.env.EDGEPROXY_BPFFS!, "edgeproxy", readlinkSync("/proc/thread-self/ns/net").replace(/\D/g, ""), map);

/** n short exchanges, `width` at a time: the ones that did not echo. */

/**
 * An edgeproxy with `o.workers` workers sharing `o.max` connections, an admin
 * socket and an echo origin, for `body`; the connections it holds are ended
 * and the admin directory removed after it, whatever happens.
 */
async function withCapped(o: { workers: number; max: number; prefix?: string }, body: (admin: string, held: Held[]) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ep-cap-"));
  const admin = join(dir, "admin.sock");
  const held: Held[] = [];
  try {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--workers", String(o.workers), "--admin", admin, "--ports", "7000-7099", "--prefix", o.prefix ?? "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--max-connections", String(o.max)]);
    await body(admin, held);
  } finally {
    for (const h of held) h.socket.end();
    rmSync(dir, { recursive: true, force: true });
  }
}
async function newcomers(n: number, width: number, base: number, host = "192.0.2.1"): Promise<string[]> {
  const r = await pool(
    Array.from({ length: n }, (_, i) => i),
    width,
    async (i) => {
      const got = await exchange(host, base + (i % 50), `new ${i}`, 3000);
      return text(got) === `new ${i}` ? undefined : `${i}: ${got.kind}`;
    },
  );
  return r.filter((x): x is string => !!x);
}

interface Held {
  socket: Socket;
  worker: number;
}

/**
 * Fill one worker to `cap`: held connections, one at a time, each attributed
 * to the worker whose active count rose. Bounded by `limit` connections.
 * Every connection must be admitted (no worker is full before the first).
 */
async function fillOne(admin: string, cap: number, limit: number, held: Held[], host?: string): Promise<{ full: number; counts: number[] }> {
  let counts = await active(admin);
  while (Math.max(...counts) < cap && held.length < limit) {
    const s = await hold(7000 + (held.length % 100), host);
    expect(s).not.toBe("refused");
    const now = await active(admin);
    const worker = now.findIndex((n, i) => n > counts[i]!);
    expect(worker).toBeGreaterThanOrEqual(0);
    held.push({ socket: s as Socket, worker });
    counts = now;
  }
  const full = counts.indexOf(cap);
  expect(full).toBeGreaterThanOrEqual(0);
  return { full, counts };
}

/** Close `worker`'s held connections beyond `keep` and wait until it counts no more than that. */
async function trim(admin: string, held: Held[], worker: number, keep: number): Promise<void> {
  for (const h of held.filter((h) => h.worker === worker).slice(keep)) {
    h.socket.end();
    held.splice(held.indexOf(h), 1);
  }
  const deadline = Date.now() + 5000;
  while ((await active(admin))[worker]! > keep && Date.now() < deadline) await Bun.sleep(20);
  expect((await active(admin))[worker]).toBeLessThanOrEqual(keep);
}

describe("connection cap with workers", () => {
  for (const [family, host, prefix] of [
    [4, "192.0.2.1", "192.0.2.0/24"],
    [6, "2001:db8::1", "2001:db8::/64"],
  ] as const) {
    test(`ipv${family}: a worker at its share leaves the selection: no reset while the other has room; both full: refused in the kernel; then back`, async () => {
      await withCapped({ workers: 2, max: 40, prefix }, async (admin, held) => {
        // The cap is the instance's: each worker has half of it.
        const caps = [await metric(admin, "connection_cap_max", "", 0), await metric(admin, "connection_cap_max", "", 1)];
        expect(caps).toEqual([20, 20]);
        const cap = 20;

        // Fill one worker to its share; leave the other room for the newcomers below, whatever the hash gave it.
        const { full, counts } = await fillOne(admin, cap, 2 * cap, held, host);
        const other = 1 - full;
        console.log(`filled worker ${full} to ${cap}; worker ${other} holds ${counts[other]}`);
        await trim(admin, held, other, cap - 8);

        // 100 newcomers, 4 at a time (the other worker has room for all of them at once): none reset.
        const before = await totals(admin);
        const redirectedBefore = await metric(admin, "kernel_cap_redirected_total");
        const failures = await newcomers(100, 4, 7000, host);
        expect(failures).toEqual([]);
        const after = await totals(admin);
        expect(after[full]).toBe(before[full]!);
        expect(after[other]! - before[other]!).toBe(100);
        // About half of them hashed to the full worker and were moved by the selector.
        const redirected = (await metric(admin, "kernel_cap_redirected_total")) - redirectedBefore;
        console.log(`100 newcomers while worker ${full} was full: ${redirected} redirected, 0 reset`);
        expect(redirected).toBeGreaterThan(20);
        expect(await metric(admin, "connection_cap_steering_total", 'event="left"', full)).toBeGreaterThanOrEqual(1);

        // Fill the other worker too: still no refusal until the instance's cap.
        while (held.length < 2 * cap) {
          const s = await hold(7000 + (held.length % 100), host);
          expect(s).not.toBe("refused");
          held.push({ socket: s as Socket, worker: other });
        }
        expect(await active(admin)).toEqual([cap, cap]);

        // Both full: newcomers are refused by the kernel (no worker accepts them), counted.
        const fullBefore = await metric(admin, "kernel_drops_total", 'reason="full"');
        const totalBefore = await totals(admin);
        const refused = await newcomers(20, 4, 7000, host);
        expect(refused).toHaveLength(20);
        expect(refused.every((r) => r.endsWith("refused"))).toBe(true);
        expect((await metric(admin, "kernel_drops_total", 'reason="full"')) - fullBefore).toBeGreaterThanOrEqual(20);
        expect(await totals(admin)).toEqual(totalBefore);

        // Close 5 of the first worker's: below its resume mark, it takes newcomers again.
        for (const h of held.filter((h) => h.worker === full).slice(0, 5)) h.socket.end();
        const deadline = Date.now() + 5000;
        while ((await active(admin))[full]! > cap - 5 && Date.now() < deadline) await Bun.sleep(20);
        expect(await metric(admin, "connection_cap_steering_total", 'event="rejoined"', full)).toBeGreaterThanOrEqual(1);
        // 2 at a time: the worker has room for 5.
        expect(await newcomers(50, 2, 7000, host)).toEqual([]);
      });
    }, 60_000);
  }

  test("a worker inside its headroom takes no newcomer while the other has room: bursts never reset; the instance still fills to exactly --max-connections", async () => {
    const max = 256;
    await withCapped({ workers: 2, max }, async (admin, held) => {
      // Shares of 128; the headroom is max(1, min(16, 128 / 8)) = 16 (admission.ts): one worker at
      // 120 has room for 8 newcomers, fewer than a burst of 32 gives it by the hash alone.
      const share = 128;
      const { full: inside } = await fillOne(admin, share - 8, max, held);
      const other = 1 - inside;
      await trim(admin, held, other, 32);

      // 10 bursts of 32 at once; the other worker has room for all of them.
      const capRefusedBefore = await metric(admin, "connection_cap_refused_total");
      const tier2Before = await metric(admin, "kernel_cap_redirected_total", 'tier="2"');
      const before = await totals(admin);
      const failures: string[] = [];
      for (let b = 0; b < 10; b++) failures.push(...(await newcomers(32, 32, 7000)));
      const capRefused = (await metric(admin, "connection_cap_refused_total")) - capRefusedBefore;
      const gained = (await totals(admin)).map((t, i) => t - before[i]!);
      console.log(`320 newcomers in bursts of 32, worker ${inside} at ${share - 8} of ${share}: gained ${gained.join(", ")}; ${capRefused} reset at the cap; failures: ${failures.length}`);
      expect(failures).toEqual([]);
      expect(capRefused).toBe(0);
      // Tier 2 is for when no worker is below its soft mark: not now.
      expect(gained[inside]).toBe(0);
      expect((await metric(admin, "kernel_cap_redirected_total", 'tier="2"')) - tier2Before).toBe(0);

      // The headroom costs no capacity: one at a time, the instance takes exactly --max-connections.
      const connects = held.length;
      while (held.length < max) {
        const s = await hold(7000 + (held.length % 100));
        expect(s).not.toBe("refused");
        held.push({ socket: s as Socket, worker: -1 });
      }
      expect(await active(admin)).toEqual([share, share]);
      // Past both soft marks, the last ones went to a worker inside its headroom (tier 2).
      expect((await metric(admin, "kernel_cap_redirected_total", 'tier="2"')) - tier2Before).toBeGreaterThan(0);
      const fullBefore = await metric(admin, "kernel_drops_total", 'reason="full"');
      expect(await hold(7000)).toBe("refused");
      expect((await metric(admin, "kernel_drops_total", 'reason="full"')) - fullBefore).toBe(1);
      expect((await metric(admin, "connection_cap_refused_total")) - capRefusedBefore).toBe(0);
      console.log(`filled to ${max} (${max - connects} more, one at a time); the next refused in the kernel`);
    });
  }, 90_000);

  test("a full worker's share spreads over the others (4 workers), not onto one neighbour", async () => {
    await withCapped({ workers: 4, max: 80 }, async (admin, held) => {
      const cap = 20;
      const { full } = await fillOne(admin, cap, 4 * cap, held);
      // fillOne stops when one worker reaches its cap; the others may then hold
      // up to cap - 1, inside their headroom (out of tier 1, admission.ts), and
      // would take no newcomer while another is below its soft mark: not the
      // spread under test. Give each of the three room for every newcomer at once.
      for (const w of [0, 1, 2, 3].filter((w) => w !== full)) await trim(admin, held, w, cap - 8);
      const before = await totals(admin);
      const redirectedBefore = await metric(admin, "kernel_cap_redirected_total");
      const capRefusedBefore = await metric(admin, "connection_cap_refused_total");
      expect(await newcomers(300, 2, 7000)).toEqual([]);
      expect((await metric(admin, "connection_cap_refused_total")) - capRefusedBefore).toBe(0);
      const gained = (await totals(admin)).map((t, i) => t - before[i]!);
      const redirected = (await metric(admin, "kernel_cap_redirected_total")) - redirectedBefore;
      console.log(`300 newcomers with worker ${full} full: gained ${gained.join(", ")}; ${redirected} redirected`);
      expect(gained[full]).toBe(0);
      // Each of the three takes about a third (100); walking on from the full one's
      // position would give its neighbour about half (150) and the others a quarter (75).
      const others = gained.filter((_, i) => i !== full);
      expect(Math.max(...others)).toBeLessThan(135);
      expect(Math.min(...others)).toBeGreaterThan(65);
    });
  }, 60_000);

  test("a killed worker's queue goes to the worker with room, never to the full one; its listener record is pruned", async () => {
    await withCapped({ workers: 3, max: 90 }, async (admin, held) => {
      const cap = 30;
      // Fill one worker (A) to its share; C keeps room for every newcomer below at once.
      const { full: a } = await fillOne(admin, cap, 3 * cap, held);
      const [b, c] = [0, 1, 2].filter((w) => w !== a) as [number, number];
      await trim(admin, held, c, 5);
      // B below its soft mark too (fillOne may leave it inside its headroom, out of tier 1), so it is given newcomers.
      await trim(admin, held, b, cap - 8);

      const pids = ((await (await get(admin, "/workers")).json()) as { pid: number }[]).map((w) => w.pid);
      const migratedBefore = await metric(admin, "kernel_migrations_total", 'to="room"');
      const totalA = (await totals(admin))[a]!;
      // B stops: the newcomers selected for it queue on its listener (handshake done, never
      // accepted); killed, its queue moves. A is full, so the selection puts all of it on C.
      await stopAll(pids[b]!);
      const load = newcomers(20, 20, 7000);
      await Bun.sleep(300);
      process.kill(pids[b]!, "SIGKILL");
      expect(await load).toEqual([]);
      const migrated = (await metric(admin, "kernel_migrations_total", 'to="room"')) - migratedBefore;
      console.log(`worker ${b} killed with a queue: ${migrated} connections moved to worker ${c}, none to full worker ${a}`);
      expect(migrated).toBeGreaterThan(0);
      expect((await totals(admin))[a]).toBe(totalA);
      expect(await metric(admin, "kernel_migrations_total", 'to="hash"')).toBe(0);

      // Restarted, B registers again: the killed listener's record is gone, one per live listener is left.
      const deadline = Date.now() + 10_000;
      let ws = (await (await get(admin, "/workers")).json()) as { pid: number; ready: boolean }[];
      while (!(ws[b]!.ready && ws[b]!.pid !== pids[b]) && Date.now() < deadline) {
        await Bun.sleep(50);
        ws = (await (await get(admin, "/workers")).json()) as { pid: number; ready: boolean }[];
      }
      const records = JSON.parse(Bun.spawnSync(["bpftool", "-j", "map", "dump", "pinned", pinned("ep_reuse_listeners")]).stdout.toString()) as unknown[];
      expect(records).toHaveLength(3);
    });
  }, 60_000);

  test("a worker below its cap puts its emptied position back within seconds", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--workers", "2", "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
    const members = pinned("ep_reuse_members");
    const dump = () => JSON.parse(Bun.spawnSync(["bpftool", "-j", "map", "dump", "pinned", members]).stdout.toString()) as { key: string[] }[];
    const before = dump();
    // Two workers, each in both tiers (below its soft mark).
    expect(before).toHaveLength(4);
    // Empty one position of each tier from outside, as a successor at its cap or a lost race would.
    const tier = (e: { key: string[] }) => (parseInt(e.key[5]!, 16) & 1 ? 2 : 1); // position 256 + p: byte 5 is 0x01
    for (const t of [1, 2]) {
      const entry = before.find((e) => tier(e) === t)!;
      const del = Bun.spawnSync(["bpftool", "map", "delete", "pinned", members, "key", "hex", ...entry.key.map((b) => b.replace(/^0x/, ""))]);
      expect(del.exitCode).toBe(0);
    }
    expect(dump()).toHaveLength(2);
    const deadline = Date.now() + 5000;
    while (dump().length < 4 && Date.now() < deadline) await Bun.sleep(100);
    expect(dump()).toHaveLength(4);
    expect(await newcomers(20, 4, 7000)).toEqual([]);
  }, 30_000);

  test("--max-connections below --workers is one line and exit 2", async () => {
    const r = await runEdgeproxy(["--workers", "4", "--prefix", "192.0.2.0/24", "--max-connections", "3"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/--max-connections: 3 .*4 workers/);
  });
});
