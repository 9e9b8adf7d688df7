// Assembles bench/results/<date>-<host>.md from the scenarios' results: the
// ratio table first, then the machine, each scenario's section with its
// plots, the anomalies and the exact command. Scenarios write their own
// sections; nothing here knows what a scenario measures.
import { f, fence, table, times } from "./md";
import type { RatioRow, ScenarioResult } from "./scenario";

export interface Machine {
  date: string;
  host: string;
  cpu: string;
  cores: number;
  kernel: string;
  memory: string;
  nofile: string;
  versions: Record<string, string>;
}

/** A scenario's outcome as the runner saw it: its result, or why there is none. */
export interface Ran {
  name: string;
  seconds: number;
  result?: ScenarioResult;
  /** Set when the scenario threw, overran or was skipped. */
  failure?: string;
  /** Set when this checkout has no module for it. */
  unavailable?: string;
  /** PNG file names (relative to the report) per plot name. */
  pngs: Map<string, string>;
}

export interface ReportInput {
  m: Machine;
  quick: boolean;
  argv: string;
  runs: number;
  seconds: number;
  proxyCore: number;
  loadCore: number;
  netnsSetup: string[];
  ran: Ran[];
  /** Anomalies of the runner itself (plots that failed, …). */
  anomalies: string[];
  wallSeconds: number;
}

const digits = (v: number) => (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);
const value = (v: number, unit: string) => (Number.isFinite(v) ? `${f(v, digits(v))} ${unit}` : "–");

/** The ratio edgeproxy / best (for "higher" metrics too: above 1× is then better). */
export const ratioOf = (r: RatioRow): number => r.edgeproxy / r.best.value;

export function ratioTable(rows: readonly RatioRow[]): string {
  return table(
    ["scenario", "metric", "edgeproxy", "best peer", "ratio", "target", "met?"],
    rows.map((r) => [
      r.scenario,
      `${r.metric} (${r.better} is better)`,
      value(r.edgeproxy, r.unit),
      `${r.best.peer}: ${value(r.best.value, r.unit)}`,
      times(ratioOf(r)),
      r.target?.text ?? "–",
      r.target ? (r.target.met ? "**met**" : "**not met**") : "–",
    ]),
  );
}

export function renderReport(o: ReportInput): string {
  const out: string[] = [];
  const { m } = o;
  out.push(`# edgeproxy benchmark: ${m.date}, ${m.host}${o.quick ? " (quick: not for quoting)" : ""}`, "");
  out.push(
    `${m.versions.edgeproxy ?? "edgeproxy ?"}; ${o.runs} run(s) × ${o.seconds} s per measurement, medians; each proxy alone on core ${o.proxyCore}, load generators and origins on core ${o.loadCore}. ` +
      `Produced by \`${o.argv}\` in ${f(o.wallSeconds / 60, 1)} min.`,
    "",
  );
  out.push("## Ratios to the best peer", "");
  const ratios = o.ran.flatMap((r) => r.result?.ratios ?? []);
  out.push(
    ratios.length ? ratioTable(ratios) : "No scenario produced a ratio.",
    "",
    "Ratio = edgeproxy ÷ best peer: below 1× is better for CPU, time and memory, above 1× for throughput. The best peer is the lowest (or highest) of the other proxies measured side by side in the same run; each section says how its numbers were made.",
    "",
  );
  const missing = o.ran.filter((r) => !r.result);
  if (missing.length) out.push(...missing.map((r) => `- **${r.name}**: not measured: ${r.failure ?? r.unavailable}`), "");

  out.push("## Machine", "");
  out.push(
    `- CPU: ${m.cpu}, ${m.cores} cores; memory ${m.memory}; open-file limit ${m.nofile}`,
    `- kernel ${m.kernel}`,
    ...Object.entries(m.versions).map(([k, v]) => `- ${k}: ${v}`),
    "",
  );

  for (const r of o.ran) {
    if (!r.result) continue;
    out.push(`## ${r.result.title}`, "", `(scenario \`${r.name}\`, ${f(r.seconds, 0)} s)`, "", r.result.markdown.trimEnd(), "");
    for (const p of r.result.plots) {
      const png = r.pngs.get(p.name);
      if (png) out.push(`![${p.title}](${png})`, "");
    }
  }

  out.push("## Anomalies", "");
  const anomalies = [
    ...o.ran.flatMap((r) => [...(r.failure ? [`${r.name}: ${r.failure}`] : []), ...(r.result?.anomalies ?? []).map((a) => `${r.name}: ${a}`)]),
    ...o.anomalies,
  ];
  out.push(
    anomalies.length
      ? anomalies.map((a) => `- ${a.includes("\n") ? `${a.split("\n")[0]}\n\n${fence(a.split("\n").slice(1).join("\n")).replace(/^/gm, "  ")}\n` : a}`).join("\n")
      : "None: every load run completed without errors and every process stopped on SIGTERM.",
    "",
  );

  out.push("## Command", "");
  out.push(fence(o.argv, "sh"), "");
  out.push("It re-executed itself inside a private network and mount namespace (`unshare --net --mount`), set up with:", "", fence(o.netnsSetup.join("\n"), "sh"), "");
  return out.join("\n");
}
