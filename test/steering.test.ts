// The truth about steering (issue 16, item 4): an instance whose pinned
// dispatcher goes away (`down --force`, pins deleted by hand) notices within
// a second, fails its health check, drains and exits 1 (it does not re-pin:
// see src/server/watchdog.ts); `down` refuses while an instance serves; a
// supervisor killed with SIGKILL leaves its workers serving, so the steered
// ports never reach another socket, until a new instance takes over.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { TestNetns } from "./helpers/netns";
import { udpExchange, udpText } from "./helpers/udp";

let ns: TestNetns;
let dir: string;
const procs: EdgeproxyProcess[] = [];
const servers: TCPSocketListener<any>[] = [];
/** Processes of ours that are not our children (a killed supervisor's workers): SIGKILLed by pid at the end if still there. */
const orphans: number[] = [];

beforeEach(() => {
  ns = TestNetns.enter();
  dir = mkdtempSync(join(tmpdir(), "ep-steering-"));
});

afterEach(async () => {
  try {
    for (const p of procs.splice(0)) await p.stop();
    for (const pid of orphans.splice(0)) if (alive(pid)) process.kill(pid, "SIGKILL");
    for (const s of servers.splice(0)) s.stop(true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    ns.leave();
  }
});

/** Running (not gone, not a zombie waiting for its reaper). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Poll every 10 ms until `cond` or `ms` pass; the time it held (performance.now()), or undefined. */
async function until(cond: () => boolean, ms: number): Promise<number | undefined> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (cond()) return performance.now();
    await Bun.sleep(10);
  }
  return cond() ? performance.now() : undefined;
}

async function start(args: string[], env: Record<string, string> = {}): Promise<EdgeproxyProcess> {
  const origin = echoOrigin("127.0.0.1");
  servers.push(origin);
  const ep = await EdgeproxyProcess.start(["--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, ...args], env);
  procs.push(ep);
  return ep;
}

const echoes = async (port = 7050, payload = "hi") => text(await exchange("192.0.2.1", port, payload, 3000)) === payload;

/** A plain listener on 0.0.0.0:port (no SO_REUSEPORT): counts the connections it receives. */
function stray(port: number): { listener: TCPSocketListener<undefined>; received: () => number } {
  let n = 0;
  const listener = Bun.listen({
    hostname: "0.0.0.0",
    port,
    socket: {
      open(s) {
        n++;
        s.end("stray");
      },
      data() {},
    },
  });
  servers.push(listener);
  return { listener, received: () => n };
}

/** One datagram from a connected socket: the error its socket reports (an ICMP port unreachable: ECONNREFUSED), or what it got. */
async function udpRefused(host: string, port: number): Promise<string> {
  let done: (o: string) => void = () => {};
  const result = new Promise<string>((r) => (done = r));
  const sock = await Bun.udpSocket({
    hostname: "127.0.0.1",
    connect: { hostname: host, port },
    socket: {
      data: (_s, data) => done(`data ${Buffer.from(data).toString()}`),
      // Bun passes the error as the handler's only argument, whatever the types say.
      error: (...args: unknown[]) => {
        const e = args.find((a) => a instanceof Error) as { code?: string } | undefined;
        done(e?.code ?? "error");
      },
    },
  });
  const timer = setTimeout(() => done("timeout"), 2000);
  try {
    sock.send("x");
    return await result;
  } finally {
    clearTimeout(timer);
    sock.close();
  }
}

describe("steering watchdog", () => {
  test("down under a live serve is refused naming it; down --force: the serve notices within 1 s, health fails, it drains and exits 1", async () => {
    const admin = join(dir, "admin.sock");
    const ep = await start(["--name", "web", "--admin", admin, "--drain-timeout", "5s"]);
    expect(await echoes()).toBe(true);

    const refused = await runEdgeproxy(["down"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr).toContain(`refused: an instance serves here: instance default (pid ${ep.pid}; service web); stop it first, or --force`);
    // Nothing changed: still served, still healthy.
    expect(await echoes()).toBe(true);
    expect((await runEdgeproxy(["health", "--admin", admin])).code).toBe(0);
    const steering = async () => ((await (await fetch("http://localhost/status", { unix: admin } as RequestInit)).json()) as { steering: string }).steering;
    expect(await steering()).toBe("ok");

    // An open connection keeps the drain going, so health is asked of a live process.
    const held = await Bun.connect({ hostname: "192.0.2.1", port: 7051, socket: { data() {} } });
    try {
      // When the pins go, to the ms: the command's own start-up is not the watchdog's time.
      const pins = join(ns.bpffs, "edgeproxy", ns.inode);
      const forcing = runEdgeproxy(["down", "--force"]);
      const removedAt = (await until(() => !existsSync(pins), 10_000))!;
      const forced = await forcing;
      expect(forced.code).toBe(0);
      expect(forced.stdout).toMatch(new RegExp(`^removed \\S+: nothing is steered here any more; instance default \\(pid ${ep.pid}; service web\\) will notice within a second and exit 1\\n$`));
      const noticed = await until(() => ep.stderr.includes("steering lost"), 3000);
      expect(noticed).toBeDefined();
      console.log(`down --force -> "steering lost" logged: ${(noticed! - removedAt).toFixed(0)} ms`);
      expect(noticed! - removedAt).toBeLessThan(1000);
      expect(ep.stderr).toMatch(/edgeproxy: steering lost: the pinned dispatcher \S+ was removed; new connections to its ports are refused: draining, then exit 1/);
      expect(ep.proc.exitCode).toBeNull(); // still draining: health is asked of the running process
      const health = await runEdgeproxy(["health", "--admin", admin]);
      expect(health.code).toBe(1);
      expect(health.stderr).toMatch(/answered HTTP 503: steering lost: the pinned dispatcher \S+ was removed/);
      expect(await steering()).toMatch(/^steering lost: the pinned dispatcher \S+ was removed$/);
      expect((await exchange("192.0.2.1", 7050, "x", 2000)).kind).toBe("refused");

      // A new start while the old one drains pins anew; the old one's exit must leave those pins alone.
      const next = await start(["--name", "web", "--admin", join(dir, "next.sock")]);
      expect(next.stderr).toContain("dispatcher created and pinned at");
      expect(await echoes()).toBe(true);
    } finally {
      held.end();
    }
    expect(await ep.proc.exited).toBe(1);
    expect(existsSync(join(ns.bpffs, "edgeproxy", ns.inode, "link"))).toBe(true);
    expect(await echoes()).toBe(true);
  }, 30_000);

  test("pins deleted by hand under --workers 2: noticed within 1 s, health fails, the instance exits 1; a restart steers again", async () => {
    const admin = join(dir, "admin.sock");
    const args = ["--workers", "2", "--admin", admin, "--drain-timeout", "1s"];
    const ep = await start(args);
    expect(await echoes()).toBe(true);
    const workers = /2 workers: pids (\d+), (\d+)/.exec(ep.stderr)!.slice(1);
    const refused = await runEdgeproxy(["down"]);
    expect(refused.code).toBe(2);
    // The instance, by its record: its leader (the supervisor), not each worker.
    expect(workers).toHaveLength(2);
    expect(refused.stderr).toContain(`instance default (pid ${ep.pid}; service default)`);
    const pins = join(ns.bpffs, "edgeproxy", ns.inode);
    expect(existsSync(join(pins, "link"))).toBe(true);
    rmSync(pins, { recursive: true });
    const removedAt = performance.now();
    const noticed = await until(() => /worker \d: steering lost/.test(ep.stderr), 3000);
    expect(noticed).toBeDefined();
    console.log(`rm -rf of the pins -> "steering lost" logged: ${(noticed! - removedAt).toFixed(0)} ms`);
    expect(noticed! - removedAt).toBeLessThan(1000);
    // The supervisor's line follows the worker's message to it.
    const stopping = /edgeproxy: worker \d lost the steering \(the pinned dispatcher \S+ was removed\): every worker drains, then exit 1/;
    expect(await until(() => stopping.test(ep.stderr), 3000)).toBeDefined();
    expect((await exchange("192.0.2.1", 7050, "x", 2000)).kind).toBe("refused");
    if (ep.proc.exitCode === null) {
      const health = await runEdgeproxy(["health", "--admin", admin]);
      // 503 from the supervisor, or its admin socket already closed by the stop.
      expect(health.code).toBe(1);
    }
    expect(await ep.proc.exited).toBe(1);
    expect(ep.stderr).not.toMatch(/restarting it/); // a worker is not restarted to re-pin behind the operator's back

    const again = await start(args);
    expect(again.stderr).toContain("dispatcher created and pinned at");
    expect(await echoes()).toBe(true);
  }, 30_000);

  test("pins replaced under a stopped instance (SIGSTOP, rm -rf, a new start, SIGCONT): it notices the maps are not its own, exits 1 and leaves the new pins alone", async () => {
    const a = await start(["--name", "web", "--admin", join(dir, "a.sock"), "--drain-timeout", "1s"]);
    expect(await echoes()).toBe(true);
    a.proc.kill("SIGSTOP"); // our own child, by pid
    try {
      rmSync(join(ns.bpffs, "edgeproxy", ns.inode), { recursive: true });
      const b = await start(["--name", "web", "--admin", join(dir, "b.sock")]);
      expect(b.stderr).toContain("dispatcher created and pinned at");
    } finally {
      a.proc.kill("SIGCONT");
    }
    expect(await until(() => a.stderr.includes("steering lost"), 3000)).toBeDefined();
    expect(a.stderr).toMatch(/edgeproxy: steering lost: map ep_\w+ pinned in \S+ is another map \(id \d+, ours \d+\)/);
    expect(await a.proc.exited).toBe(1);
    // A withdrew its services from its own (orphaned) maps; the pins are B's and stay.
    expect(existsSync(join(ns.bpffs, "edgeproxy", ns.inode, "link"))).toBe(true);
    expect(await echoes()).toBe(true);
  }, 30_000);

  test("one map's pin replaced by another map while the serve runs (rm, bpftool map create): noticed within 1 s, the serve exits 1", async () => {
    // The watchdog's cheap look asks inotify whether the pin directory changed (PinWatch): the rm and the new pin are events, so a full look.
    const ep = await start(["--drain-timeout", "1s"]);
    expect(await echoes()).toBe(true);
    const pin = join(ns.bpffs, "edgeproxy", ns.inode, "ep_groups");
    // Let the watchdog verify the pins first: the replacement must be found by its cheap look, not its first full one.
    await Bun.sleep(600);
    const started = performance.now();
    rmSync(pin);
    const made = Bun.spawnSync(["bpftool", "map", "create", pin, "type", "hash", "key", "4", "value", "4", "entries", "1", "name", "ep_groups"], { stderr: "pipe" });
    const returned = performance.now();
    expect(made.exitCode).toBe(0);
    const noticed = await until(() => ep.stderr.includes("steering lost"), 3000);
    expect(noticed).toBeDefined();
    console.log(`ep_groups pin replaced -> "steering lost" logged: at most ${(noticed! - started).toFixed(0)} ms (bpftool ran ${(returned - started).toFixed(0)} ms)`);
    expect(noticed! - returned).toBeLessThan(1000);
    expect(ep.stderr).toMatch(/edgeproxy: steering lost: map ep_groups pinned in \S+ is another map \(id \d+, ours \d+\)/);
    expect(await ep.proc.exited).toBe(1);
  }, 30_000);

  test("the link detached by another tool (bpftool link detach), pins in place: noticed within 1 s, the serve exits 1", async () => {
    const ep = await start(["--drain-timeout", "1s"]);
    expect(await echoes()).toBe(true);
    const started = performance.now();
    const detach = Bun.spawnSync(["bpftool", "link", "detach", "pinned", join(ns.bpffs, "edgeproxy", ns.inode, "link")], { stderr: "pipe" });
    const returned = performance.now();
    expect(detach.exitCode).toBe(0);
    expect(existsSync(join(ns.bpffs, "edgeproxy", ns.inode, "link"))).toBe(true);
    const noticed = await until(() => ep.stderr.includes("steering lost"), 3000);
    expect(noticed).toBeDefined();
    console.log(`bpftool link detach -> "steering lost" logged: at most ${(noticed! - started).toFixed(0)} ms (the command ran ${(returned - started).toFixed(0)} ms)`);
    expect(noticed! - returned).toBeLessThan(1000);
    expect(ep.stderr).toMatch(/edgeproxy: steering lost: the sk_lookup link \S+ is detached from this network namespace/);
    expect(await ep.proc.exited).toBe(1);
  }, 30_000);

  test("a UDP service's SOCKMAP entries deleted by another command (unregister): noticed within 1 s, the serve exits 1", async () => {
    const ep = await EdgeproxyProcess.start(["--name", "dns", "--mode", "udp", "--ports", "53", "--prefix", "192.0.2.0/24", "--drain-timeout", "1s"]);
    procs.push(ep);
    expect(udpText(await udpExchange("192.0.2.53", 53, "before"))).toBe("before");
    const started = performance.now();
    const r = await runEdgeproxy(["unregister", "dns"]);
    const returned = performance.now();
    expect(r.code).toBe(0);
    const noticed = await until(() => ep.stderr.includes("steering lost"), 3000);
    expect(noticed).toBeDefined();
    // The entries go somewhere between the command's start and its return.
    console.log(`unregister -> "steering lost" logged: at most ${(noticed! - started).toFixed(0)} ms (the command ran ${(returned - started).toFixed(0)} ms)`);
    expect(noticed! - returned).toBeLessThan(1000);
    expect(ep.stderr).toContain("edgeproxy: steering lost: service dns udp/ipv4: no socket registered (its connections are refused)");
    // Bound with no socket: SK_DROP, which the client sees as a port unreachable.
    expect(await udpRefused("192.0.2.53", 53)).toBe("ECONNREFUSED");
    expect(await ep.proc.exited).toBe(1);
  }, 30_000);

  test("kill -9 of the supervisor (--workers 2): its workers keep serving, nothing reaches a plain listener on 0.0.0.0, a new instance takes over", async () => {
    const admin = join(dir, "admin.sock");
    const tmp = join(dir, "tmp");
    Bun.spawnSync(["mkdir", tmp]);
    const args = ["--workers", "2", "--admin", admin, "--drain-timeout", "2s"];
    const ep = await start(args, { TMPDIR: tmp });
    const pids = /2 workers: pids (\d+), (\d+)/.exec(ep.stderr)!.slice(1).map(Number);
    orphans.push(...pids);
    // Where the workers' private admin sockets are: the supervisor's directory.
    const runtime = dirname(/EDGEPROXY_WORKER_ADMIN=([^\0]+)/.exec(readFileSync(`/proc/${pids[0]}/environ`, "utf8"))![1]!);
    expect(runtime.startsWith(tmp)).toBe(true);
    const plain = stray(7050);
    expect(text(await exchange("127.0.0.1", 7050, "", 2000))).toBe("stray"); // it listens (outside the prefix)

    // A client loop on the steered address of the stray's port, all along.
    const outcomes = new Map<string, number>();
    let stopLoop = false;
    const loop = (async () => {
      for (let i = 0; !stopLoop && i < 100_000; i++) {
        const o = await exchange("192.0.2.1", 7050, `n${i}`, 2000);
        const k = text(o) === `n${i}` ? "served" : text(o) === "stray" ? "stray" : o.kind;
        outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
        await Bun.sleep(2);
      }
    })();
    try {
      await Bun.sleep(300);
      ep.proc.kill("SIGKILL"); // our own child, by pid
      await ep.proc.exited;
      expect(await until(() => ep.stderr.split("supervisor gone: keeps serving").length === 3, 3000)).toBeDefined();
      await Bun.sleep(1500);
      for (const pid of pids) expect(alive(pid)).toBe(true);
      const refused = await runEdgeproxy(["down"]);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain(`instance default (pid ${ep.pid}, its supervisor gone, workers still serve; service default)`);
      expect(outcomes.get("served")).toBeGreaterThan(0);
      const servedOrphaned = outcomes.get("served")!;
      // Nothing reached the plain listener while the workers were orphaned. It
      // goes now: a start leaves a port that something already listens on
      // alone (a hole, unless --take-over), a policy of its own.
      expect(plain.received()).toBe(1); // only the probe to 127.0.0.1 above
      expect(outcomes.get("stray")).toBeUndefined();
      plain.listener.stop(true);

      // Recovery: the same instance started again joins the workers' groups; they drain and exit.
      const next = await start(args, { TMPDIR: tmp });
      const gone = await until(() => pids.every((p) => !alive(p)), 10_000);
      expect(gone).toBeDefined();
      // Their last lines may still be in the pipe when they are gone.
      expect(await until(() => ep.stderr.split("a new instance took over its ports: drained; stopped").length === 3, 3000)).toBeDefined();
      await Bun.sleep(300);
      expect(outcomes.get("served")!).toBeGreaterThan(servedOrphaned);
      expect(await echoes()).toBe(true);
      expect(next.proc.exitCode).toBeNull();
    } finally {
      stopLoop = true;
      await loop;
    }
    console.log(`client loop across kill -9 and take-over: ${JSON.stringify(Object.fromEntries(outcomes))}`);
    expect([...outcomes.keys()]).toEqual(["served"]);
    // The killed supervisor's directory of worker sockets went with its last worker.
    expect(existsSync(runtime)).toBe(false);
  }, 60_000);
});
