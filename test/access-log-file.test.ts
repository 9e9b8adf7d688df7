// Access logs end to end, the file itself: reopened on SIGUSR1, write errors,
// a stalled destination. edgeproxy with 2 workers in a namespace of each
// test's own, real traffic.
import { describe, expect, test } from "bun:test";
import { closeSync, constants, openSync, readSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WORKERS, linesOf, logDir } from "./helpers/accesslog";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, pool, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";

const f = proxyFixture();
const servers = f.servers;

/** Every worker's value of a counter in the supervisor's merged /metrics, summed. */
async function counter(admin: string, name: string): Promise<number> {
  const text = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith(`edgeproxy_${name}{`) || l.startsWith(`edgeproxy_${name} `))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

describe("access log: the file", () => {
  test("SIGUSR1 reopens it: after logrotate's rename, new lines land in the new file", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const log = join(logDir(), "access.log");
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", log]);
    expect(text(await exchange("192.0.2.1", 5000, "before"))).toBe("before");
    expect((await linesOf(log, 1)).length).toBe(1);
    renameSync(log, `${log}.1`);
    process.kill(f.ep.pid, "SIGUSR1");
    // The supervisor forwards it; give the workers a moment to reopen.
    await Bun.sleep(300);
    // Several connections, so both workers (the kernel's reuseport hash picks) are likely to write.
    for (let i = 2; i < 10; i++) expect(text(await exchange(`192.0.2.${i}`, 5000, "after"))).toBe("after");
    const fresh = await linesOf(log, 8);
    expect(fresh.length).toBe(8);
    expect(fresh.every((l) => l.bytes_in === 5)).toBe(true);
    const old = await linesOf(`${log}.1`, 1);
    expect(old.map((l) => l.bytes_in)).toEqual([6]);
    expect(f.ep.stderr).not.toMatch(/access log/);
  }, 30_000);

  test("an unwritable path at start: one line, exit 2; a write error later: one line per worker, counted, traffic unaffected", async () => {
    const r = await runEdgeproxy([...WORKERS, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1:1", "--access-log", "/nonexistent-dir/access.log"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual(['edgeproxy: access_log: cannot open "/nonexistent-dir/access.log" for appending: ENOENT']);

    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const admin = join(logDir(), "admin.sock");
    // /dev/full opens, and every write to it fails with ENOSPC.
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--admin", admin, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", "/dev/full"]);
    for (let i = 1; i < 30; i++) expect(text(await exchange(`192.0.2.${i}`, 5000, "still served"))).toBe("still served");
    await Bun.sleep(600);
    expect(await counter(admin, "access_log_write_errors_total")).toBeGreaterThanOrEqual(1);
    const complaints = f.ep.stderr.split("\n").filter((l) => l.includes("access log"));
    expect(complaints.length).toBeGreaterThanOrEqual(1);
    expect(complaints.length).toBeLessThanOrEqual(2);
    expect(complaints[0]).toMatch(/access log \/dev\/full: write failed \(ENOSPC\)/);
  }, 30_000);

  test("a stalled destination: the bounded buffer drops lines and counts them; connections are not slowed", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const dir = logDir();
    const fifo = join(dir, "stalled.fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    // A reader that never reads: writes block once the pipe's 64 KiB are full.
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const admin = join(dir, "admin.sock");
    const config = join(dir, "edgeproxy.toml");
    writeFileSync(config, `access_log = "${fifo}"\naccess_log_buffer = "16KiB"\nworkers = 2\nadmin = { socket = "${admin}" }\n[[service]]\nname = "stalled"\norigin = "127.0.0.1:${origin.port}"\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 5000\n`);
    try {
      f.ep = await EdgeproxyProcess.start(["--config", config]);
      const N = 1000;
      const t0 = performance.now();
      const outcomes = await pool(Array.from({ length: N }, (_, i) => i), 32, async (i) => text(await exchange(`192.0.2.${1 + (i % 250)}`, 5000, "x")));
      const elapsed = performance.now() - t0;
      expect(outcomes.filter((o) => o !== "x")).toEqual([]);
      // 1000 loopback connections take well under this even on a busy 2-core host; a blocked event loop would take the 5 s timeouts.
      expect(elapsed).toBeLessThan(20_000);
      await Bun.sleep(500);
      const lines = await counter(admin, "access_log_lines_total");
      const dropped = await counter(admin, "access_log_dropped_total");
      // Each line is ~250 bytes: 1000 of them are far more than the pipe and two 16 KiB buffers hold.
      expect(dropped).toBeGreaterThan(100);
      expect(lines + dropped).toBe(N);
    } finally {
      // Let any write in flight finish, so the workers exit promptly.
      const buf = Buffer.alloc(1 << 16);
      const until = Date.now() + 2_000;
      while (Date.now() < until) {
        try {
          if (readSync(reader, buf) <= 0) break;
        } catch {
          await Bun.sleep(20);
        }
      }
      if (f.ep) expect(await f.ep.stop()).toBe(0);
      f.ep = undefined;
      closeSync(reader);
    }
  }, 60_000);
});
