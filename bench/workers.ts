// Scenario 8, and its own entry: keep-alive throughput with --workers 1 against --workers N (issue 6), side
// by side in one run: wrk -> edgeproxy -> nginx origin, as bench/load.ts
// drives it, several runs alternating the order, medians and their ratio.
//   bun bench/workers.ts [--runs 3] [--seconds 5] [--connections 50] [--workers 2]
//                        [--binary ./edgeproxy] [--proxy-cores 0-1] [--load-core 1]
// Run as root from the repo root; re-executes itself in a private network +
// mount namespace (bench/netns.ts). With 2 cores there is no spare core for
// wrk and the origin: by default edgeproxy (all its processes) may use every
// core and wrk and the origin share the last one, the same mask for both
// worker counts, so the ratio shows what a second worker buys on this
// machine. The pinning is printed with the results.
import { writeFileSync } from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { table as textTable } from "../src/cli/table";
import { parseWrk, wrkCommand, type WrkResult } from "./load";
import { becomeSubreaper, benchMain, cores, ensureTools, features, processesOf, reexec, ROOT, setupNetns, stopPids } from "./netns";
import { nginxCommand, ORIGIN, originConfig, type Endpoint } from "./peers";
import { Child, cpuMicros, httpStatus, median, must, processTree, run, sleep, waitConnectable } from "./sys";
import { f, int, table, times } from "./md";
import type { BenchContext, Scenario, ScenarioResult } from "./scenario";

const log = (s: string) => process.stderr.write(`workers: ${s}\n`);
const USAGE = "usage: bun bench/workers.ts [--runs 3] [--seconds 5] [--connections 50] [--workers 2] [--binary ./edgeproxy] [--proxy-cores 0-1] [--load-core 1]";

interface Options {
  runs: number;
  seconds: number;
  connections: number;
  workers: number;
  binary: string;
  proxyCores: string;
  loadCore: number;
}

function parse(argv: string[]): Options {
  const o: Options = { runs: 3, seconds: 5, connections: 50, workers: 2, binary: join(ROOT, "edgeproxy"), proxyCores: `0-${cores - 1}`, loadCore: cores - 1 };
  for (let i = 0; i < argv.length; i++) {
    const [flag, v] = [argv[i]!, argv[++i]];
    if (v === undefined) throw new Error(`${flag} needs a value`);
    const num = () => {
      if (!/^\d+$/.test(v) || Number(v) < 1) throw new Error(`${flag} needs a whole number above 0`);
      return Number(v);
    };
    if (flag === "--runs") o.runs = num();
    else if (flag === "--seconds") o.seconds = num();
    else if (flag === "--connections") o.connections = num();
    else if (flag === "--workers") o.workers = num();
    else if (flag === "--binary") o.binary = resolve(v);
    else if (flag === "--proxy-cores" && /^[\d,-]+$/.test(v)) o.proxyCores = v;
    else if (flag === "--load-core" && /^\d+$/.test(v)) o.loadCore = Number(v);
    else throw new Error(`unknown argument ${flag} ${v}`);
  }
  return o;
}

interface Sample extends WrkResult {
  run: number;
  workers: number;
  /** CPU of edgeproxy's whole process tree per request, µs, and its use in % of one core. */
  proxyUs: number;
  proxyCpuPct: number;
}

/** One measured run of edgeproxy --workers `workers` answering on `at`. */
async function measure(o: Options, at: Endpoint, workers: number, run_: number): Promise<{ sample: Sample; command: string[]; wrk: string[] }> {
  const command = ["taskset", "-c", o.proxyCores, o.binary, "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", `${ORIGIN.host}:${ORIGIN.port}`, "--workers", String(workers)];
  const ep = new Child(`edgeproxy --workers ${workers}`, command);
  try {
    await ep.waitFor(/edgeproxy: ready/, 15_000);
    await waitConnectable(at.host, at.port, 10_000, 5);
    const status = await httpStatus(at.host, at.port);
    if (status !== 200) throw new Error(`a GET through edgeproxy --workers ${workers} returned ${status || "nothing"}: ${ep.text.trim()}`);
    // Warm up (JIT, every worker's accept path) off the books.
    must(wrkCommand(at, "keep-alive", 1, o.connections, o.loadCore), 20_000);
    const tree = processTree(ep.pid);
    if (tree.length < workers) log(`note: edgeproxy --workers ${workers} runs ${tree.length} process(es)`);
    const wrk = wrkCommand(at, "keep-alive", o.seconds, o.connections, o.loadCore);
    const c0 = cpuMicros(tree);
    const r = run(wrk, (o.seconds + 15) * 1000);
    const c1 = cpuMicros(tree);
    if (r.code !== 0) throw new Error(`${wrk.join(" ")} failed (exit ${r.code}): ${r.out}`);
    const w = parseWrk(r.out);
    return { sample: { ...w, run: run_, workers, proxyUs: (c1 - c0) / w.requests, proxyCpuPct: ((c1 - c0) / 1e6 / w.seconds) * 100 }, command, wrk };
  } finally {
    await ep.stop();
    await stopPids(processesOf([o.binary])); // workers a supervisor left behind, if any
  }
}

/** Origin up, then --workers 1 and --workers N alternately, `o.runs` times. */
async function measureAll(o: Options): Promise<{ samples: Sample[]; commands: Map<number, string[]>; wrk: string[]; originCommand: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-workers-"));
  writeFileSync(join(dir, "origin.conf"), originConfig(dir));
  const originCommand = ["taskset", "-c", String(o.loadCore), ...nginxCommand(dir, "origin.conf")];
  const origin = new Child("nginx origin", originCommand);
  const samples: Sample[] = [];
  const commands = new Map<number, string[]>();
  let wrk: string[] = [];
  try {
    await waitConnectable(ORIGIN.host, ORIGIN.port, 5000, 10);
    const counts = [1, o.workers];
    for (let r = 1; r <= o.runs; r++) {
      // Alternate which goes first, so drift over the run does not favour one.
      for (const [i, workers] of (r % 2 ? counts : [...counts].reverse()).entries()) {
        const m = await measure(o, { host: `192.0.2.${10 * r + i}`, port: 8080 }, workers, r);
        samples.push(m.sample);
        commands.set(workers, m.command);
        wrk = m.wrk;
        const s = m.sample;
        log(`run ${r} --workers ${workers}: ${s.rps.toFixed(0)} req/s, p99 ${s.p99Ms.toFixed(2)} ms, proxy ${s.proxyUs.toFixed(1)} µs/req (${s.proxyCpuPct.toFixed(0)}% cpu), errors ${s.socketErrors + s.non2xx}`);
        await sleep(300);
      }
    }
  } finally {
    await origin.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  return { samples, commands, wrk, originCommand };
}

async function inner(o: Options): Promise<number> {
  const netnsSetup = setupNetns();
  becomeSubreaper();
  const { samples, commands, wrk, originCommand } = await measureAll(o);
  const med = (w: number, k: "rps" | "proxyUs" | "proxyCpuPct" | "p99Ms") => median(samples.filter((s) => s.workers === w).map((s) => s[k]));
  const one = med(1, "rps");
  const n = med(o.workers, "rps");
  const errors = samples.reduce((a, s) => a + s.socketErrors + s.non2xx, 0);
  const out = [
    "",
    `edgeproxy keep-alive throughput, --workers 1 against --workers ${o.workers}: ${o.runs} run(s) × ${o.seconds} s each, medians`,
    `pinned: edgeproxy (all its processes) on cores ${o.proxyCores}; wrk and the nginx origin on core ${o.loadCore} (${cores} cores)`,
    ...[...commands.entries()].map(([w, c]) => `--workers ${w}: ${c.join(" ")}`),
    `load: ${wrk.join(" ").replace(/http:\/\/[^ ]+$/, "http://192.0.2.<run>:8080/")}`,
    `origin: ${originCommand.join(" ")}`,
    `netns: ${netnsSetup.join("; ")}`,
    "",
    ...textTable(
      ["RUN", "WORKERS", "REQ/S", "P99 MS", "PROXY µS/REQ", "PROXY CPU", "ERRORS"],
      samples.map((s) => [String(s.run), String(s.workers), s.rps.toFixed(0), s.p99Ms.toFixed(2), s.proxyUs.toFixed(1), `${s.proxyCpuPct.toFixed(0)}%`, String(s.socketErrors + s.non2xx)]),
    ),
    "",
    ...textTable(
      ["WORKERS", "REQ/S (MEDIAN)", "P99 MS", "PROXY µS/REQ", "PROXY CPU"],
      [1, o.workers].map((w) => [String(w), med(w, "rps").toFixed(0), med(w, "p99Ms").toFixed(2), med(w, "proxyUs").toFixed(1), `${med(w, "proxyCpuPct").toFixed(0)}%`]),
    ),
    "",
    `--workers ${o.workers} / --workers 1 throughput: ${(n / one).toFixed(2)}× (${n.toFixed(0)} vs ${one.toFixed(0)} req/s)${errors ? `; ${errors} wrk errors` : ""}`,
    "",
  ];
  process.stdout.write(out.join("\n"));
  return errors ? 1 : 0;
}

async function outer(o: Options, argv: string[]): Promise<number> {
  if (!(await Bun.file(o.binary).exists())) {
    log(`${o.binary} does not exist: build it first (bun run build)`);
    return 2;
  }
  // Before installing anything: without --workers there is nothing to compare.
  if (!features(o.binary, false).workers) {
    log(`${o.binary} has no --workers option yet (issue 6: a supervisor running N worker processes); nothing to compare. Build a binary that has it and run this again.`);
    return 2;
  }
  ensureTools([["nginx", "nginx"], ["wrk", "wrk"], ["ip", "iproute2"], ["unshare", "util-linux"], ["taskset", "util-linux"], ["getconf", "libc-bin"]], log);
  return reexec(import.meta.path, argv, o.loadCore, (o.runs * 2 * (o.seconds + 20) + 120) * 1000, log);
}

if (import.meta.main) await benchMain("workers", USAGE, parse, outer, inner);

/** Scenario 8 for `bun run bench`: keep-alive req/s with --workers 2 against --workers 1 (needs becomeSubreaper() first). */
export const workersScenario: Scenario = async (ctx: BenchContext): Promise<ScenarioResult> => {
  const title = "Workers: 2 against 1";
  if (!features(ctx.edgeproxy, false).workers) return { title, markdown: "Not measured: this edgeproxy binary has no `--workers`.", ratios: [], plots: [], anomalies: [] };
  const o: Options = { runs: ctx.runs, seconds: ctx.seconds, connections: 50, workers: 2, binary: ctx.edgeproxy, proxyCores: `0-${cores - 1}`, loadCore: cores - 1 };
  ctx.log(`workers: ${o.runs} run(s) × ${o.seconds} s each for --workers 1 and 2`);
  const { samples, commands, wrk, originCommand } = await measureAll(o);
  const med = (w: number, k: "rps" | "proxyUs" | "proxyCpuPct" | "p50Ms" | "p99Ms") => median(samples.filter((s) => s.workers === w).map((s) => s[k]));
  const errors = samples.reduce((a, s) => a + s.socketErrors + s.non2xx, 0);
  const ratio = med(2, "rps") / med(1, "rps");
  const markdown = [
    `wrk keep-alive (\`-t1 -c${o.connections}\`) → edgeproxy → nginx origin; ${o.runs} run(s) × ${o.seconds} s per worker count after a 1 s warm-up, alternating which goes first; medians. ` +
      `edgeproxy (all its processes) may use cores ${o.proxyCores}; wrk and the origin share core ${o.loadCore}, the same mask for both counts, so the ratio shows what a second worker buys on this ${cores}-core machine ` +
      "(with 2 cores the second worker has no core of its own: measuring the issue's target needs ≥ 4). Process CPU: utime+stime of every edgeproxy process per request.",
    "",
    table(
      ["workers", "req/s", "ratio", "p50 ms", "p99 ms", "process µs/req", "process CPU %"],
      [1, o.workers].map((w) => [String(w), int(med(w, "rps")), times(med(w, "rps") / med(1, "rps")), f(med(w, "p50Ms"), 2), f(med(w, "p99Ms"), 2), f(med(w, "proxyUs")), f(med(w, "proxyCpuPct"), 0)]),
    ),
    "",
    ...[...commands.entries()].map(([w, c]) => `- --workers ${w}: \`${c.join(" ")}\``),
    `- load: \`${wrk.join(" ").replace(/http:\/\/[^ ]+$/, "http://192.0.2.<run>:8080/")}\``,
    `- origin: \`${originCommand.join(" ")}\``,
    "",
  ].join("\n");
  return {
    title,
    markdown,
    ratios: [{ scenario: "Workers 2 vs 1", metric: "keep-alive req/s", unit: "req/s", better: "higher", edgeproxy: med(2, "rps"), best: { peer: "edgeproxy --workers 1", value: med(1, "rps") }, target: { text: `≥ 1.7× (needs ≥ 4 cores; ${cores} here)`, met: ratio >= 1.7 } }],
    plots: [{ name: "workers-rps", title: "Workers: keep-alive requests per second (median; higher is better)", ylabel: "requests/s", kind: "bars", series: [1, o.workers].map((w) => ({ label: `--workers ${w}`, points: [{ x: "keep-alive", y: med(w, "rps") }] })) }],
    anomalies: errors ? [`workers: ${errors} wrk errors over all runs`] : [],
  };
};
