// One owner per descriptor: reloads and upgrades must not leak file
// descriptors. Every reload here restarts a TCP and a UDP service (new
// listening sockets, and flow sockets for the UDP service) and re-binds
// them; every upgrade starts a successor that takes the sockets over. After
// each instance's reloads, every one of its processes (the leader, and with
// workers each worker) has the count of /proc/<pid>/fd it had when it started
// serving.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { workdir } from "./helpers/pools";
import { proxyFixture } from "./helpers/fixture";
import { udpOrigin, udpExchange, udpText } from "./helpers/udp";

const f = proxyFixture();

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** What each open descriptor is ("socket:[123]", "anon_inode:[eventpoll]", "bpf-map"…), for a failure's message. */
function fdKinds(pid: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(fd, readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // Closed since the listing.
    }
  }
  return out;
}

/** Descriptors in `after` that `before` did not have (number and kind), e.g. "17 socket:[4242]". */
function opened(before: Map<string, string>, after: Map<string, string>): string[] {
  return [...after].filter(([fd, what]) => before.get(fd) !== what).map(([fd, what]) => `${fd} ${what}`);
}

/** Running (a zombie child of an exited leader counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

/** The count once it has stayed the same for 1.5 s (at most 10 s): the start value. */
async function steady(pid: number): Promise<number> {
  const deadline = Date.now() + 10_000;
  let n = fdCount(pid);
  let since = Date.now();
  while (Date.now() - since < 1500 && Date.now() < deadline) {
    await Bun.sleep(100);
    const m = fdCount(pid);
    if (m !== n) [n, since] = [m, Date.now()];
  }
  return n;
}

/**
 * The count once it has settled back to `want` (a replaced listener closes
 * after a 500 ms grace, a reload's own admin connection after its answer),
 * or the last count seen when it did not within `ms`.
 */
async function settled(pid: number, want: number, ms = 6000): Promise<number> {
  const deadline = Date.now() + ms;
  let n = fdCount(pid);
  while (n !== want && Date.now() < deadline) {
    await Bun.sleep(50);
    n = fdCount(pid);
  }
  return n;
}

/** This instance's processes: the leader, and with workers each worker (from the supervisor's /workers). */
async function processes(admin: string, leader: number, workers: number): Promise<number[]> {
  if (workers === 1) return [leader];
  const res = await fetch("http://localhost/workers", { unix: admin, headers: { connection: "close" } } as RequestInit);
  const ws = (await res.json()) as { pid: number; ready: boolean }[];
  expect(ws.map((x) => x.ready)).toEqual(Array(workers).fill(true));
  return [leader, ...ws.map((x) => x.pid)];
}

describe("descriptors", () => {
  for (const workers of [1, 2]) {
    test(`--workers ${workers}: 110 reloads and 10 upgrades: every live process's open descriptors come back to its own start value`, async () => {
      const w = workdir();
      const leaders: number[] = [];
      const udps: { socket: { close(): void } }[] = [];
      try {
        const a = echoOrigin("127.0.0.1");
        const b = echoOrigin("127.0.0.1");
        f.servers.push(a, b);
        const udpA = await udpOrigin();
        const udpB = await udpOrigin();
        udps.push(udpA, udpB);
        // Two configs that differ in both services' origins and ports: each reload restarts both data planes and re-binds.
        const write = (n: number) =>
          writeFileSync(
            w.file,
            `[admin]\nsocket = "${w.admin}"\n\n` +
              `[[service]]\nname = "t"\norigin = "127.0.0.1:${(n % 2 ? b : a).port}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "${n % 2 ? "7000-7049" : "7000-7099"}"\n\n` +
              `[[service]]\nname = "u"\nmode = "udp"\nidle_timeout = "1s"\norigin = "127.0.0.1:${(n % 2 ? udpB : udpA).port}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "${n % 2 ? "5300-5349" : "5300-5399"}"\n`,
          );
        // A new connection each time: a kept-alive one holds a descriptor in the server, and would still reach the process an upgrade replaced.
        const reload = () => fetch("http://localhost/reload", { method: "POST", unix: w.admin, headers: { connection: "close" } } as RequestInit);
        write(0);
        f.ep = await EdgeproxyProcess.start(["--config", w.file, "--workers", String(workers)]);
        let leader = f.ep.pid;
        leaders.push(leader);
        // Both planes serve (a UDP flow's sockets live until its 1 s idle timeout: start values are taken once counts are steady).
        const lost: string[] = [];
        const serves = async () => {
          for (let i = 0; i < 4; i++) {
            expect(text(await exchange("192.0.2.1", 7001 + i, "tcp"))).toBe("tcp");
            let got = udpText(await udpExchange("192.0.2.1", 5301 + i, "udp", 1000));
            if (got !== "udp") {
              lost.push(`after upgrade ${leaders.length - 1}, reload ${reloads}, port ${5301 + i}`);
              got = udpText(await udpExchange("192.0.2.1", 5301 + i, "udp"));
            }
            expect(got).toBe("udp");
          }
        };
        const counts: string[] = [];
        let reloads = 0;
        for (let u = 0; u <= 10; u++) {
          if (u > 0) {
            const r = await runEdgeproxy(["upgrade", "--admin", w.admin]);
            expect(r.stderr).toBe("");
            expect(r.code).toBe(0);
            leader = Number(/new edgeproxy pid (\d+) serves/.exec(r.stdout)?.[1]);
            expect(leader).toBeGreaterThan(0);
            leaders.push(leader);
          }
          await serves();
          const pids = await processes(w.admin, leader, workers);
          const start = new Map<number, { n: number; kinds: Map<string, string> }>();
          for (const pid of pids) start.set(pid, { n: await steady(pid), kinds: fdKinds(pid) });
          // 10 reloads per instance (an even number: it ends on the config it started with), each restarting both services.
          // The first through `edgeproxy reload`, the rest through POST /reload.
          for (let i = 0; i < 10; i++) {
            write(++reloads);
            if (i === 0) {
              const r = await runEdgeproxy(["reload", "--admin", w.admin]);
              expect({ code: r.code, stderr: r.stderr, stdout: r.stdout }).toEqual({ code: 0, stderr: "", stdout: "reloaded: new sockets for t, u; new bindings or rules for t, u\n" });
              continue;
            }
            const res = await reload();
            const body = (await res.json()) as { reloaded?: boolean; summary?: string };
            expect(res.status).toBe(200);
            expect(body.summary).toBe("new sockets for t, u; new bindings or rules for t, u");
          }
          await serves();
          // The same processes serve (no worker was restarted), each back at its own start value.
          expect(await processes(w.admin, leader, workers)).toEqual(pids);
          for (const pid of pids) {
            const { n, kinds } = start.get(pid)!;
            const after = await settled(pid, n);
            counts.push(`${pid}: ${n}->${after}`);
            expect({ pid, after, opened: after === n ? [] : opened(kinds, fdKinds(pid)) }).toEqual({ pid, after: n, opened: [] });
          }
        }
        console.log(`lost UDP exchanges: ${lost.join("; ") || "none"}`);
        console.log(`--workers ${workers}: ${reloads} reloads, 10 upgrades; open descriptors per process (pid: start->after): ${counts.join(", ")}`);
        expect(reloads).toBe(110);
      } finally {
        // Every leader the upgrades started (the first is f.ep's, stopped by the fixture).
        for (const pid of leaders.slice(1).filter(alive)) process.kill(pid, "SIGTERM");
        const deadline = Date.now() + 10_000;
        while (leaders.slice(1).some(alive) && Date.now() < deadline) await Bun.sleep(20);
        for (const u of udps) u.socket.close();
        w.done();
      }
    }, 240_000);
  }
});
