// Least privilege (README "Privileges and requirements"): once serving, each
// process keeps only the capabilities it still uses, and none is left in an
// ambient set for anything it may exec. Read from /proc/<pid>/status, as
// root and as a non-root user holding only CAP_BPF, CAP_NET_ADMIN and
// CAP_PERFMON (setpriv, util-linux). Permission problems at start: one line.
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtBinary, EdgeproxyProcess, MAIN, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import { udpExchange, udpText } from "./helpers/udp";
import { expectOneLine } from "./helpers/oneline";

const f = proxyFixture();

const BPF = 1n << 39n;
const NET_ADMIN = 1n << 12n;
const PERFMON = 1n << 38n;
const START = BPF | NET_ADMIN | PERFMON;
const NET_BIND_SERVICE = 1n << 10n;
const NOBODY = 65534;

interface Caps {
  eff: bigint;
  prm: bigint;
  inh: bigint;
  amb: bigint;
}

/** A process's sets (its main thread's), or one thread's. */
function caps(pid: number, tid?: number): Caps {
  const status = readFileSync(tid === undefined ? `/proc/${pid}/status` : `/proc/${pid}/task/${tid}/status`, "utf8");
  const get = (k: string) => BigInt(`0x${new RegExp(`^${k}:\\s*([0-9a-f]+)$`, "m").exec(status)![1]}`);
  return { eff: get("CapEff"), prm: get("CapPrm"), inh: get("CapInh"), amb: get("CapAmb") };
}

/** As uid/gid 65534 with only `capabilities` (inheritable + ambient, as systemd's AmbientCapabilities= gives them). */
function asNobody(capabilities = "+bpf,+net_admin,+perfmon"): string[] {
  return ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", `--inh-caps=-all,${capabilities}`, `--ambient-caps=${capabilities}`, process.execPath, MAIN];
}

/** A directory the non-root user owns (admin sockets). */
function nobodyDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "ep-privs-"));
  chownSync(dir, NOBODY, NOBODY);
  return dir;
}

async function workerPids(admin: string): Promise<number[]> {
  const ws = (await (await fetch("http://localhost/workers", { unix: admin } as RequestInit)).json()) as { pid: number; ready: boolean }[];
  return ws.filter((w) => w.ready).map((w) => w.pid);
}

async function echoes(port: number, n = 20): Promise<void> {
  for (let i = 0; i < n; i++) expect(text(await exchange("192.0.2.1", port, `hello ${i}`, 3000))).toBe(`hello ${i}`);
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what} not within ${ms} ms`);
    await Bun.sleep(50);
  }
}

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

/** SIGTERM a process an upgrade started (not our child) and wait until it is gone. */
async function stopProcess(pid: number): Promise<void> {
  if (alive(pid)) process.kill(pid, "SIGTERM");
  await until(`pid ${pid} gone`, async () => (alive(pid) ? undefined : true), 12_000);
}



/** Both workers hold `want`, and so does the one the supervisor starts after one is killed. */
async function workersAndRestartHold(admin: string, want: ReturnType<typeof caps>): Promise<void> {
  const pids = await workerPids(admin);
  expect(pids).toHaveLength(2);
  for (const pid of pids) expect(caps(pid)).toEqual(want);
  process.kill(pids[0]!, "SIGKILL");
  const again = await until("a restarted worker", async () => {
    const now = await workerPids(admin);
    return now.length === 2 && !now.includes(pids[0]!) ? now : undefined;
  });
  for (const pid of again) expect(caps(pid)).toEqual(want);
}

describe("capabilities once serving", () => {
  test("as root: a single serve keeps CAP_BPF only, nothing inheritable or ambient, and serves", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--workers", "1", "--ports", "7000-7009", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
    expect(caps(f.ep.pid)).toEqual({ eff: BPF, prm: BPF, inh: 0n, amb: 0n });
    await echoes(7003);
  }, 30_000);

  test("the UDP data plane's thread, which reads datagrams, holds only CAP_NET_BIND_SERVICE (root: flows to port 53)", async () => {
    f.ep = await EdgeproxyProcess.start(["--workers", "1", "--mode", "udp", "--ports", "53,7000-7009", "--prefix", "192.0.2.0/24"]);
    expect(caps(f.ep.pid)).toEqual({ eff: BPF, prm: BPF, inh: 0n, amb: 0n });
    // capset(2) is per thread: the UDP plane (a Bun Worker thread) drops its own.
    const threads = readdirSync(`/proc/${f.ep.pid}/task`).map((tid) => ({ tid: Number(tid), comm: readFileSync(`/proc/${f.ep!.pid}/task/${tid}/comm`, "utf8").trim(), ...caps(f.ep!.pid, Number(tid)) }));
    // A thread the plane starts (JSC's heap collector) inherits its name until it sets its own, and its
    // capabilities for good: so every thread named "Worker" now (at least the plane's) must hold only that.
    const udp = threads.filter((t) => t.comm === "Worker");
    if (udp.length !== 1) console.log(threads);
    expect(udp.length).toBeGreaterThanOrEqual(1);
    for (const t of udp) expect({ eff: t.eff, prm: t.prm, inh: t.inh, amb: t.amb }).toEqual({ eff: NET_BIND_SERVICE, prm: NET_BIND_SERVICE, inh: 0n, amb: 0n });
    // It still binds a flow's socket to a port below 1024 (UDP: a datagram may be lost, so up to 3 tries).
    let got = "";
    for (let i = 0; i < 3 && got !== "low port"; i++) got = udpText(await udpExchange("192.0.2.53", 53, "low port"));
    expect(got).toBe("low port");
  }, 30_000);

  test("as root with 2 workers: the supervisor keeps none, each worker CAP_BPF; a killed worker comes back and serves", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-privs-"));
    const admin = join(dir, "admin.sock");
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7009", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
      expect(caps(f.ep.pid)).toEqual({ eff: 0n, prm: 0n, inh: 0n, amb: 0n });
      // Root's exec gives a worker what a start needs although its supervisor holds none.
      await workersAndRestartHold(admin, { eff: BPF, prm: BPF, inh: 0n, amb: 0n });
      await echoes(7001, 40);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 40_000);

  test("as a non-root user with the three capabilities (ambient): workers keep CAP_BPF, the supervisor only holds them to hand on, nothing ambient; a restarted worker and an upgrade's next supervisor and workers get the same", async () => {
    const bpffs = process.env.EDGEPROXY_BPFFS!;
    mkdirSync(join(bpffs, "edgeproxy"), { mode: 0o700 });
    chownSync(join(bpffs, "edgeproxy"), NOBODY, NOBODY);
    chownSync(bpffs, NOBODY, NOBODY);
    const dir = nobodyDir();
    const admin = join(dir, "admin.sock");
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7009", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`], {}, asNobody());
      // The supervisor: nothing effective or ambient; the three in permitted and inheritable, to raise into the ambient set around spawning a worker or successor.
      expect(caps(f.ep.pid)).toEqual({ eff: 0n, prm: START, inh: START, amb: 0n });
      const pids = await workerPids(admin);
      expect(pids).toHaveLength(2);
      for (const pid of pids) expect(caps(pid)).toEqual({ eff: BPF, prm: BPF, inh: 0n, amb: 0n });
      await echoes(7002);
      // A worker restarted after the drop still gets what a start needs (through the ambient set, for the spawn only).
      process.kill(pids[1]!, "SIGKILL");
      const again = await until("a restarted worker", async () => {
        const now = await workerPids(admin);
        return now.length === 2 && !now.includes(pids[1]!) ? now : undefined;
      });
      for (const pid of again) expect(caps(pid)).toEqual({ eff: BPF, prm: BPF, inh: 0n, amb: 0n });
      expect(caps(f.ep.pid)).toEqual({ eff: 0n, prm: START, inh: START, amb: 0n });
      await echoes(7004, 40);
      // An upgrade: the next supervisor and its workers start with what a start needs and drop the same.
      const r = await runEdgeproxy(["upgrade", "--admin", admin]);
      expect(r.stderr).toBe("");
      const next = Number(/new edgeproxy pid (\d+) serves/.exec(r.stdout)?.[1]);
      expect(next).toBeGreaterThan(0);
      try {
        expect(caps(next)).toEqual({ eff: 0n, prm: START, inh: START, amb: 0n });
        const nextWorkers = await workerPids(admin);
        expect(nextWorkers).toHaveLength(2);
        for (const pid of nextWorkers) expect(caps(pid)).toEqual({ eff: BPF, prm: BPF, inh: 0n, amb: 0n });
        await echoes(7005, 40);
        expect(await f.ep.proc.exited).toBe(0);
        f.ep = undefined;
      } finally {
        await stopProcess(next);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 40_000);

  test("as a non-root user: a single serve keeps CAP_BPF effective, and its upgrade's successor starts and drops the same", async () => {
    const bpffs = process.env.EDGEPROXY_BPFFS!;
    mkdirSync(join(bpffs, "edgeproxy"), { mode: 0o700 });
    chownSync(join(bpffs, "edgeproxy"), NOBODY, NOBODY);
    const dir = nobodyDir();
    const admin = join(dir, "admin.sock");
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      f.ep = await EdgeproxyProcess.start(["--workers", "1", "--admin", admin, "--ports", "7000-7009", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`], {}, asNobody());
      expect(caps(f.ep.pid)).toEqual({ eff: BPF, prm: START, inh: START, amb: 0n });
      const r = await runEdgeproxy(["upgrade", "--admin", admin]);
      expect(r.code).toBe(0);
      const pid = Number(/new edgeproxy pid (\d+) serves/.exec(r.stdout)?.[1]);
      expect(pid).toBeGreaterThan(0);
      expect(caps(pid)).toEqual({ eff: BPF, prm: START, inh: START, amb: 0n });
      await echoes(7005);
      expect(await f.ep.proc.exited).toBe(0);
      f.ep = undefined;
      await stopProcess(pid);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 40_000);
});

describe("file capabilities (setcap, as the container image does)", () => {
  test("the compiled binary run by a non-root user with no capability of its own: the supervisor holds none, workers get what a start needs by exec and keep CAP_BPF", async () => {
    const { dir: binDir, binary } = builtBinary();
    const dir = nobodyDir();
    const admin = join(dir, "admin.sock");
    try {
      chmodSync(binDir, 0o755);
      const set = Bun.spawnSync(["setcap", "cap_bpf,cap_net_admin,cap_perfmon=ep", binary], { stderr: "pipe" });
      expect(set.stderr.toString()).toBe("");
      const bpffs = process.env.EDGEPROXY_BPFFS!;
      mkdirSync(join(bpffs, "edgeproxy"), { mode: 0o700 });
      chownSync(join(bpffs, "edgeproxy"), NOBODY, NOBODY);
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      const nobody = ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--inh-caps=-all", binary];
      f.ep = await EdgeproxyProcess.start(["--workers", "2", "--admin", admin, "--ports", "7000-7009", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`], {}, nobody);
      expect(caps(f.ep.pid)).toEqual({ eff: 0n, prm: 0n, inh: 0n, amb: 0n });
      await workersAndRestartHold(admin, { eff: BPF, prm: BPF, inh: 0n, amb: 0n });
      await echoes(7006, 40);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(binDir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("permission problems at start", () => {
  test("a non-root user and a root-owned <bpffs>/edgeproxy: one line naming the path and the fix, exit 2", async () => {
    const bpffs = process.env.EDGEPROXY_BPFFS!;
    mkdirSync(join(bpffs, "edgeproxy"), { mode: 0o700 });
    chownSync(bpffs, NOBODY, NOBODY);
    // --no-admin: the per-test run directory is root's, and this test is about the pins.
    const p = Bun.spawnSync([...asNobody(), "--no-admin", "--prefix", "192.0.2.0/24", "--ports", "7000"], { stderr: "pipe", timeout: 15_000, env: { ...process.env, EDGEPROXY_WORKERS: "2" } });
    expectOneLine(p.stderr.toString(), new RegExp(`permission: ${join(bpffs, "edgeproxy")} is not writable for uid ${NOBODY} \\(owned by uid 0, mode 0700\\): chown -R ${NOBODY}:${NOBODY} ${join(bpffs, "edgeproxy")}`));
    expect(p.exitCode).toBe(2);
  });

  test("a non-root user and an admin socket in a root-owned directory: one line naming it and the fix before any worker starts, exit 2", async () => {
    const bpffs = process.env.EDGEPROXY_BPFFS!;
    mkdirSync(join(bpffs, "edgeproxy"), { mode: 0o700 });
    chownSync(join(bpffs, "edgeproxy"), NOBODY, NOBODY);
    const dir = mkdtempSync(join(tmpdir(), "ep-privs-"));
    chmodSync(dir, 0o755);
    try {
      const socket = join(dir, "run", "admin.sock");
      const p = Bun.spawnSync([...asNobody(), "--admin", socket, "--prefix", "192.0.2.0/24", "--ports", "7000"], { stderr: "pipe", timeout: 15_000, env: { ...process.env, EDGEPROXY_WORKERS: "2" } });
      expectOneLine(p.stderr.toString(), new RegExp(`permission: admin socket ${socket}: ${dir} is not writable for uid ${NOBODY} \\(owned by uid 0, mode 0755\\): install -d -o ${NOBODY} -m 0700 ${join(dir, "run")}`));
      expect(p.exitCode).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a non-root user missing CAP_NET_ADMIN and CAP_PERFMON: one line naming them, exit 2", async () => {
    const p = Bun.spawnSync([...asNobody("+bpf"), "--no-admin", "--prefix", "192.0.2.0/24", "--ports", "7000"], { stderr: "pipe", timeout: 15_000, env: { ...process.env, EDGEPROXY_WORKERS: "2" } });
    expectOneLine(p.stderr.toString(), /privileges: missing CAP_NET_ADMIN, CAP_PERFMON: run as root or grant them/);
    expect(p.exitCode).toBe(2);
  });
});
