// Issue 19's engine work: the tcp scenario's load (wrk -t1 -c50 → proxy alone
// on core 0 → nginx origin; bench/load.ts) through nginx stream, HAProxy and
// one or more edgeproxy binaries on `--engine epoll`, side by side in one run
// (an A/B of engine changes against the peers), or, with --syscalls, system
// calls per request counted by perf's syscall tracepoints over the same wrk
// run, or, with --perf DIR, a `perf record -e cpu-clock -g` of each peer
// (--jsc K=V sets BUN_JSC_K=V for ours, their output lands in DIR), or, with
// --idle S, our peers' CPU per thread with no load.
//   bun bench/engine-ab.ts --bin LABEL=PATH [--bin ...] [--runs N] [--seconds S] [--warmup S] [--syscalls | --perf DIR | --idle S] [--no-haproxy] [--jsc K=V]
// Run as root from the repo root; re-executes itself in a private network +
// mount namespace (bench/netns.ts), like bench/run.ts.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadScenario, MODES, summarize, wrkCommand, type Mode } from "./load";
import { f, int, table } from "./md";
import { front, nginxCommand, ORIGIN, originConfig, peers, startPeer, type Peer } from "./peers";
import { benchMain, cores, reexec, setupNetns } from "./netns";
import { Child, CLK_TCK, httpStatus, inScratch, processTree, run, sleep, waitConnectable } from "./sys";
import { withArgs } from "./tcp";

const USAGE = "usage: bun bench/engine-ab.ts --bin LABEL=PATH [--bin ...] [--runs N] [--seconds S] [--syscalls | --perf DIR] [--no-haproxy] [--jsc OPTION=VALUE] [--warmup S] [--idle S]";
const log = (s: string) => process.stderr.write(`engine-ab: ${s}\n`);

interface Options {
  bins: [string, string][];
  runs: number;
  seconds: number;
  syscalls: boolean;
  perf: string | undefined;
  haproxy: boolean;
  jsc: string[];
  /** --idle S: CPU per thread of each of our peers over S seconds with no load. */
  idle: number;
  /** Warm-up seconds per mode, off the books. */
  warmup: number;
}

function parse(argv: string[]): Options {
  const o: Options = { bins: [], runs: 3, seconds: 4, syscalls: false, perf: undefined, haproxy: true, jsc: [], warmup: 1, idle: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--bin") {
      const [label, path] = (argv[++i] ?? "").split("=");
      if (!label || !path) throw new Error("--bin takes LABEL=PATH");
      o.bins.push([label, resolve(path)]);
    } else if (a === "--runs") o.runs = Number(argv[++i]);
    else if (a === "--seconds") o.seconds = Number(argv[++i]);
    else if (a === "--syscalls") o.syscalls = true;
    else if (a === "--perf") o.perf = resolve(argv[++i] ?? "");
    else if (a === "--no-haproxy") o.haproxy = false;
    else if (a === "--jsc") o.jsc.push(argv[++i] ?? "");
    else if (a === "--warmup") o.warmup = Number(argv[++i]);
    else if (a === "--idle") o.idle = Number(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.bins.length) throw new Error("name at least one --bin");
  if (!(o.warmup >= 1 && o.warmup <= 30)) throw new Error("--warmup 1-30");
  if (!(o.runs >= 1 && o.runs <= 10) || !(o.seconds >= 1 && o.seconds <= 30)) throw new Error("--runs 1-10, --seconds 1-30");
  return o;
}

const proxyCore = 0;
const loadCore = cores > 1 ? 1 : 0;
const CONNECTIONS = 50;

/** The syscalls counted one by one (the rest are in the total). */
const CALLS = ["accept4", "socket", "connect", "epoll_ctl", "epoll_wait", "recvfrom", "sendto", "readv", "writev", "read", "write", "shutdown", "close", "setsockopt", "getsockopt", "getsockname", "getpeername", "ioctl"];

function thePeers(o: Options, dir: string): Peer[] {
  const base = peers(dir, o.bins[0]![1]);
  const others = base.filter((p) => p.name === "nginx stream" || (o.haproxy && p.name.startsWith("haproxy")));
  const edge = base.find((p) => p.name === "edgeproxy")!;
  const ours = o.bins.map(([label, path]) => withArgs({ ...edge, name: `edgeproxy (${label})`, command: () => [path, ...edge.command(ORIGIN).slice(1)] }, ["--workers", "1", "--engine", "epoll"]));
  return [...ours, ...others];
}

/** Count syscalls (perf's tracepoints, all threads of the peer's processes) over one wrk run per mode. */
async function profile(o: Options, dir: string, all: Peer[]): Promise<void> {
  writeFileSync(join(dir, "origin.conf"), originConfig(dir));
  const origin = new Child("nginx origin", ["taskset", "-c", String(loadCore), ...nginxCommand(dir, "origin.conf")]);
  const rows: string[][] = [];
  try {
    await waitConnectable(ORIGIN.host, ORIGIN.port, 5000, 10);
    for (const [index, peer] of all.entries()) {
      const at = front(1, index);
      // --jsc K=V: JSC options for our peers only (BUN_JSC_K=V), e.g. reportCompileTimes=1; their output goes to --perf DIR.
      const jsc = peer.name.startsWith("edgeproxy") ? o.jsc : [];
      for (const kv of jsc) process.env[`BUN_JSC_${kv.split("=")[0]}`] = kv.split("=")[1];
      const proc = startPeer(peer, at, proxyCore, dir)!;
      for (const kv of jsc) delete process.env[`BUN_JSC_${kv.split("=")[0]}`];
      try {
        await waitConnectable(at.host, at.port, 10_000, 5).catch((e) => {
          throw new Error(`${peer.name}: ${(e as Error).message}: ${proc.text}`);
        });
        if (peer.name.startsWith("edgeproxy")) await proc.waitFor(/ready/, 10_000);
        if ((await httpStatus(at.host, at.port)) !== 200) throw new Error(`${peer.name}: no 200 through it`);
        // The same warm-up as bench/load.ts: each mode for a second, off the books.
        for (const mode of MODES) run(wrkCommand(at, mode, o.warmup, CONNECTIONS, loadCore), 60_000);
        const pids = processTree(proc.pid).filter((p) => p !== proc.pid || !peer.name.startsWith("nginx"));
        for (const mode of MODES) {
          const wrk = wrkCommand(at, mode, o.seconds, CONNECTIONS, loadCore);
          let spy: Bun.Subprocess;
          const out = join(dir, `${index}-${mode}.out`);
          if (o.perf) spy = Bun.spawn(["perf", "record", "-e", "cpu-clock", "-g", "-o", join(o.perf, `${peer.name.replace(/\W+/g, "_")}-${mode}.data`), "-p", pids.join(",")], { stdout: "ignore", stderr: "ignore" });
          else spy = Bun.spawn(["perf", "stat", "-x,", "-o", out, "-e", ["raw_syscalls:sys_enter", ...CALLS.map((c) => `syscalls:sys_enter_${c}`)].join(","), "-p", pids.join(",")], { stdout: "ignore", stderr: "ignore" });
          await sleep(300);
          const r = run(wrk, (o.seconds + 15) * 1000);
          spy.kill("SIGINT");
          await spy.exited;
          const requests = Number(r.out.match(/(\d+) requests in/)?.[1] ?? NaN);
          log(`${peer.name} ${mode}: ${requests} requests`);
          if (o.perf) continue;
          const counts = new Map<string, number>();
          for (const line of (await Bun.file(out).text()).split("\n")) {
            const [v, , ev] = line.split(",");
            if (ev && v !== undefined) counts.set(ev.replace(/^.*sys_enter_?/, "") || "total", Number(v));
          }
          rows.push([peer.name, mode, int(requests), f((counts.get("total") ?? NaN) / requests, 2), ...CALLS.map((c) => f((counts.get(c) ?? 0) / requests, 2))]);
        }
      } finally {
        await proc.stop();
        if (o.perf) writeFileSync(join(o.perf, `${peer.name.replace(/\W+/g, "_")}.log`), proc.text);
      }
      await sleep(300);
    }
  } finally {
    await origin.stop();
  }
  if (!o.perf) process.stdout.write(`${table(["peer", "mode", "requests", "syscalls/req", ...CALLS], rows)}\n`);
}

/** Each thread's utime+stime (µs) of `pid`, by thread name. */
function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8");
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const us = ((Number(f[11]) + Number(f[12])) / CLK_TCK) * 1e6;
    out.set(`${name} ${t}`, us);
  }
  return out;
}

/** With no load: CPU per thread over o.idle seconds (what a serving process spends per second regardless of requests). */
async function idle(o: Options, dir: string, ours: Peer[]): Promise<void> {
  for (const [index, peer] of ours.entries()) {
    const at = front(1, index);
    const proc = startPeer(peer, at, proxyCore, dir)!;
    try {
      await proc.waitFor(/ready/, 10_000);
      await sleep(2000);
      const a = threadCpu(proc.pid);
      await sleep(o.idle * 1000);
      const b = threadCpu(proc.pid);
      const rows = [...b].map(([k, v]) => [k, f((v - (a.get(k) ?? 0)) / 1000 / o.idle, 2)]);
      process.stdout.write(`${peer.name}, idle, ms of CPU per second per thread:\n${table(["thread", "ms/s"], rows)}\n\n`);
    } finally {
      await proc.stop();
    }
  }
}

await benchMain(
  "engine-ab",
  USAGE,
  parse,
  (_o, argv) => reexec(import.meta.path, argv, loadCore, 30 * 60_000, log),
  async (o) => {
    setupNetns();
    return inScratch("edgeproxy-engine-ab-", async (dir) => {
      const all = thePeers(o, dir);
      if (o.idle > 0) {
        await idle(o, dir, all.filter((p) => p.name.startsWith("edgeproxy")));
        return 0;
      }
      if (o.syscalls || o.perf) {
        await profile(o, dir, all);
        return 0;
      }
      const load = await loadScenario(dir, o.bins[0]![1], { runs: o.runs, seconds: o.seconds, warmupSeconds: o.warmup, connections: CONNECTIONS, proxyCore, loadCore }, log, all);
      const sums = summarize(load.samples);
      const rows = sums.map((s) => [s.peer, s.mode, f(s.coreUs), f(s.proxyUs), `${f(s.proxyUsMin)}–${f(s.proxyUsMax)}`, int(s.rps), int(s.errors)]);
      process.stdout.write(`${table(["peer", "mode", "core µs/req", "process µs/req", "process min–max", "req/s", "errors"], rows)}\n\nPer run (core / process µs per request):\n\n`);
      const per = sums.map((s) => [s.peer, s.mode as Mode, ...load.samples.filter((x) => x.peer === s.peer && x.mode === s.mode).map((x) => `${f(x.coreUs)} / ${f(x.proxyUs)}`)]);
      process.stdout.write(`${table(["peer", "mode", ...Array.from({ length: o.runs }, (_, r) => `run ${r + 1}`)], per)}\n`);
      if (load.anomalies.length) process.stdout.write(`anomalies:\n${load.anomalies.map((a) => `  - ${a}`).join("\n")}\n`);
      return 0;
    });
  },
);
