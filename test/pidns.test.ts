// Two edgeproxy instances in separate PID namespaces sharing one network
// namespace and one bpffs: the container replacement flow (README,
// "Container image and deployment") without `--pid host`. Both number their
// processes alike (the supervisor is 1, its workers get the same small pids) and open the same fd
// numbers, so a process id or fd cannot tell their member entries apart; the
// socket's cookie can. The first one stops (SIGQUIT drain, or SIGTERM) while a
// client makes new connections: the second keeps every SOCKMAP entry it
// registered and serves every connection (under SIGTERM, all but the ones the
// first had already accepted, which a stop cuts).
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess, MAIN, runEdgeproxy } from "./helpers/edgeproxy";
import { now, startOrigin } from "./helpers/load";
import { describeLoad, spawnLoad } from "./helpers/load-main";
import { TestNetns } from "./helpers/netns";

interface Sock {
  protocol: string;
  family: number;
  pid: number;
  fd: number;
  cookie: number;
}

let ns: TestNetns | undefined;
let dir = "";
const started: EdgeproxyProcess[] = [];

beforeEach(() => {
  ns = TestNetns.enter();
  dir = mkdtempSync(join(tmpdir(), "ep-pidns-"));
});

afterEach(async () => {
  try {
    // Ours, by pid: the inner edgeproxy (pid 1 of its namespace; its workers die with it), then unshare.
    for (const ep of started.splice(0)) {
      if (ep.proc.exitCode !== null) continue;
      const inner = innerPid(ep);
      if (inner) process.kill(inner, "SIGKILL");
      ep.proc.kill("SIGKILL");
      await ep.proc.exited;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    ns?.leave();
  }
});

/**
 * edgeproxy as pid 1 of a PID namespace of its own (and a mount namespace
 * with that namespace's /proc, as a container has), in this test's network
 * namespace and with its bpffs (the mounts are copied into the new namespace).
 */
async function startInPidns(name: string, origin: number): Promise<EdgeproxyProcess> {
  const args = ["--workers", "2", "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin}`, "--admin", join(dir, `${name}.sock`), "--drain-timeout", "5s"];
  const ep = await EdgeproxyProcess.start(args, {}, ["unshare", "--pid", "--fork", "--mount-proc", process.execPath, MAIN]);
  started.push(ep);
  return ep;
}

/**
 * The pid, in our namespace, of the edgeproxy that unshare forked. unshare
 * (util-linux 2.38) blocks SIGTERM and SIGINT while it waits and does not
 * forward them, so signals go to the inner process directly.
 */
function innerPid(ep: EdgeproxyProcess): number | undefined {
  try {
    const kids = readFileSync(`/proc/${ep.pid}/task/${ep.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
    return kids.length ? Number(kids[0]) : undefined;
  } catch {
    return undefined;
  }
}

async function sockets(): Promise<Sock[]> {
  const st = await runEdgeproxy(["status", "--json"]);
  expect(st.code).toBe(0);
  const status = JSON.parse(st.stdout) as { services: { name: string; sockets: Sock[] }[] };
  expect(status.services.map((s) => s.name)).toEqual(["default"]);
  return status.services[0]!.sockets;
}

describe("two instances in separate PID namespaces", () => {
  for (const signal of ["SIGQUIT", "SIGTERM"] as const) {
    test(`the first one stops (${signal}) under load: the second keeps its member entries and serves every connection`, async () => {
      const { listener: origin, stats } = startOrigin("127.0.0.1");
      try {
        const a = await startInPidns("a", origin.port);
        const ofA = await sockets();
        const b = await startInPidns("b", origin.port);
        const ofB = await sockets();
        // The premise: the two register as the same pids (and fds) in their own namespaces.
        const pids = (l: Sock[]) => l.map((s) => `${s.pid}/${s.fd}`).sort();
        expect(ofA).toHaveLength(2);
        expect(pids(ofB)).toEqual(pids(ofA));
        // B's workers took both member entries over: other sockets than A's.
        expect(ofB).toHaveLength(2);
        for (const s of ofB) expect(ofA.map((x) => x.cookie)).not.toContain(s.cookie);

        let signalledAt = 0;
        let exitedAt = 0;
        const load = spawnLoad({ mode: "close", hosts: ["192.0.2.1"], ports: Array.from({ length: 100 }, (_, i) => 7000 + i), connections: 8, durationMs: 20_000, maxRequests: 200_000 });
        try {
          for (let i = 0; i < 300 && stats.requests < 200; i++) await Bun.sleep(10);
          expect(stats.requests).toBeGreaterThanOrEqual(200);
          const inner = innerPid(a);
          expect(inner).toBeNumber();
          signalledAt = now();
          process.kill(inner!, signal);
          const timer = setTimeout(() => a.proc.kill("SIGKILL"), 15_000);
          const code = await a.proc.exited;
          clearTimeout(timer);
          exitedAt = now();
          expect(code).toBe(0);
          // Load runs on after A has gone: every new connection must still reach B.
          const after = stats.requests;
          await Bun.sleep(500);
          for (let i = 0; i < 300 && stats.requests < after + 300; i++) await Bun.sleep(10);
        } finally {
          load.stop();
        }
        const r = await load.result;
        console.log(`pidns ${signal}: ${describeLoad(r)}`);
        if (r.samples.length) console.log(`pidns ${signal}: first failures:\n  ${r.samples.slice(0, 3).join("\n  ")}`);
        expect(r.ok).toBeGreaterThan(500);
        if (signal === "SIGQUIT") {
          // A drain: A's listeners close (their queues migrate to B's), its open connections finish.
          expect(r.failedTotal).toBe(0);
        } else {
          // A stop cuts the connections A had already accepted (README: SIGTERM stops, SIGQUIT
          // drains): a reset at most, while A shuts down. Nothing is refused, and every
          // connection after A has gone reaches B.
          console.log(`pidns SIGTERM: A exited ${(exitedAt - signalledAt).toFixed(0)} ms after the signal; failures from ${r.firstFailureAt === null ? "-" : (r.firstFailureAt - signalledAt).toFixed(0)} to ${r.lastFailureAt === null ? "-" : (r.lastFailureAt - signalledAt).toFixed(0)} ms`);
          expect(r.failedTotal).toBe(r.failed.reset + r.failed.short);
          if (r.lastFailureAt !== null) {
            expect(r.firstFailureAt!).toBeGreaterThanOrEqual(signalledAt);
            expect(r.lastFailureAt).toBeLessThanOrEqual(exitedAt);
          }
        }
        // A withdrew nothing of B's.
        expect(await sockets()).toEqual(ofB);

        // B, now alone, withdraws the service and removes the pins when it stops.
        process.kill(innerPid(b)!, "SIGTERM");
        expect(await b.proc.exited).toBe(0);
        const st = await runEdgeproxy(["status", "--json"]);
        expect(JSON.parse(st.stdout).loaded).toBe(false);
      } finally {
        origin.stop(true);
      }
    }, 60_000);
  }
});
