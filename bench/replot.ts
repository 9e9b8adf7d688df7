// Redraw a report's PNGs with today's plotter (bench/plot.ts) from the
// numbers in its .md: each plot is built from the median tables the scenario
// wrote, as the scenario builds it (bench/wrk-scenario.ts, bulk.ts, udp.ts,
// coverage.ts, lookup.ts, idle.ts, workers.ts), and its title is the one the
// report's image line names. Plots whose numbers the report does not hold
// (slowloris's per-second timelines) are listed and left as they are.
// Run: bun bench/replot.ts bench/results/2026-11-22-vm.md [...]
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { renderPlot } from "./plot";
import type { PlotSpec } from "./scenario";

type Row = Record<string, string>;
interface Table {
  /** The ## and ### headings it sits under. */
  readonly section: string;
  readonly sub: string;
  readonly rows: Row[];
}

/** Every markdown table of a report, with its headings. */
export function tables(md: string): Table[] {
  const out: Table[] = [];
  let section = "";
  let sub = "";
  const lines = md.split("\n");
  const cells = (l: string) => l.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (l.startsWith("## ")) [section, sub] = [l.slice(3).trim(), ""];
    else if (l.startsWith("### ")) sub = l.slice(4).trim();
    else if (l.startsWith("|") && lines[i + 1]?.startsWith("| ---")) {
      const head = cells(l);
      const rows: Row[] = [];
      for (i += 2; i < lines.length && lines[i]!.startsWith("|"); i++) rows.push(Object.fromEntries(cells(lines[i]!).map((c, k) => [head[k]!, c])));
      out.push({ section, sub, rows });
      i--;
    }
  }
  return out;
}

/** A table's number: "49,291", "75.3 MiB (1 proc.)", "1.20×"; "–" or "—" is NaN. */
export const num = (s: string | undefined): number => {
  const m = /^-?[\d,]*\.?\d+/.exec((s ?? "").trim());
  return m ? Number(m[0].replaceAll(",", "")) : NaN;
};

function find(all: Table[], section: string, has: string, sub?: string): Row[] {
  const t = all.find((t) => t.section.startsWith(section) && (sub === undefined || t.sub.startsWith(sub)) && t.rows[0] && has in t.rows[0]);
  if (!t) throw new Error(`no table with "${has}" under "${section}"${sub ? ` / "${sub}"` : ""}`);
  return t.rows;
}

const DIRECT = "direct (no proxy)";
const unique = (xs: string[]) => [...new Set(xs)];

/** How each plot is made from the report's tables (title and file come from the report's image line). */
const PLOTS: Record<string, (t: Table[]) => Omit<PlotSpec, "name" | "title">> = {
  ...Object.fromEntries(
    (["tcp", "http"] as const).flatMap((kind) => {
      const section = kind === "tcp" ? "TCP proxy: CPU" : "HTTP proxy (L7): CPU";
      const modes = ["keep-alive", "one connection per request"];
      const rows = (t: Table[]) => modes.map((m) => find(t, section, "core µs/req", m));
      const peers = (t: Table[]) => unique(rows(t).flatMap((r) => r.map((x) => x.peer!)));
      const y = (t: Table[], peer: string, col: string) => modes.map((m, i) => ({ x: m, y: num(rows(t)[i]!.find((r) => r.peer === peer)?.[col]) }));
      return [
        [`${kind}-cpu`, (t: Table[]) => ({ ylabel: "µs per request", kind: "bars" as const, series: peers(t).filter((p) => p !== DIRECT).map((p) => ({ label: p, points: y(t, p, "core µs/req") })) })],
        [`${kind}-rps`, (t: Table[]) => ({ ylabel: "requests/s", kind: "bars" as const, series: peers(t).map((p) => ({ label: p, points: y(t, p, "req/s") })) })],
      ];
    }),
  ),
  "bulk-gbit": (t) => {
    const rows = find(t, "Bulk throughput", "Gbit/s");
    return { ylabel: "Gbit/s", kind: "bars", series: unique(rows.map((r) => r.peer!)).map((p) => ({ label: p, points: rows.filter((r) => r.peer === p).map((r) => ({ x: r.direction!, y: num(r["Gbit/s"]) })) })) };
  },
  "bulk-rss": (t) => {
    const rows = find(t, "Bulk throughput", "peak RSS").filter((r) => r.peer !== DIRECT);
    return { ylabel: "MiB", kind: "bars", series: unique(rows.map((r) => r.peer!)).map((p) => ({ label: p, points: rows.filter((r) => r.peer === p).map((r) => ({ x: r.direction!, y: num(r["peak RSS"]) })) })) };
  },
  "udp-cpu": (t) => ({
    ylabel: "µs per datagram",
    kind: "bars",
    // Per datagram: an exchange is two (udp.ts halves its per-exchange figures).
    series: find(t, "UDP proxy", "core µs/datagram")
      .filter((r) => Number.isFinite(num(r["core µs/datagram"])))
      .map((r) => ({ label: r.peer!, points: [{ x: "proxy core", y: num(r["core µs/exchange"]) / 2 }, { x: "proxy process", y: num(r["process µs/exchange"]) / 2 }] })),
  }),
  "coverage-setup": (t) => ({
    ylabel: "ms",
    kind: "bars",
    series: find(t, "Coverage scale", "setup ms")
      .filter((r) => r.approach!.startsWith("edgeproxy") || r.approach!.includes("4 processes"))
      .map((r) => ({ label: r.approach!, points: [{ x: r.scope!, y: num(r["setup ms"]) }] })),
  }),
  "lookup-ns": (t) => {
    const rows = find(t, "Lookup cost", "ns per lookup (test run, median)").slice(0, 3);
    // The empty program's test run: what lookup.ts subtracts for "program's own ns".
    const floor = num(rows[0]!["ns per lookup (test run, median)"]) - num(rows[0]!["program's own ns"]);
    return {
      ylabel: "ns per lookup",
      kind: "line",
      series: [
        { label: "dispatcher (test run)", points: rows.map((r) => ({ x: r.bindings!, y: num(r["ns per lookup (test run, median)"]) })) },
        { label: "empty program (harness)", points: rows.map((r) => ({ x: r.bindings!, y: floor })) },
      ],
    };
  },
  "lookup-conn-rate": (t) => {
    const rows = find(t, "Lookup cost", "connections/s");
    const rate = (path: string) => num(rows.find((r) => r.path === path)?.["connections/s"]);
    return {
      ylabel: "connections/s",
      kind: "bars",
      series: [
        { label: "plain listener", points: [{ x: "no program", y: rate("plain listener, no program") }, { x: "program attached (100,000)", y: rate("plain listener, program attached (100,000 bindings)") }] },
        { label: "steered", points: rows.filter((r) => r.path!.startsWith("steered, ")).map((r) => ({ x: `${/^steered, (.+) binding\(s\)$/.exec(r.path!)![1]} bindings`, y: num(r["connections/s"]) })) },
      ],
    };
  },
  "idle-memory": (t) => ({
    ylabel: "bytes per connection",
    kind: "bars",
    series: find(t, "Idle connections", "RSS B/conn")
      .filter((r) => !r.proxy!.startsWith("direct"))
      .map((r) => ({ label: r.proxy!, points: [{ x: "proxy RSS", y: num(r["RSS B/conn"]) }, { x: "proxy's kernel share", y: num(r["proxy's kernel share B/conn"]) }] })),
  }),
  "first-connection": (t) => ({
    ylabel: "ms",
    kind: "bars",
    series: find(t, "Idle connections", "spawn → first connection, ms").map((r) => ({ label: r.proxy!, points: [{ x: "first connection", y: num(r["spawn → first connection, ms"]) }] })),
  }),
  "workers-rps": (t) => ({
    ylabel: "requests/s",
    kind: "bars",
    series: find(t, "Workers", "req/s").map((r) => ({ label: `--workers ${r.workers}`, points: [{ x: "keep-alive", y: num(r["req/s"]) }] })),
  }),
};

/** The report's plots as specs: those PLOTS can build, and the names of those it cannot. */
export function reportPlots(md: string, report: string): { specs: { spec: PlotSpec; png: string }[]; missing: string[] } {
  const t = tables(md);
  const stem = basename(report, ".md");
  const specs: { spec: PlotSpec; png: string }[] = [];
  const missing: string[] = [];
  for (const m of md.matchAll(/^!\[(.+)\]\((\S+\.png)\)$/gm)) {
    const [, title, png] = m;
    // The file is <report stem>-<plot name>.png (bench/run.ts).
    const name = png!.startsWith(`${stem}-`) ? png!.slice(stem.length + 1, -4) : basename(png!, ".png");
    const make = PLOTS[name];
    if (!make) {
      missing.push(name);
      continue;
    }
    specs.push({ spec: { name, title: title!, ...make(t) }, png: join(dirname(report), png!) });
  }
  return { specs, missing };
}

if (import.meta.main) {
  const scratch = mkdtempSync(join(tmpdir(), "ep-replot-"));
  try {
    for (const report of process.argv.slice(2)) {
      const { specs, missing } = reportPlots(readFileSync(report, "utf8"), report);
      for (const { spec, png } of specs) {
        renderPlot(spec, png, scratch);
        console.log(`${png}: redrawn (${spec.series.length} series)`);
      }
      for (const name of missing) console.log(`${report}: ${name}: left as it is (its numbers are not in the report)`);
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
