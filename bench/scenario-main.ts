// Run one scenario of the bench/scenario.ts contract on its own and print its
// report section: for working on a scenario without the whole suite.
//   bun bench/scenario-main.ts coverage|lookup|idle|slowloris [--quick] [--runs N] [--edgeproxy PATH]
// Run as root from the repo root, after `bun run build`. Re-executes itself in
// a private network + mount namespace (bench/netns.ts), like bench/run.ts.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { coverageScenario } from "./coverage";
import { idleScenario } from "./idle";
import { lookupScenario } from "./lookup";
import { slowlorisScenario } from "./slowloris";
import { benchMain, cores, reexec, ROOT, setupNetns } from "./netns";
import type { BenchContext, Scenario } from "./scenario";
import { inScratch } from "./sys";

const SCENARIOS: Record<string, Scenario> = { coverage: coverageScenario, lookup: lookupScenario, idle: idleScenario, slowloris: slowlorisScenario };
const USAGE = `usage: bun bench/scenario-main.ts ${Object.keys(SCENARIOS).join("|")} [--quick] [--runs N] [--edgeproxy PATH]`;
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

interface Options {
  name: string;
  quick: boolean;
  runs?: number;
  edgeproxy: string;
}

function parse(argv: string[]): Options {
  const o: Options = { name: "", quick: false, edgeproxy: join(ROOT, "edgeproxy") };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") o.quick = true;
    else if (a === "--runs") o.runs = Number(argv[++i]);
    else if (a === "--edgeproxy") o.edgeproxy = resolve(argv[++i] ?? "");
    else if (!o.name && a in SCENARIOS) o.name = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.name) throw new Error("name a scenario");
  if (o.runs !== undefined && !(Number.isInteger(o.runs) && o.runs >= 1 && o.runs <= 20)) throw new Error("--runs takes 1-20");
  if (!existsSync(o.edgeproxy)) throw new Error(`${o.edgeproxy} does not exist: bun run build`);
  return o;
}

const proxyCore = 0;
const loadCore = cores > 1 ? 1 : 0;

await benchMain(
  "scenario-main",
  USAGE,
  parse,
  (_o, argv) => reexec(import.meta.path, argv, loadCore, 15 * 60_000, log),
  async (o) => {
    setupNetns();
    return inScratch("edgeproxy-scenario-", async (dir) => {
      const ctx: BenchContext = { dir, edgeproxy: o.edgeproxy, quick: o.quick, runs: o.runs ?? (o.quick ? 1 : 3), seconds: o.quick ? 1 : 2, proxyCore, loadCore, log };
      const r = await SCENARIOS[o.name]!(ctx);
      process.stdout.write(`## ${r.title}\n\n${r.markdown}\n`);
      process.stdout.write(`\nratios:\n${r.ratios.map((x) => `  ${JSON.stringify(x)}`).join("\n")}\n`);
      process.stdout.write(`plots:\n${r.plots.map((p) => `  ${JSON.stringify(p)}`).join("\n")}\n`);
      if (r.anomalies.length) process.stdout.write(`anomalies:\n${r.anomalies.map((a) => `  - ${a}`).join("\n")}\n`);
      return 0;
    });
  },
);
