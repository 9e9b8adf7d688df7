// What a cold start's BPF load costs, per object (bench/profiles/start.md):
// bpf_object__load with the maps as a cold start creates them (the wall time
// of the call: map creation and the verifier), and per program the
// verifier's own figures (log level 4, BPF_LOG_STATS: "processed N insns",
// "verification time") from a load with every map shrunk to one entry.
// Objects are loaded in turn, the order alternating per run, so the
// machine's noise hits each alike; minimum and median over the runs.
//   sudo bun bench/bpf-load.ts [--runs N] [OBJECT.o ...]   (default: dist/dispatcher.bpf.o, 15 runs)
// Nothing is attached or pinned: every load is closed again.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BpfObject } from "../src/ebpf/object";
import { cliOptions, median, requireRoot } from "./sys";

const PROGRAMS = ["ep_dispatch", "ep_migrate", "ep_source"];
const USAGE = "usage: bun bench/bpf-load.ts [--runs N] [OBJECT.o ...]";

function parse(argv: string[]): { runs: number; objects: string[] } {
  let runs = 15;
  const objects: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") {
      runs = Number(argv[++i]);
      if (!Number.isInteger(runs) || runs < 1 || runs > 1000) throw new Error(`--runs: "${argv[i] ?? ""}" is not a count of 1-1000`);
    } else if (argv[i]!.startsWith("-")) throw new Error(`unknown flag ${argv[i]}`);
    else objects.push(argv[i]!);
  }
  return { runs, objects: objects.length ? objects : [join(import.meta.dir, "../dist/dispatcher.bpf.o")] };
}

/** One load as a cold start makes it: ms in bpf_object__load. */
function fullLoad(image: Uint8Array): number {
  const o = BpfObject.open(image);
  try {
    for (const p of PROGRAMS) if (o.hasProgram(p)) o.program(p);
    const t = performance.now();
    o.load();
    return performance.now() - t;
  } finally {
    o.close();
  }
}

/** The verifier's figures per program, from a load with tiny maps. */
function verifierStats(image: Uint8Array): Map<string, { insns: number; us: number }> {
  const o = BpfObject.open(image);
  try {
    for (const m of o.maps()) m.setMaxEntries(1);
    const progs = PROGRAMS.filter((p) => o.hasProgram(p)).map((p) => o.program(p));
    for (const p of progs) p.setLogLevel(4);
    o.load();
    return new Map(
      progs.map((p) => {
        const log = p.verifierLog();
        return [p.name, { insns: Number(/processed (\d+) insns/.exec(log)?.[1]), us: Number(/verification time (\d+) usec/.exec(log)?.[1]) }];
      }),
    );
  } finally {
    o.close();
  }
}

const opts = cliOptions("bpf-load", USAGE, parse);
requireRoot("bpf-load", "it loads BPF programs and creates maps");
const images = opts.objects.map((path) => ({ path, image: new Uint8Array(readFileSync(path)) }));
const loads = new Map<string, number[]>(images.map((i) => [i.path, []]));
const stats = new Map<string, Map<string, { insns: number; us: number[] }>>(images.map((i) => [i.path, new Map()]));
for (let run = 0; run < opts.runs; run++) {
  for (const { path, image } of run % 2 ? [...images].reverse() : images) {
    loads.get(path)!.push(fullLoad(image));
    for (const [name, s] of verifierStats(image)) {
      const per = stats.get(path)!;
      if (!per.has(name)) per.set(name, { insns: s.insns, us: [] });
      per.get(name)!.us.push(s.us);
    }
  }
}
const f = (n: number) => n.toFixed(1);
console.log(`${opts.runs} runs, objects in turn; min / median\n`);
console.log("| object | program | processed insns | verification ms | bpf_object__load, full maps, ms |");
console.log("| --- | --- | ---: | ---: | ---: |");
for (const { path } of images) {
  const l = loads.get(path)!;
  const per = [...stats.get(path)!];
  const total = per.reduce((a, [, s]) => a.map((x, i) => x + s.us[i]!), new Array<number>(opts.runs).fill(0));
  for (const [name, s] of per) console.log(`| ${path} | ${name} | ${s.insns.toLocaleString("en")} | ${f(Math.min(...s.us) / 1000)} / ${f(median(s.us) / 1000)} | |`);
  console.log(`| ${path} | all | ${per.reduce((a, [, s]) => a + s.insns, 0).toLocaleString("en")} | ${f(Math.min(...total) / 1000)} / ${f(median(total) / 1000)} | ${f(Math.min(...l))} / ${f(median(l))} |`);
}
