// `bun run bench`: every scenario of issue 7, side by side with the peers,
// in one command. Run as root from the repo root: installs missing tools from
// Debian, builds ./edgeproxy if it is missing (or with --build), re-executes
// itself inside a private network + mount namespace (nothing attaches BPF or
// listens in the host's namespace), runs the selected scenarios one after
// another, each bounded in time, and writes bench/results/<date>-<host>.md
// plus one PNG per plot. See bench/flags.ts for the flags.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, hostname, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { parseFlags, USAGE, type Flags, type ScenarioName } from "./flags";
import { becomeSubreaper, benchMain, cores, ensureTools, processesOf, reexec, ROOT, setupNetns, stopPids } from "./netns";
import { renderPlot } from "./plot";
import { renderReport, type Machine, type Ran } from "./report";
import { CpuSnapshot } from "./procstat";
import { REGISTRY, type Entry } from "./registry";
import type { BenchContext, Scenario } from "./scenario";
import { killAll, must, run, which } from "./sys";

const EDGEPROXY = join(ROOT, "edgeproxy");
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

// Two cores: the proxy alone on one, load generators and origins on the other. On one core, everything shares it.
const PROXY_CORE = 0;
const LOAD_CORE = cores > 1 ? 1 : 0;

/** Busy share of the idle proxy core above which the run warns that core figures include others' work. */
const IDLE_NOISE_PCT = 3;

const selected = (o: Flags): Entry[] => o.only.map((n: ScenarioName) => REGISTRY.find((e) => e.name === n)!);

/** The plan, one line per scenario with its estimate; returns the total in seconds. */
function plan(o: Flags): number {
  let total = 0;
  for (const e of selected(o)) {
    const s = e.estimate(o.runs, o.seconds, o.quick);
    total += s;
    log(`  ${e.name.padEnd(9)} ~${String(Math.round(s)).padStart(4)} s  ${e.what}`);
  }
  log(`  total    ~${Math.floor(total / 60)} min ${Math.round(total % 60)} s (${o.runs} run(s) × ${o.seconds} s per measurement)`);
  return total;
}

/** Install what is missing, Debian package names. */
function ensurePeers(build: boolean): void {
  const want: [string, string][] = [
    ["nginx", "nginx"], ["haproxy", "haproxy"], ["wrk", "wrk"], ["iperf3", "iperf3"], ["gnuplot", "gnuplot-nox"],
    ["h2load", "nghttp2-client"], ["openssl", "openssl"],
    ["ip", "iproute2"], ["unshare", "util-linux"], ["taskset", "util-linux"], ["getconf", "libc-bin"],
  ];
  if (build) want.push(["clang", "clang"]);
  const streamMissing = () => which("nginx") && /--with-stream=dynamic/.test(run(["nginx", "-V"]).out) && !existsSync("/usr/lib/nginx/modules/ngx_stream_module.so");
  const hadIperf = which("iperf3");
  ensureTools(want, log, !which("nginx") || streamMissing() ? ["libnginx-mod-stream"] : []);
  // Debian may start iperf3's daemon (it asks; noninteractive answers no); the benchmark runs its own.
  if (!hadIperf) run(["systemctl", "disable", "--now", "iperf3"]);
}

async function outer(o: Flags, argv: string[]): Promise<number> {
  log(`plan (${o.quick ? "quick" : "full"}):`);
  const estimate = plan(o);
  const build = !existsSync(EDGEPROXY) || o.build;
  ensurePeers(build);
  if (build) {
    log("building ./edgeproxy");
    must(["bun", "run", "build"], 300_000);
  }
  // Each scenario is bounded inside; this bounds the whole run if one hangs anyway.
  return reexec(import.meta.path, argv, LOAD_CORE, (estimate * 2 + 300) * 1000, log);
}

function machine(): Machine {
  const first = (cmd: string[]) => run(cmd).out.trim().split("\n")[0] ?? "?";
  return {
    date: new Date().toISOString().slice(0, 10),
    host: hostname(),
    cpu: cpus()[0]?.model ?? "?",
    cores,
    kernel: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    nofile: run(["sh", "-c", "ulimit -Sn; ulimit -Hn"]).out.trim().replace("\n", " soft / ") + " hard",
    versions: {
      edgeproxy: first([EDGEPROXY, "--version"]),
      "edgeproxy source": `git ${first(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])} (binary built ${new Date(Bun.file(EDGEPROXY).lastModified).toISOString()})`,
      bun: Bun.version,
      nginx: first(["nginx", "-v"]),
      haproxy: first(["haproxy", "-v"]),
      wrk: first(["wrk", "-v"]),
      iperf3: first(["iperf3", "--version"]),
      gnuplot: first(["gnuplot", "--version"]),
      h2load: first(["h2load", "--version"]),
      openssl: first(["openssl", "version"]),
    },
  };
}

/** Run one scenario, bounded: a scenario that overruns is abandoned and its processes killed. */
async function runOne(e: Entry, scenario: Scenario, ctx: BenchContext, limitS: number): Promise<Omit<Ran, "pngs"> & { overran: boolean }> {
  const t0 = performance.now();
  const took = () => (performance.now() - t0) / 1000;
  let timer: Timer | undefined;
  try {
    const overrun = new Promise<"overran">((r) => (timer = setTimeout(() => r("overran"), limitS * 1000)));
    const result = await Promise.race([scenario(ctx), overrun]);
    if (result === "overran") {
      killAll();
      return { name: e.name, seconds: took(), failure: `did not finish within ${Math.round(limitS)} s (3× its estimate + 60 s); its processes were killed and later scenarios skipped`, overran: true };
    }
    return { name: e.name, seconds: took(), result, overran: false };
  } catch (err) {
    return { name: e.name, seconds: took(), failure: `failed: ${(err as Error).message}`, overran: false };
  } finally {
    clearTimeout(timer);
    // Whatever a scenario left behind (an upgrade's or supervisor's orphans) goes before the next.
    await stopPids(processesOf([EDGEPROXY]));
  }
}

async function inner(o: Flags): Promise<number> {
  const t0 = performance.now();
  let netnsSetup: string[];
  try {
    netnsSetup = setupNetns();
  } catch (e) {
    log((e as Error).message);
    return 2;
  }
  becomeSubreaper();
  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-bench-"));
  // Admin sockets in the scratch directory: the default /run/edgeproxy is shared with the host (a unix socket path
  // crosses network namespaces), so an edgeproxy serving there would refuse to start ours ("another server is listening").
  process.env.EDGEPROXY_RUN_DIR = join(dir, "run");
  mkdirSync(process.env.EDGEPROXY_RUN_DIR);
  const cleanup = () => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      log(`${sig}: stopping`);
      cleanup();
      process.exit(130);
    });
  }
  try {
    const ctx: BenchContext = { dir, edgeproxy: EDGEPROXY, quick: o.quick, runs: o.runs, seconds: o.seconds, proxyCore: PROXY_CORE, loadCore: LOAD_CORE, log };
    const m = machine();
    const resultsDir = join(import.meta.dir, "results");
    mkdirSync(resultsDir, { recursive: true });
    // A partial or quick run never overwrites the day's full results.
    const partial = o.only.length < REGISTRY.length ? `-${o.only.join("-")}` : "";
    const base = `${m.date}-${m.host}${partial}${o.quick ? "-quick" : ""}`;
    const ran: Ran[] = [];
    const anomalies: string[] = [];
    let stopped = false;
    for (const e of selected(o)) {
      if (stopped) {
        ran.push({ name: e.name, seconds: 0, failure: "skipped: an earlier scenario overran", pngs: new Map() });
        continue;
      }
      const scenario = await e.load();
      if (typeof scenario === "string") {
        log(`scenario ${e.name}: not available: ${scenario}`);
        ran.push({ name: e.name, seconds: 0, unavailable: scenario, pngs: new Map() });
        continue;
      }
      log(`scenario ${e.name}`);
      // Core CPU counts whatever else runs on the proxy core (another user's processes): measure that floor first.
      const idle0 = CpuSnapshot.now();
      await Bun.sleep(1000);
      const idlePct = CpuSnapshot.now().busyMicrosSince(idle0, PROXY_CORE) / 1e4;
      if (idlePct > IDLE_NOISE_PCT) anomalies.push(`before scenario ${e.name}, with nothing of ours running, core ${PROXY_CORE} was ${idlePct.toFixed(0)}% busy for a second: something else on this machine adds to its core CPU figures`);
      const r = await runOne(e, scenario, ctx, e.estimate(o.runs, o.seconds, o.quick) * 3 + 60);
      stopped = r.overran;
      log(`scenario ${e.name}: ${r.failure ?? "done"} (${r.seconds.toFixed(0)} s)`);
      const pngs = new Map<string, string>();
      for (const p of r.result?.plots ?? []) {
        const file = `${base}-${p.name}.png`;
        try {
          renderPlot(p, join(resultsDir, file), dir);
          pngs.set(p.name, file);
        } catch (err) {
          anomalies.push((err as Error).message);
        }
      }
      ran.push({ ...r, pngs });
    }
    const md = renderReport({
      m, quick: o.quick, argv: `bun run bench${process.argv.length > 2 ? ` ${process.argv.slice(2).join(" ")}` : ""}`, runs: o.runs, seconds: o.seconds,
      proxyCore: PROXY_CORE, loadCore: LOAD_CORE, netnsSetup, ran, anomalies, wallSeconds: (performance.now() - t0) / 1000,
    });
    const file = join(resultsDir, `${base}.md`);
    writeFileSync(file, md);
    process.stdout.write(`${md}\n`);
    log(`wrote ${file} and ${ran.reduce((a, r) => a + r.pngs.size, 0)} plot(s)`);
    // A scenario another helper has not delivered yet is listed, not a failure.
    return ran.every((r) => r.result || r.unavailable) ? 0 : 1;
  } finally {
    cleanup();
  }
}

if (import.meta.main) await benchMain("bench", USAGE, parseFlags, outer, inner);
