// Spawn -> first steered connection of two (or more) edgeproxy binaries, run
// in turn (the order alternating per run) so the shared machine's noise hits
// each alike: the comparison bench/profiles/start.md quotes. Every start gets
// a fresh network namespace, bpffs and run directory (a cold start: no pins),
// the proxy pinned to core 0 and this probe to core 1, connecting every 1 ms
// as the idle scenario does (bench/idle.ts). --warm measures a second
// instance joining one that already serves (the dispatcher pinned).
//   sudo bun bench/start-ab.ts [--runs N] [--warm] [--workers N] LABEL=BINARY ...
// e.g. sudo bun bench/start-ab.ts --runs 21 main=/work/main/edgeproxy new=./edgeproxy
import { mkdtempSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startPhases } from "./idle";
import { cores, setupNetns } from "./netns";
import { Child, cliOptions, median, must, requireRoot, waitConnectable } from "./sys";

const USAGE = "usage: sudo bun bench/start-ab.ts [--runs N] [--warm] [--workers N] LABEL=BINARY ...";
const MARK = "EDGEPROXY_START_AB_HOST_NETNS";
const AT = { host: "192.0.2.60", port: 8080 };

interface Options {
  runs: number;
  warm: boolean;
  workers: number;
  variants: { label: string; binary: string }[];
}

function parse(argv: string[]): Options {
  const o: Options = { runs: 11, warm: false, workers: 1, variants: [] };
  const count = (flag: string, v: string | undefined, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${flag}: "${v ?? ""}" is not a whole number from 1 to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--runs") o.runs = count(a, argv[++i], 99);
    else if (a === "--workers") o.workers = count(a, argv[++i], cores);
    else if (a === "--warm") o.warm = true;
    else if (/^[\w.-]+=.+/.test(a)) {
      const [label, binary] = [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)];
      o.variants.push({ label, binary });
    } else throw new Error(`unexpected argument ${a}`);
  }
  if (!o.variants.length) throw new Error("name at least one LABEL=BINARY");
  return o;
}

const edgeproxy = (binary: string, workers: number, instance: string, at: { host: string; port: number }) => [
  "taskset", "-c", workers > 1 ? `0-${cores - 1}` : "0",
  binary, "--instance", instance, "--name", instance, "--workers", String(workers), "--ports", String(at.port), "--prefix", `${at.host}/32`, "--origin", "127.0.0.1:9",
];

/** In a fresh namespace: one start, printed as one JSON line {ms, phases}. */
async function inner(binary: string, warm: boolean, workers: number): Promise<number> {
  if (readlinkSync("/proc/self/ns/net") === process.env[MARK]) throw new Error("not in a private network namespace; refusing to run");
  setupNetns();
  const runDir = mkdtempSync(join(tmpdir(), "ep-start-ab-"));
  process.env.EDGEPROXY_RUN_DIR = runDir;
  process.env.EDGEPROXY_BPFFS = "/sys/fs/bpf";
  const started: Child[] = [];
  try {
    if (warm) {
      const a = new Child("first instance", edgeproxy(binary, workers, "first", { host: "192.0.2.61", port: 8081 }));
      started.push(a);
      await a.waitFor(/edgeproxy: ready/, 15_000);
    }
    process.env.EDGEPROXY_START_TRACE = "1";
    const t0 = performance.now();
    const b = new Child("measured instance", edgeproxy(binary, workers, "measured", AT));
    delete process.env.EDGEPROXY_START_TRACE;
    started.push(b);
    const ms = (await waitConnectable(AT.host, AT.port, 15_000, 1)) - t0;
    await b.waitFor(/^edgeproxy: start \+[\d.]+ ms: ready$/m, 10_000).catch(() => undefined);
    console.log(JSON.stringify({ ms, phases: Object.fromEntries(startPhases(b.text)) }));
    return 0;
  } finally {
    for (const c of started.reverse()) await c.stop();
    rmSync(runDir, { recursive: true, force: true });
  }
}

async function outer(o: Options): Promise<number> {
  const ms = new Map<string, number[]>(o.variants.map((v) => [v.label, []]));
  const phases = new Map<string, Map<string, number[]>>(o.variants.map((v) => [v.label, new Map()]));
  const host = readlinkSync("/proc/self/ns/net");
  for (let run = 0; run < o.runs; run++) {
    for (const v of run % 2 ? [...o.variants].reverse() : o.variants) {
      const args = ["--inner", v.binary, ...(o.warm ? ["--warm"] : []), "--workers", String(o.workers)];
      const p = Bun.spawn(["unshare", "--net", "--mount", "--propagation", "private", "--", "taskset", "-c", String(Math.min(1, cores - 1)), process.execPath, import.meta.path, ...args], {
        env: { ...process.env, [MARK]: host },
        stdout: "pipe",
        stderr: "pipe",
      });
      const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
      const [out, err] = [await new Response(p.stdout).text(), await new Response(p.stderr).text()];
      clearTimeout(timer);
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if ((await p.exited) !== 0 || !line) {
        console.error(`start-ab: ${v.label}, run ${run + 1}: no result: ${err.trim().split("\n").slice(-3).join(" / ")}`);
        continue;
      }
      const r = JSON.parse(line) as { ms: number; phases: Record<string, number> };
      ms.get(v.label)!.push(r.ms);
      for (const [k, t] of Object.entries(r.phases)) {
        const key = k.replace(/^service \S+: /, "service: ");
        const per = phases.get(v.label)!;
        if (!per.has(key)) per.set(key, []);
        per.get(key)!.push(t);
      }
    }
  }
  const f = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : "—");
  console.log(`${o.warm ? "warm (a second instance joins a serving one)" : "cold (no pins)"}, --workers ${o.workers}, ${o.runs} runs, variants in turn\n`);
  console.log("| variant | spawn → first steered connection, median ms | min | runs |");
  console.log("| --- | ---: | ---: | ---: |");
  for (const v of o.variants) {
    const xs = ms.get(v.label)!;
    console.log(`| ${v.label} | ${f(median(xs))} | ${f(Math.min(...xs))} | ${xs.length} |`);
  }
  console.log(`\n| phase (ms since the runtime started, median) | ${o.variants.map((v) => v.label).join(" | ")} |`);
  console.log(`| --- |${o.variants.map(() => " ---: |").join("")}`);
  for (const k of phases.get(o.variants[0]!.label)!.keys()) console.log(`| ${k} | ${o.variants.map((v) => f(median(phases.get(v.label)!.get(k) ?? []))).join(" | ")} |`);
  return [...ms.values()].every((xs) => xs.length) ? 0 : 1;
}

const argv = process.argv.slice(2);
if (argv[0] === "--inner") {
  const warm = argv.includes("--warm");
  const workers = Number(argv[argv.indexOf("--workers") + 1] ?? 1);
  try {
    process.exit(await inner(argv[1]!, warm, workers));
  } catch (e) {
    console.error(`start-ab: ${(e as Error).message}`);
    process.exit(1);
  }
}
const opts = cliOptions("start-ab", USAGE, parse, argv);
requireRoot("start-ab", "every start gets a network namespace and bpffs of its own");
must(["which", "unshare", "taskset"]);
process.exit(await outer(opts));
