// The generated gnuplot scripts checked for what makes a plot readable: one legend entry per series, x labels
// that do not run into each other (flat, turned or thinned), margins that hold the longest label; and the
// script actually rendered by gnuplot into a PNG of the promised size, without a warning.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { layout, mergedSeries, plotData, plotScript, xLabels } from "./plot";
import type { PlotSpec } from "./scenario";

/** The coverage plot as bench/coverage.ts builds it: one series per table row, so labels repeat. */
const coverage: PlotSpec = {
  name: "coverage-setup",
  title: "Setup for ports 1-65535",
  ylabel: "ms",
  kind: "bars",
  series: (
    [
      ["edgeproxy --workers 1", "IPv4 /24 (192.0.2.0/24)", 20.3],
      ["edgeproxy --workers 1", "IPv6 /120 (2001:db8::/120)", 22.5],
      ["edgeproxy --workers 1", "IPv4 /24 + IPv6 /120", 23.4],
      ["edgeproxy --workers 2", "IPv4 /24 (192.0.2.0/24)", 66.8],
      ["edgeproxy --workers 2", "IPv6 /120 (2001:db8::/120)", 70.1],
      ["edgeproxy --workers 2", "IPv4 /24 + IPv6 /120", 68.5],
      ["socket per port, 4 processes", "1 IPv4 address (192.0.2.1)", 519.0],
      ["socket per port, 4 processes", "1 IPv6 address (2001:db8::1)", 513.6],
    ] as const
  ).map(([label, x, y]) => ({ label, points: [{ x, y }] })),
};

const twoModes: PlotSpec = {
  name: "tcp-cpu",
  title: "it's a title",
  ylabel: "µs",
  kind: "bars",
  series: [
    { label: "edgeproxy", points: [{ x: "keep-alive", y: 18.4 }, { x: "close", y: 120 }] },
    { label: "nginx\tstream", points: [{ x: "close", y: 123 }] },
  ],
};

const manyBars = (clusters: number, series: number, label: (i: number) => string): PlotSpec => ({
  name: "many",
  title: "many",
  ylabel: "y",
  kind: "bars",
  series: Array.from({ length: series }, (_, s) => ({ label: `peer ${s}`, points: Array.from({ length: clusters }, (_, i) => ({ x: label(i), y: 1000 + 17 * i * (s + 1) })) })),
});

const longLine: PlotSpec = {
  name: "line",
  title: "over time",
  ylabel: "open",
  kind: "line",
  series: ["a", "b"].map((label) => ({ label, points: Array.from({ length: 60 }, (_, i) => ({ x: `${5 * i} s`, y: i })) })),
};

/** The plot command's clauses, each with its title (undefined for `notitle`). */
function clauses(gp: string): { text: string; title?: string }[] {
  const plot = gp.slice(gp.indexOf("\nplot ") + 6).replace(/, \\\n\s*/g, "\u0000");
  return plot.trim().split("\u0000").map((text) => ({ text, title: /\btitle '((?:[^']|'')*)'/.exec(text)?.[1]?.replace(/''/g, "'") }));
}

/** What the script tells gnuplot about the x axis, read back from the script text. */
function xAxis(gp: string) {
  const m = /^set xtics nomirror (norotate|rotate by (\d+) right) \((.*)\)$/m.exec(gp);
  if (!m) throw new Error(`no xtics line in:\n${gp}`);
  const ticks = [...m[3]!.matchAll(/'((?:[^']|'')*)' (-?[\d.]+)/g)].map((t) => ({ label: t[1]!.replace(/''/g, "'"), x: Number(t[2]) }));
  const num = (re: RegExp) => Number(re.exec(gp)?.[1]);
  const [xmin, xmax] = /^set xrange \[([-\d.]+):([-\d.]+)\]$/m.exec(gp)!.slice(1).map(Number) as [number, number];
  const left = num(/^set lmargin at screen ([\d.]+)$/m) * 1000;
  const right = num(/^set rmargin at screen ([\d.]+)$/m) * 1000;
  return { angle: Number(m[2] ?? 0), ticks, xmin, xmax, left, px: (x: number) => left + ((x - xmin) / (xmax - xmin)) * (right - left), bmargin: num(/^set bmargin ([\d.]+)$/m) };
}

// Independent of plot.ts's own estimates: DejaVu Sans 10 in pngcairo measured at 6.5 px a character on
// average, text 12 px tall, a margin character 16 px.
const CHAR = 6.5;
const TEXT = 12;
const MARGIN_LINE = 16;

/** Labelled ticks must not overlap, the bottom margin must hold the longest, the first must stay on the canvas. */
function expectReadableX(gp: string) {
  const a = xAxis(gp);
  const shown = a.ticks.filter((t) => t.label !== "");
  expect(shown.length).toBeGreaterThan(0);
  const rad = (a.angle * Math.PI) / 180;
  for (let i = 1; i < shown.length; i++) {
    const dx = a.px(shown[i]!.x) - a.px(shown[i - 1]!.x);
    if (a.angle === 0) expect(((shown[i]!.label.length + shown[i - 1]!.label.length) / 2) * CHAR + 4).toBeLessThanOrEqual(dx);
    else expect(dx * Math.sin(rad)).toBeGreaterThanOrEqual(TEXT);
  }
  const longest = Math.max(...shown.map((t) => t.label.length)) * CHAR;
  expect(a.bmargin * MARGIN_LINE).toBeGreaterThanOrEqual(a.angle === 0 ? TEXT : longest * Math.sin(rad) + TEXT);
  if (a.angle === 45) expect(shown[0]!.label.length * CHAR * Math.cos(rad)).toBeLessThanOrEqual(a.px(shown[0]!.x));
  return a;
}

describe("plot data", () => {
  test("one row per x label in first-seen order; per series position, value and its text; NaN where it has none", () => {
    expect(xLabels(twoModes)).toEqual(["keep-alive", "close"]);
    const rows = plotData(twoModes).split("\n");
    expect(rows[0]).toBe("# x\tedgeproxy: x\tedgeproxy: y\tedgeproxy: text\tnginx stream: x\tnginx stream: y\tnginx stream: text");
    // keep-alive has one bar: centred on its tick; close has two, either side of it.
    expect(rows[1]).toBe("keep-alive\t0\t18.4\t18.4\tNaN\tNaN\tNaN");
    const close = rows[2]!.split("\t");
    expect(Number(close[1])).toBeLessThan(1);
    expect(Number(close[4])).toBeGreaterThan(1);
    expect(Number(close[1]) + Number(close[4])).toBeCloseTo(2, 9);
    expect(close.slice(2, 4)).toEqual(["120", "120"]);
  });
  test("series given once per bar are merged by label; a label with two values for one x is refused", () => {
    expect(mergedSeries(coverage).map((s) => [s.label, s.points.length])).toEqual([["edgeproxy --workers 1", 3], ["edgeproxy --workers 2", 3], ["socket per port, 4 processes", 2]]);
    const twice = { ...coverage, series: [...coverage.series, { label: "edgeproxy --workers 1", points: [{ x: "IPv4 /24 + IPv6 /120", y: 1 }] }] };
    expect(() => plotData(twice)).toThrow('plot coverage-setup: series "edgeproxy --workers 1" has two values for x "IPv4 /24 + IPv6 /120"');
  });
});

describe("plot script", () => {
  test("quotes doubled; the title a label at the top", () => {
    const gp = plotScript(twoModes, "/tmp/d.tsv", "/tmp/o.png");
    expect(gp).toContain("set label 1 'it''s a title' at screen 0.5");
    expect(gp).toContain("set output '/tmp/o.png'");
    expect(plotScript({ ...twoModes, kind: "line", logY: true }, "/tmp/d.tsv", "/tmp/o.png")).toContain("set logscale y");
  });

  test("one legend entry per series, not per bar: the coverage plot has three", () => {
    const gp = plotScript(coverage, "/tmp/d.tsv", "/tmp/o.png");
    const c = clauses(gp);
    expect(c.filter((x) => x.title !== undefined).map((x) => x.title)).toEqual(["edgeproxy --workers 1", "edgeproxy --workers 2", "socket per port, 4 processes"]);
    // Every other clause (the values over the bars) says notitle; nothing titles itself from the data.
    expect(c.filter((x) => x.title === undefined).every((x) => x.text.endsWith("notitle"))).toBe(true);
    expect(gp).not.toContain("columnhead");
    // Bars, values and the legend all have their own clause: 3 bars + 3 value clauses.
    expect(c).toHaveLength(6);
  });

  test("coverage: its five long x labels do not fit flat, so they turn 45° with room below and to the left", () => {
    const a = expectReadableX(plotScript(coverage, "/tmp/d.tsv", "/tmp/o.png"));
    expect(a.angle).toBe(45);
    expect(a.ticks.map((t) => t.label)).toEqual(xLabels(coverage));
  });

  test("short labels stay flat and all shown", () => {
    const a = expectReadableX(plotScript(twoModes, "/tmp/d.tsv", "/tmp/o.png"));
    expect(a.angle).toBe(0);
    expect(a.ticks.map((t) => t.label)).toEqual(["keep-alive", "close"]);
  });

  test("many clusters: every one labelled, turned; too many for that: turned 90° and thinned", () => {
    const turned = expectReadableX(plotScript(manyBars(12, 5, (i) => `scenario number ${i} with a long name`), "/tmp/d.tsv", "/tmp/o.png"));
    expect(turned.angle).toBe(45);
    expect(turned.ticks.every((t) => t.label !== "")).toBe(true);
    const dense = expectReadableX(plotScript(manyBars(120, 2, (i) => `case ${i}`), "/tmp/d.tsv", "/tmp/o.png"));
    expect(dense.angle).toBe(90);
    expect(dense.ticks).toHaveLength(120);
    expect(dense.ticks.filter((t) => t.label !== "").length).toBeLessThan(120);
  });

  test("a long line: x labels thinned but flat, every tick kept", () => {
    const a = expectReadableX(plotScript(longLine, "/tmp/d.tsv", "/tmp/o.png"));
    expect(a.angle).toBe(0);
    expect(a.ticks).toHaveLength(60);
    const shown = a.ticks.filter((t) => t.label !== "");
    expect(shown.length).toBeLessThan(60);
    expect(shown.length).toBeGreaterThanOrEqual(5);
    expect(clauses(plotScript(longLine, "/tmp/d.tsv", "/tmp/o.png")).map((c) => c.title)).toEqual(["a", "b"]);
  });

  test("bar values: flat over wide bars, turned over narrow ones with head room, left out over slivers", () => {
    expect(layout(twoModes).values).toBe("flat");
    const narrow = layout(manyBars(6, 6, (i) => `c${i}`));
    expect(narrow.values).toBe("rotated");
    expect(plotScript(manyBars(6, 6, (i) => `c${i}`), "/tmp/d.tsv", "/tmp/o.png")).toContain("with labels rotate by 90 left");
    expect(narrow.topRoom).toBeGreaterThan(0.08);
    const slivers = manyBars(40, 6, (i) => `c${i}`);
    expect(layout(slivers).values).toBe("none");
    expect(plotScript(slivers, "/tmp/d.tsv", "/tmp/o.png")).not.toContain("with labels");
  });

  test("a lone cluster's bars stay bars, not slabs: at most 80 px wide", () => {
    const L = layout({ ...twoModes, series: [1, 2].map((w) => ({ label: `--workers ${w}`, points: [{ x: "keep-alive", y: 40000 * w }] })) });
    expect(L.barWidth * L.slotPx).toBeLessThanOrEqual(80);
    expect(L.barPitch).toBeGreaterThan(L.barWidth);
  });

  test("the legend has as many rows as its entries need", () => {
    const L = layout({ ...twoModes, series: Array.from({ length: 9 }, (_, i) => ({ label: `a rather long series name number ${i}`, points: [{ x: "k", y: i + 1 }] })) });
    expect(L.keyCols).toBeGreaterThanOrEqual(1);
    expect(L.keyRows).toBe(Math.ceil(9 / L.keyCols));
    expect(L.keyRows).toBeGreaterThan(1);
  });
});

const gnuplot = Bun.which("gnuplot");
describe.skipIf(!gnuplot)("rendered by gnuplot", () => {
  test.each([coverage, twoModes, manyBars(120, 2, (i) => `case ${i}`), longLine])("$name: a 1000×560 PNG, no warning", (spec) => {
    const dir = mkdtempSync(join(tmpdir(), "plot-test-"));
    try {
      const data = join(dir, "d.tsv");
      const png = join(dir, "o.png");
      writeFileSync(data, plotData(spec));
      writeFileSync(join(dir, "p.gp"), plotScript(spec, data, png));
      const r = Bun.spawnSync([gnuplot!, join(dir, "p.gp")], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
      expect(r.stderr.toString()).toBe("");
      expect(r.exitCode).toBe(0);
      const b = readFileSync(png);
      expect(b.subarray(1, 4).toString()).toBe("PNG");
      // IHDR: width and height, big-endian, at bytes 16 and 20.
      expect([b.readUInt32BE(16), b.readUInt32BE(20)]).toEqual([1000, 560]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
