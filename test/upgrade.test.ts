// Zero-downtime upgrades: `edgeproxy upgrade` starts the next process, which
// joins every service's reuseport group and takes the SOCKMAP entries over;
// the old one closes its listeners (the kernel migrates their queues) and
// finishes its open connections. Load runs throughout and must see no error.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import { compileDispatcherVariant } from "./helpers/bpf";

const f = proxyFixture();

interface Tally {
  ok: number;
  failed: string[];
}

/** New connections, `width` at a time, until `until()`: one echo exchange each. */
async function perConnection(width: number, until: () => boolean, tally: Tally): Promise<void> {
  let n = 0;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (!until() && n < 200_000) {
        const i = n++;
        const got = await exchange("192.0.2.1", 7000 + (i % 100), `req ${i}`, 5000);
        if (text(got) === `req ${i}`) tally.ok++;
        else tally.failed.push(`connection ${i}: ${got.kind} ${"bytes" in got ? JSON.stringify(text(got)) : ""} at ${Date.now() - t0} ms`);
      }
    }),
  );
}

/** `width` long-lived connections, each a request/response loop until `until()`. */
async function keepAlive(width: number, until: () => boolean, tally: Tally): Promise<void> {
  await Promise.all(
    Array.from({ length: width }, async (_, c) => {
      let waiting: ((s: string) => void) | undefined;
      let buf = "";
      const sock: Socket<undefined> = await Bun.connect({
        hostname: "192.0.2.2",
        port: 7000 + c,
        socket: {
          data(_s, d) {
            buf += d.toString();
            waiting?.(buf);
          },
          close() {
            waiting?.("<closed>");
          },
          error() {},
        },
      });
      for (let i = 0; !until() && i < 200_000; i++) {
        const want = `ka ${c} ${i}\n`;
        buf = "";
        const got = await new Promise<string>((resolve) => {
          const timer = setTimeout(() => resolve("<timeout>"), 5000);
          waiting = (s) => {
            if (s === "<closed>" || s.length >= want.length) {
              clearTimeout(timer);
              resolve(s);
            }
          };
          sock.write(want);
        });
        if (got === want) tally.ok++;
        else {
          tally.failed.push(`keep-alive ${c} request ${i}: ${JSON.stringify(got.slice(0, 40))}`);
          break;
        }
      }
      sock.end();
    }),
  );
}

/** Running (a zombie child of an exited leader counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

describe("upgrade", () => {
  for (const workers of [1, 2]) {
    test(`--workers ${workers}: three process upgrades and one BPF program upgrade under load (keep-alive and one connection per request): no failed request`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "ep-upgrade-"));
      const admin = join(dir, "admin.sock");
      const leaders: number[] = [];
      try {
        const origin = echoOrigin("127.0.0.1");
        f.servers.push(origin);
        f.ep = await EdgeproxyProcess.start(["--workers", String(workers), "--admin", admin, "--drain-timeout", "20s", "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
        leaders.push(f.ep.pid);
        let done = false;
        const until = () => done;
        const conn: Tally = { ok: 0, failed: [] };
        const ka: Tally = { ok: 0, failed: [] };
        const load = Promise.all([perConnection(8, until, conn), keepAlive(4, until, ka)]);
        const variant = compileDispatcherVariant(dir, "EP_TEST_VARIANT");
        for (let u = 0; u < 3; u++) {
          await Bun.sleep(700);
          if (u === 1) {
            // The BPF program too, in the middle: a link update over the same maps. (The next
            // process upgrade puts this binary's program back: serve upgrades a differing one.)
            const p = await runEdgeproxy(["upgrade-program", "--object", variant]);
            expect(p.stderr).toBe("");
            expect(p.code).toBe(0);
            await Bun.sleep(700);
          }
          // This test's fetch keeps its admin connection alive across the upgrade, as a monitoring agent would.
          const statusPid = async () => ((await (await fetch("http://localhost/status", { unix: admin } as RequestInit)).json()) as { pid: number }).pid;
          const before = await statusPid();
          const r = await runEdgeproxy(["upgrade", "--admin", admin]);
          const pid = Number(/new edgeproxy pid (\d+) serves/.exec(r.stdout)?.[1]);
          if (pid) leaders.push(pid);
          if (r.code !== 0) console.log(f.ep.stderr.split("\n").slice(-40).join("\n"));
          expect(r.stderr).toBe("");
          expect(r.code).toBe(0);
          expect(pid).toBeGreaterThan(0);
          // The replaced process closed its kept-alive admin connections: the next request reaches the successor.
          expect([before, await statusPid()]).toEqual([leaders.at(-2)!, pid]);
        }
        await Bun.sleep(700);
        done = true;
        await load;
        console.log(`workers ${workers}: ${conn.ok} per-connection requests, ${ka.ok} keep-alive requests, failures: ${conn.failed.length + ka.failed.length}`);
        expect(conn.failed).toEqual([]);
        expect(ka.failed).toEqual([]);
        expect(conn.ok).toBeGreaterThan(100);
        expect(ka.ok).toBeGreaterThan(100);
        // Replaced leaders finish once their keep-alive connections have closed.
        const deadline = Date.now() + 10_000;
        while (leaders.slice(0, -1).some(alive) && Date.now() < deadline) await Bun.sleep(50);
        expect(leaders.slice(0, -1).filter(alive)).toEqual([]);
        expect(f.ep.stderr).toMatch(/drained/);
        expect(f.ep.stderr).toMatch(/dispatcher program upgraded from tag \w+ to \w+ \(maps kept\)/);
        // The last one serves on.
        expect(text(await exchange("192.0.2.9", 7042, "still here"))).toBe("still here");
      } finally {
        // Every leader the upgrades started (the first is f.ep's, stopped by the fixture).
        for (const pid of leaders.slice(1).filter(alive)) process.kill(pid, "SIGTERM");
        const deadline = Date.now() + 10_000;
        while (leaders.slice(1).some(alive) && Date.now() < deadline) await Bun.sleep(20);
        rmSync(dir, { recursive: true, force: true });
      }
    }, 60_000);
  }
  test("an upgrade whose new process fails to start changes nothing: one line, exit 1, the old one serves on", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-upgrade-"));
    const admin = join(dir, "admin.sock");
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      f.ep = await EdgeproxyProcess.start(["--admin", admin, "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
      const r = await runEdgeproxy(["upgrade", "--admin", admin, "--binary", "/bin/false"]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(/upgrade failed, the running edgeproxy keeps serving: .*exited with code 1 before it was ready/);
      expect(text(await exchange("192.0.2.9", 7042, "still here"))).toBe("still here");
      // And a later upgrade still works (the failed one did not stick).
      const ok = await runEdgeproxy(["upgrade", "--admin", admin]);
      expect(ok.code).toBe(0);
      const pid = Number(/new edgeproxy pid (\d+) serves/.exec(ok.stdout)?.[1]);
      expect(text(await exchange("192.0.2.9", 7043, "new one"))).toBe("new one");
      process.kill(pid, "SIGTERM");
      const deadline = Date.now() + 10_000;
      while (alive(pid) && Date.now() < deadline) await Bun.sleep(20);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
