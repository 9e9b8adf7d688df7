// bench/replot.ts rebuilds a report's plots from its tables: checked on the committed full run.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { num, reportPlots } from "./replot";

const REPORT = join(import.meta.dir, "results", "2026-11-22-vm.md");

test("every plot of the full run is rebuilt from its tables, with the numbers the scenarios plotted", () => {
  const { specs, missing } = reportPlots(readFileSync(REPORT, "utf8"), REPORT);
  expect(missing).toEqual([]);
  expect(specs.map((s) => s.spec.name)).toEqual(["tcp-cpu", "tcp-rps", "http-cpu", "http-rps", "bulk-gbit", "bulk-rss", "udp-cpu", "coverage-setup", "lookup-ns", "lookup-conn-rate", "idle-memory", "first-connection", "workers-rps"]);
  const spec = (name: string) => specs.find((s) => s.spec.name === name)!.spec;
  expect(spec("tcp-cpu")).toMatchObject({
    title: "TCP: CPU µs per request on the proxy core (median of 3; lower is better)",
    series: [
      { label: "edgeproxy", points: [{ x: "keep-alive", y: 18.7 }, { x: "one connection per request", y: 114.9 }] },
      { label: "haproxy (mode tcp)", points: [{ x: "keep-alive", y: 18.4 }, { x: "one connection per request", y: 100.1 }] },
      { label: "nginx stream", points: [{ x: "keep-alive", y: 15.5 }, { x: "one connection per request", y: 89.6 }] },
    ],
  });
  expect(spec("coverage-setup").series.map((s) => [s.label, s.points[0]!.x, s.points[0]!.y])).toEqual([
    ["edgeproxy --workers 1", "IPv4 /24 (192.0.2.0/24)", 20.3],
    ["edgeproxy --workers 1", "IPv6 /120 (2001:db8::/120)", 22.5],
    ["edgeproxy --workers 1", "IPv4 /24 + IPv6 /120", 23.4],
    ["edgeproxy --workers 2", "IPv4 /24 (192.0.2.0/24)", 66.8],
    ["edgeproxy --workers 2", "IPv6 /120 (2001:db8::/120)", 70.1],
    ["edgeproxy --workers 2", "IPv4 /24 + IPv6 /120", 68.5],
    ["socket per port, 4 processes", "1 IPv4 address (192.0.2.1)", 519.0],
    ["socket per port, 4 processes", "1 IPv6 address (2001:db8::1)", 513.6],
  ]);
  expect(spec("lookup-ns").series[1]!.points.map((p) => p.y)).toEqual([31, 31, 31]);
  expect(spec("udp-cpu").series.map((s) => [s.label, s.points.map((p) => p.y)])).toEqual([["edgeproxy udp", [9.95, 9.95]], ["nginx stream udp", [10.5, 10.45]]]);
  expect(spec("workers-rps").series.map((s) => [s.label, s.points[0]!.y])).toEqual([["--workers 1", 45058], ["--workers 2", 46888]]);
  // Every value is a number (a missed column would be NaN), but the direct path's CPU, which the tables leave out.
  for (const { spec: s } of specs) for (const p of s.series.flatMap((x) => x.points)) expect(`${s.name} ${p.x} ${Number.isFinite(p.y)}`).toBe(`${s.name} ${p.x} true`);
});

test("num reads the tables' numbers", () => {
  expect([num("49,291"), num("75.3 MiB (1 proc.)"), num("1.20×"), num("–"), num("—"), num(undefined)]).toEqual([49291, 75.3, 1.2, NaN, NaN, NaN]);
});
