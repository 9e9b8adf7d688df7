// PlotSpec → PNG with gnuplot (Debian's gnuplot-nox has the cairo terminal).
// Bars: one cluster per x label, one bar per series that has a value there
// (bars placed by us, not gnuplot's histogram, so a series missing from a
// cluster leaves no hole), each bar labelled with its value. Lines: the x
// labels on a category axis in the order the series give them.
//
// Readability is decided here, from the text's estimated size, not left to
// gnuplot (which neither rotates nor thins tick labels by itself, so long
// labels ran into each other): series of the same label are one series with
// one legend entry; x labels stay flat when they fit their slot, else turn
// 45° (90° and thinned when even that does not fit), lines thin them first;
// the bottom and left margins come from the longest label; bar values turn
// 90° or are left out (the report's tables have them) when bars are narrow.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { PlotSpec } from "./scenario";
import { run } from "./sys";

/** The canvas, and the font's size in pixels there: DejaVu Sans 10 in pngcairo averages 6.5 px a character
 * (measured on a rendered legend) and 16 px a line; CW rounds up so that wide letters still fit. */
const W = 1000;
const H = 560;
const CW = 7;
const LH = 16;
/** Longer labels are cut (with an ellipsis) so one absurd label cannot eat the plot. */
const MAX_X_LABEL = 40;
const MAX_SERIES_LABEL = 60;

/** A gnuplot single-quoted string: a quote inside is written twice. */
const q = (s: string) => `'${s.replace(/'/g, "''")}'`;
const clean = (s: string) => s.replace(/[\t\n]/g, " ");
const cut = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

type Series = PlotSpec["series"][number];

/** The series with points of one label merged into one (one legend entry per series, not per bar); a label
 * given twice for the same x is the scenario's bug and fails the plot with both named. */
export function mergedSeries(spec: PlotSpec): Series[] {
  const by = new Map<string, { label: string; points: { x: string; y: number }[] }>();
  for (const s of spec.series) {
    const m = by.get(s.label) ?? by.set(s.label, { label: s.label, points: [] }).get(s.label)!;
    for (const p of s.points) {
      if (m.points.some((o) => o.x === p.x)) throw new Error(`plot ${spec.name}: series ${JSON.stringify(s.label)} has two values for x ${JSON.stringify(p.x)}`);
      m.points.push(p);
    }
  }
  return [...by.values()];
}

/** Every x label in first-seen order across the series. */
export const xLabels = (spec: PlotSpec): string[] => [...new Set(spec.series.flatMap((s) => s.points.map((p) => p.x)))];

/** A bar's value as written above it: whole numbers from 100, one decimal from 10, else two. */
export const valueText = (v: number): string => v.toFixed(Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2);

export interface Layout {
  /** Plot area width estimated in px, and the width one x label gets. */
  plotPx: number;
  slotPx: number;
  xmin: number;
  xmax: number;
  /** Tick label angle, and every how many ticks one is labelled (1: all). */
  xRotate: 0 | 45 | 90;
  xEvery: number;
  /** Margins: bottom in character heights, left in px. */
  bmargin: number;
  lmarginPx: number;
  /** The legend's grid (one entry per series), above the plot. */
  keyCols: number;
  keyRows: number;
  /** Bars only: width in x units, the distance between bars of a cluster, and how values are written. */
  barWidth: number;
  barPitch: number;
  values: "flat" | "rotated" | "none";
  /** Head room above the highest point, as a fraction of the y range (gnuplot `set offsets … graph`). */
  topRoom: number;
}

/** Where text goes, from the labels' estimated sizes (see CW, LH). */
export function layout(spec: PlotSpec): Layout {
  const series = mergedSeries(spec);
  const xs = xLabels(spec).map((x) => cut(clean(x), MAX_X_LABEL));
  const n = Math.max(xs.length, 1);
  const bars = spec.kind === "bars";
  const [xmin, xmax] = bars ? [-0.6, n - 0.4] : [-0.5, n - 0.5];
  const ys = series.flatMap((s) => s.points.map((p) => p.y)).filter(Number.isFinite);
  const top = Math.max(...ys.map(Math.abs), 1) * 1.2;
  // y tick labels ("60000", "0.5") + the rotated y label + a gap.
  const ytics = Math.max(String(Math.round(top)).length + (top < 10 ? 2 : 0), 3) * CW;
  const baseLeft = ytics + 2 * LH + 14;
  const rightPx = 30;
  const plotPx0 = W - baseLeft - rightPx;
  const slotPx = plotPx0 / (xmax - xmin);
  const longest = Math.max(...xs.map((x) => x.length), 1) * CW;

  let xRotate: 0 | 45 | 90 = 0;
  let xEvery = 1;
  // Flat labels are centred on their ticks: two neighbours fit when half of each, plus a gap, fit one slot.
  const flatFits = (every: number) => xs.every((x, i) => i % every !== 0 || i + every >= xs.length || ((x.length + xs[i + every]!.length) / 2 + 2) * CW <= slotPx * every);
  const flatEvery = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 50, 100].find(flatFits) ?? Infinity;
  if (flatEvery === 1) xEvery = 1;
  // A line's x is a sequence: every k-th label, flat, reads better than all of them turned, while ≥ 5 remain.
  else if (!bars && Math.ceil(n / flatEvery) >= Math.min(5, n)) xEvery = flatEvery;
  else if (slotPx >= 2 * LH) xRotate = 45; // neighbours at 45° sit slot·sin 45° apart: ≥ 1.4 lines
  else {
    xRotate = 90;
    xEvery = Math.max(1, Math.ceil((1.3 * LH) / slotPx));
  }
  const sin = xRotate === 45 ? Math.SQRT1_2 : 1;
  const tall = xRotate === 0 ? LH : longest * sin + LH * sin;
  const bmargin = Math.ceil(tall / LH) + 1;
  // At 45° a label ends at its tick and runs down-left: the first must not leave the canvas.
  const firstPx = (xs[0]?.length ?? 0) * CW * Math.SQRT1_2 + LH;
  const lmarginPx = Math.ceil(Math.max(baseLeft, xRotate === 45 ? firstPx - (0 - xmin) * slotPx + 8 : 0));
  const plotPx = W - lmarginPx - rightPx;
  const slot = plotPx / (xmax - xmin);

  const keyEntryPx = Math.max(...series.map((s) => cut(s.label, MAX_SERIES_LABEL).length), 1) * CW + 60;
  const keyCols = Math.max(1, Math.min(series.length, Math.floor(plotPx / keyEntryPx)));
  const keyRows = Math.ceil(series.length / keyCols);

  // Bars: as wide as the fullest cluster allows, never wider than a third of a cluster nor than 80 px (a lone
  // cluster's bars would otherwise be slabs).
  const perCluster = xLabels(spec).map((x) => series.filter((s) => s.points.some((p) => p.x === x && Number.isFinite(p.y))).length);
  const maxK = Math.max(...perCluster, 1);
  const barWidth = Math.min(0.85 / Math.max(maxK + 1, 3), 80 / slot);
  const barPitch = barWidth * 1.08;
  const pitchPx = barPitch * slot;
  const valuePx = Math.max(...ys.map((y) => valueText(y).length), 1) * CW;
  const values: Layout["values"] = !bars ? "none" : valuePx + 4 <= pitchPx ? "flat" : pitchPx >= LH ? "rotated" : "none";
  // Rotated values stand up valuePx above their bar: keep that much of the plot's height free.
  const plotHPx = H - bmargin * LH - (2.5 + keyRows) * LH;
  const need = values === "rotated" ? valuePx + LH : LH * 1.5;
  const topRoom = Math.max(0.08, need / Math.max(plotHPx - need, LH));
  return { plotPx, slotPx: slot, xmin, xmax, xRotate, xEvery, bmargin, lmarginPx, keyCols, keyRows, barWidth, barPitch, values, topRoom };
}

/** Bar x positions: in cluster j the series with a value there, in series order, centred on j. */
function barPositions(spec: PlotSpec, series: Series[], pitch: number): Map<string, number>[] {
  return xLabels(spec).map((x, j) => {
    const present = series.filter((s) => s.points.some((p) => p.x === x && Number.isFinite(p.y)));
    return new Map(present.map((s, i) => [s.label, j + (i - (present.length - 1) / 2) * pitch]));
  });
}

/** Tab-separated data, one row per x label (first-seen order): the label, then per series its bar position,
 * value and value text (bars) or its value (lines); NaN where a series has no value. A `#` header names the columns. */
export function plotData(spec: PlotSpec): string {
  const series = mergedSeries(spec);
  const bars = spec.kind === "bars";
  const pos = barPositions(spec, series, layout(spec).barPitch);
  const head = ["x", ...series.flatMap((s) => (bars ? [`${clean(s.label)}: x`, `${clean(s.label)}: y`, `${clean(s.label)}: text`] : [clean(s.label)]))];
  const rows = xLabels(spec).map((x, j) => {
    const cols = series.flatMap((s) => {
      const y = s.points.find((p) => p.x === x)?.y;
      const has = y !== undefined && Number.isFinite(y);
      return bars ? [has ? String(pos[j]!.get(s.label)) : "NaN", has ? String(y) : "NaN", has ? valueText(y) : "NaN"] : [has ? String(y) : "NaN"];
    });
    return [clean(x), ...cols].join("\t");
  });
  return [`# ${head.join("\t")}`, ...rows].join("\n") + "\n";
}

/** The gnuplot script drawing `spec` from `data` into `png`. */
export function plotScript(spec: PlotSpec, data: string, png: string): string {
  const series = mergedSeries(spec);
  const L = layout(spec);
  const xs = xLabels(spec).map((x) => cut(clean(x), MAX_X_LABEL));
  const tics = xs.map((x, j) => `${j % L.xEvery === 0 ? q(x) : "''"} ${j}`).join(", ");
  const rotate = L.xRotate === 0 ? "norotate" : `rotate by ${L.xRotate} right`;
  const lines = [
    `set terminal pngcairo size ${W},${H} font 'DejaVu Sans,10' noenhanced`,
    `set output ${q(png)}`,
    // The title, then the key, at fixed heights (a gnuplot title sits on the plot, under a key placed by hand).
    `set label 1 ${q(spec.title)} at screen 0.5, screen ${(1 - (1.1 * LH) / H).toFixed(4)} center front`,
    `set ylabel ${q(spec.ylabel)}`,
    "set datafile separator '\\t'",
    "set datafile missing 'NaN'",
    // Between the title and the plot, as many entries a row as fit: the plot keeps the canvas's whole width
    // for its x labels. Sample first, then its name (reverse Left): with text first, a row of entries reads
    // as "name sample name sample" and a name seems to belong to the sample after it.
    `set key at screen 0.5, screen ${(1 - (2.2 * LH) / H).toFixed(4)} center top horizontal maxcols ${L.keyCols} reverse Left samplen 2 spacing 1.2`,
    `set tmargin ${(3 + L.keyRows * 1.25).toFixed(2)}`,
    "set grid ytics",
    "set border 3",
    `set xtics nomirror ${rotate} (${tics})`,
    "set ytics nomirror",
    `set xrange [${L.xmin}:${L.xmax}]`,
    `set bmargin ${L.bmargin}`,
    `set lmargin at screen ${(L.lmarginPx / W).toFixed(4)}`,
    `set rmargin at screen ${((W - 30) / W).toFixed(4)}`,
    `set offsets 0, 0, graph ${L.topRoom.toFixed(3)}, 0`,
    spec.logY ? "set logscale y\nset yrange [*:*]" : "set yrange [0:*]",
  ];
  const file = (i: number) => (i ? "''" : q(data));
  if (spec.kind === "bars") {
    lines.push(`set boxwidth ${L.barWidth.toFixed(4)} absolute`, "set style fill solid 0.85 border -1");
    // Columns per series i: 2+3i position, 3+3i value, 4+3i value text.
    const barClauses = series.map((s, i) => `${file(i)} using ${2 + 3 * i}:${3 + 3 * i} with boxes lc ${i + 1} title ${q(cut(s.label, MAX_SERIES_LABEL))}`);
    const style = L.values === "rotated" ? "rotate by 90 left offset 0,0.4" : "center offset 0,0.7";
    const valueClauses = L.values === "none" ? [] : series.map((_, i) => `'' using ${2 + 3 * i}:${3 + 3 * i}:${4 + 3 * i} with labels ${style} notitle`);
    lines.push(`plot ${[...barClauses, ...valueClauses].join(", \\\n  ")}`);
  } else {
    lines.push(`plot ${series.map((s, i) => `${file(i)} using 0:${i + 2} with linespoints pointtype 7 lc ${i + 1} title ${q(cut(s.label, MAX_SERIES_LABEL))}`).join(", \\\n  ")}`);
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
