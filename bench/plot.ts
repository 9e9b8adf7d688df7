// PlotSpec → PNG with gnuplot (Debian's gnuplot-nox has the cairo terminal).
// Bars are gnuplot's clustered histogram: one cluster per x label, one bar
// per series, each bar labelled with its value; lines put the x labels on a
// category axis in the order the series give them.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlotSpec } from "./scenario";
import { run } from "./sys";

/** A gnuplot single-quoted string: a quote inside is written twice. */
const q = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** Every x label in first-seen order across the series. */
export const xLabels = (spec: PlotSpec): string[] => [...new Set(spec.series.flatMap((s) => s.points.map((p) => p.x)))];

/** Tab-separated data: a header row (x, then series labels), then one row per x label; missing values are NaN. */
export function plotData(spec: PlotSpec): string {
  const clean = (s: string) => s.replace(/[\t\n]/g, " ");
  const rows = xLabels(spec).map((x) => [clean(x), ...spec.series.map((s) => String(s.points.find((p) => p.x === x)?.y ?? NaN))].join("\t"));
  return [["x", ...spec.series.map((s) => clean(s.label))].join("\t"), ...rows].join("\n") + "\n";
}

/** The gnuplot script drawing `spec` from `data` into `png`. */
export function plotScript(spec: PlotSpec, data: string, png: string): string {
  const n = spec.series.length;
  const gap = 1;
  const lines = [
    "set terminal pngcairo size 1000,560 font 'DejaVu Sans,10' noenhanced",
    `set output ${q(png)}`,
    `set title ${q(spec.title)}`,
    `set ylabel ${q(spec.ylabel)}`,
    "set datafile separator '\\t'",
    "set datafile missing 'NaN'",
    // The first row names the series; every plot clause (bars and their labels alike) skips it.
    "set key autotitle columnhead",
    "set key outside right top vertical",
    "set grid ytics",
    "set border 3",
    "set xtics nomirror",
    "set ytics nomirror",
    spec.logY ? "set logscale y\nset yrange [*:*]" : "set yrange [0:*]",
  ];
  const fmt = "(abs(v) >= 100 ? sprintf('%.0f', v) : abs(v) >= 10 ? sprintf('%.1f', v) : sprintf('%.2f', v))";
  if (spec.kind === "bars") {
    lines.push("set style data histogram", `set style histogram cluster gap ${gap}`, "set style fill solid 0.85 border -1", "set boxwidth 0.9", "set offsets 0, 0, graph 0.08, 0", `set xrange [-0.6:${xLabels(spec).length - 0.4}]`);
    const bars = spec.series.map((_, i) => `${i ? "''" : q(data)} using ${i + 2}:xtic(1)`);
    // Bar i of cluster j sits at j + (i - (n-1)/2) / (n + gap).
    const labels = spec.series.map((_, i) => `'' using ($0 + ${(i - (n - 1) / 2) / (n + gap)}):${i + 2}:(v = column(${i + 2}), ${fmt}) with labels offset 0,0.7 notitle`);
    lines.push(`plot ${[...bars, ...labels].join(", \\\n  ")}`);
  } else {
    lines.push("set offsets 0.3, 0.3, graph 0.08, 0");
    lines.push(`plot ${spec.series.map((_, i) => `${i ? "''" : q(data)} using 0:${i + 2}:xtic(1) with linespoints pointtype 7`).join(", \\\n  ")}`);
  }
  return lines.join("\n") + "\n";
}

/** Render `spec` to `png` (scratch files in `dir`); throws with gnuplot's message if it fails. */
export function renderPlot(spec: PlotSpec, png: string, dir: string): void {
  const data = join(dir, `${spec.name}.tsv`);
  const script = join(dir, `${spec.name}.gp`);
  writeFileSync(data, plotData(spec));
  writeFileSync(script, plotScript(spec, data, png));
  const r = run(["gnuplot", script], 30_000);
  if (r.code !== 0) throw new Error(`gnuplot ${script} for plot ${spec.name} failed (exit ${r.code}): ${r.out.trim().split("\n").slice(-3).join(" / ")}`);
}
