// Which module measures each scenario of `bun run bench`, in run order, and
// how long it should take. Scenarios 5–7 (coverage, lookup, idle) come from
// helper "scale"'s modules: they are loaded by name when present, so this
// list needs no edit when they land (then delete coverage-legacy.ts).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { bulkScenario } from "./bulk";
import { legacyCoverage, type LegacyCoverage } from "./coverage-legacy";
import type { ScenarioName } from "./flags";
import { httpScenario } from "./http";
import type { BenchContext, Scenario } from "./scenario";
import { tcpScenario } from "./tcp";
import { udpScenario } from "./udp";
import { workersScenario } from "./workers";

export interface Entry {
  name: ScenarioName;
  what: string;
  /** Seconds it should take for `runs` runs of `seconds` each (startup, warm-up and teardown included). */
  estimate: (runs: number, seconds: number) => number;
  /** The scenario, or why it cannot run in this checkout. */
  load: () => Promise<Scenario | string>;
}

/**
 * `export` of bench/`file`.ts, loaded by name so a module another helper is
 * still writing does not break this one's build. The old coverage entry
 * (edgeproxy, reps, core, log) is told apart from a Scenario (ctx) by arity.
 */
async function byName(file: string, exportName: string): Promise<Scenario | string> {
  if (!existsSync(join(import.meta.dir, `${file}.ts`))) return `bench/${file}.ts is not in this checkout`;
  const mod = (await import(`./${file}`)) as Record<string, unknown>;
  const fn = mod[exportName];
  if (typeof fn !== "function") return `bench/${file}.ts does not export ${exportName}`;
  if (fn.length >= 2) return (ctx: BenchContext) => legacyCoverage(fn as LegacyCoverage, ctx);
  return fn as Scenario;
}

const now = (s: Scenario) => async () => s;

export const REGISTRY: Entry[] = [
  // Per peer and run: start (~1 s), 1 s warm-up, two modes, settle.
  { name: "tcp", what: "TCP keep-alive and per connection: edgeproxy, HAProxy, nginx stream, direct", estimate: (r, s) => 5 * r * (3 + 2 * s), load: now(tcpScenario) },
  { name: "http", what: "HTTP keep-alive and per connection: edgeproxy, HAProxy, nginx", estimate: (r, s) => 4 * r * (3 + 2 * s), load: now(httpScenario) },
  { name: "bulk", what: "iperf3 through each proxy, both directions, peak RSS", estimate: (r, s) => 5 * r * (3 + 2 * s), load: now(bulkScenario) },
  { name: "udp", what: "UDP request/response: edgeproxy, nginx stream udp, direct", estimate: (r, s) => 3 * r * (2 + s), load: now(udpScenario) },
  { name: "coverage", what: "ports 1-65535 on a /24 and a /120: sockets, setup; socket per port, HAProxy and nginx ranges", estimate: (r) => 30 + 12 * r, load: () => byName("coverage", "coverageScenario") },
  { name: "lookup", what: "sk_lookup cost against the number of bindings, connection rate with and without it", estimate: (r) => 15 + 15 * r, load: () => byName("lookup", "lookupScenario") },
  { name: "idle", what: "memory per idle connection (5,000), time to first connection", estimate: (r) => 10 + 20 * r, load: () => byName("idle", "idleScenario") },
  { name: "workers", what: "edgeproxy --workers 2 against 1, keep-alive", estimate: (r, s) => 2 * r * (4 + s), load: now(workersScenario) },
];
