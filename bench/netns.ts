// What the upgrade and workers benchmarks share with bench/run.ts's way of
// running: re-execute the script inside a private network + mount namespace
// (nothing attaches BPF or listens in the host's namespace), set that
// namespace up, know which edgeproxy features the binary under test has, and
// stop exactly the processes the script started, including any an edgeproxy
// upgrade spawned from them.
import { dlopen, FFIType } from "bun:ffi";
import { existsSync, readFileSync, readlinkSync, realpathSync } from "node:fs";
import { arch, cpus } from "node:os";
import { join } from "node:path";
import { cliOptions, must, processTree, requireRoot, run, which } from "./sys";

export const ROOT = join(import.meta.dir, "..");
const IN_NETNS = "EDGEPROXY_BENCH_NETNS";

export const cores = cpus().length;

/** True in the re-executed copy, inside the private namespaces. */
export const inPrivateNetns = (): boolean => Boolean(process.env[IN_NETNS]);

/**
 * A benchmark script's entry: parse the flags (a bad one: the message and
 * `usage`, exit 2), then outside the private namespace check for root and
 * run `outer` (which re-executes the script), inside it run `inner`. Exits
 * with their code.
 */
export async function benchMain<O>(name: string, usage: string, parse: (argv: string[]) => O, outer: (o: O, argv: string[]) => Promise<number>, inner: (o: O) => Promise<number>): Promise<never> {
  const argv = process.argv.slice(2);
  const o = cliOptions(name, usage, parse, argv);
  if (inPrivateNetns()) process.exit(await inner(o));
  requireRoot(name, "it creates a network namespace and attaches BPF inside it");
  process.exit(await outer(o, argv));
}

/** Install what is missing: [command, Debian package] pairs, and `also` packages. */
export function ensureTools(want: [string, string][], log: (s: string) => void, also: string[] = []): void {
  const pkgs = new Set([...want.filter(([cmd]) => !which(cmd)).map(([, pkg]) => pkg), ...also]);
  if (run(["sh", "-c", "ldconfig -p | grep -q 'libbpf.so.1 '"]).code !== 0) pkgs.add("libbpf1");
  if (!pkgs.size) return;
  log(`installing ${[...pkgs].join(" ")}`);
  must(["apt-get", "update"], 300_000);
  must(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends", ...pkgs], 600_000);
  // Debian starts packaged services; the benchmarks run their own instances.
  for (const svc of ["nginx", "haproxy"]) if (pkgs.has(svc)) run(["systemctl", "disable", "--now", svc]);
}

/**
 * Run `script` again inside `unshare --net --mount`, its main thread pinned
 * to `core`; resolves to its exit code. Stopped (SIGTERM) after `limitMs`.
 */
export async function reexec(script: string, args: string[], core: number, limitMs: number, log: (s: string) => void): Promise<number> {
  const child = Bun.spawn(["unshare", "--net", "--mount", "--", "taskset", "-c", String(core), process.execPath, script, ...args], {
    cwd: ROOT,
    // The value is the host's netns, so the inner run can check it left it.
    env: { ...process.env, [IN_NETNS]: readlinkSync("/proc/self/ns/net") },
    stdio: ["inherit", "inherit", "inherit"],
  });
  const timer = setTimeout(() => {
    log(`no result after ${Math.round(limitMs / 60_000)} min: stopping`);
    child.kill("SIGTERM");
  }, limitMs);
  const code = await child.exited;
  clearTimeout(timer);
  return code;
}

/**
 * In the re-executed copy: refuse unless this is a fresh namespace, then
 * bring up lo, route the test prefixes to it, widen the ephemeral port range
 * (so one-connection-per-request runs do not wrap onto their own TIME_WAIT
 * sockets, and starting above 9000 so a client never picks a steered port it
 * dials) and mount a bpffs for the pins. Returns the commands run.
 */
export function setupNetns(): string[] {
  if (readlinkSync("/proc/self/ns/net") === process.env[IN_NETNS]) throw new Error("not in a private network namespace; refusing to run");
  // tcp_tw_reuse=1: one-connection-per-request runs reuse the load generator's
  // TIME_WAIT ports at once; without it a proxy that correctly lets the client
  // close first measures wrk's own port search (issue 19).
  const setup = ["ip link set lo up", "ip route add local 192.0.2.0/24 dev lo", "echo 10000 65535 > /proc/sys/net/ipv4/ip_local_port_range", "sysctl -qw net.ipv4.tcp_tw_reuse=1", "mount -t bpf bpf /sys/fs/bpf"];
  if (existsSync("/proc/sys/net/ipv6")) setup.splice(2, 0, "ip -6 route add local 2001:db8::/64 dev lo");
  for (const c of setup) must(["sh", "-c", c]);
  return setup;
}

/** The flags and commands this edgeproxy binary knows. */
export interface Features {
  workers: boolean;
  drainTimeout: boolean;
  upgrade: boolean;
  upgradeProgram: boolean;
  /** `--splice auto|off`: kernel splicing of TCP relays (sockmap). */
  splice: boolean;
  /** `--engine bun|epoll`: the tcp data plane (src/engine/). */
  engine: boolean;
  /** `--engine auto`, the default: tcp relays run on the engine unless told `--engine bun`. */
  engineAuto: boolean;
  /** http services can run on the engine (`--engine epoll` with --mode http). */
  httpEngine: boolean;
  /** Plain http services run on the engine by default (not only with --engine epoll). */
  httpEngineDefault: boolean;
}

/**
 * Flags from --help; commands by asking the binary, which names an unknown
 * one ("edgeproxy: upgrade: unexpected argument"). The probes point at
 * nothing (no admin socket, no object file), so a binary that has the
 * command fails harmlessly; run them only inside the private namespace.
 */
export function features(binary: string, probe: boolean): Features {
  const help = run([binary, "--help"]).out;
  const has = (cmd: string, args: string[]) =>
    probe ? !new RegExp(`^edgeproxy: ${cmd}: (unexpected argument|unknown command)`, "m").test(run([binary, cmd, ...args]).out) : new RegExp(`edgeproxy ${cmd}(?![-\\w])`).test(help);
  return {
    workers: /--workers\b/.test(help),
    drainTimeout: /--drain-timeout\b/.test(help),
    upgrade: has("upgrade", ["--admin", "/nonexistent/edgeproxy-probe.sock"]),
    upgradeProgram: has("upgrade-program", ["--object", "/nonexistent/edgeproxy-probe.o"]),
    splice: /--splice\b/.test(help),
    engine: /--engine\b/.test(help),
    engineAuto: /--engine\b[^-]*"auto" \(default/.test(help),
    httpEngine: /--engine\b[\s\S]{0,400}plain-HTTP\/1\.1/.test(help), // the help text wraps
    // "auto (default: epoll where it serves the service" (http on the engine too); older binaries said "http on bun".
    httpEngineDefault: /--engine\b[\s\S]{0,200}default: epoll where it serves/.test(help),
  };
}

const PR_SET_CHILD_SUBREAPER = 36;

/**
 * Make this process the reaper of its orphaned descendants: an upgrade may
 * start the new edgeproxy from the old one, which then exits; the new one
 * stays our descendant, so we can find it and stop it by pid at the end.
 */
export function becomeSubreaper(): void {
  const { symbols, close } = dlopen("libc.so.6", { prctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i32 } });
  const rc = symbols.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  close();
  if (rc !== 0) throw new Error("prctl(PR_SET_CHILD_SUBREAPER) failed");
}

/**
 * Our live descendants running one of the `exes` (edgeproxy binaries), except
 * one-shot commands such as `upgrade`: the serving processes, however an
 * upgrade or a supervisor started them.
 */
export function processesOf(exes: readonly string[], exclude: readonly string[] = ["upgrade", "upgrade-program", "status"]): number[] {
  const want = new Set(exes.map((e) => realpathSync(e)));
  return processTree(process.pid).filter((pid) => {
    if (pid === process.pid) return false;
    let exe: string;
    try {
      exe = readlinkSync(`/proc/${pid}/exe`); // fails for a zombie or a process gone meanwhile
    } catch {
      return false;
    }
    return want.has(exe) && !exclude.includes(safeRead(`/proc/${pid}/cmdline`).split("\0")[1] ?? "");
  });
}

/** SIGTERM the pids (ours), then SIGKILL whatever is left after `graceMs`. */
export async function stopPids(pids: readonly number[], graceMs = 10_000): Promise<void> {
  const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(safeRead(`/proc/${pid}/status`));
  for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGTERM");
  const deadline = performance.now() + graceMs;
  while (pids.some(alive) && performance.now() < deadline) await Bun.sleep(50);
  for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
}

/** The parent of `pid` (0 if it is gone). */
export function ppid(pid: number): number {
  const stat = safeRead(`/proc/${pid}/stat`);
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1] ?? 0);
}

/** Debian's multiarch directory name, for clang's -I/usr/include/<it> (as build/build.ts does). */
export const multiarch = (): string => ({ x64: "x86_64-linux-gnu", arm64: "aarch64-linux-gnu" })[arch() as "x64" | "arm64"] ?? `${arch()}-linux-gnu`;

function safeRead(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}
