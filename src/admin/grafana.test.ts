// deploy/grafana/edgeproxy.json reads only what /metrics exports: every
// metric name in its queries is a family the code renders (from a fixture
// with tcp, http and udp services, merged over two workers as a supervisor
// serves it), and every label a query selects or groups by is one that
// family carries. deploy/prometheus/scrape.yml is valid YAML for a /metrics job.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { HttpStats } from "../proxy/http/stats";
import { readRow, ROW } from "../proxy/udp/stats";
import { mergeMetrics } from "../cli/supervisor-admin";
import { renderAdminRefusals } from "./api";
import type { ServiceSnapshot, StatusSnapshot } from "./backend";
import { sampleStatus } from "./fixture";
import { renderMetrics } from "./metrics";

const DEPLOY = join(import.meta.dir, "../../deploy");

/** The fixture's services plus an http and a udp one, so every family has samples. */
function fullStatus(): StatusSnapshot {
  const s = sampleStatus();
  const web = s.services[0]!;
  const http: ServiceSnapshot = { ...web, name: "api", id: 3, mode: "http", http: new HttpStats().snapshot(1, 2) };
  const udp: ServiceSnapshot = { name: "dns", id: 4, mode: "udp", bindings: [], sockets: [], kernel: web.kernel, datagrams: readRow(new Float64Array(ROW)) };
  return { ...s, services: [...s.services, http, udp] };
}

/** Exported series names (histograms as their _bucket, _sum, _count) and the labels each carries. */
function exported(): Map<string, Set<string>> {
  const one = renderMetrics(fullStatus()) + renderAdminRefusals();
  const text = mergeMetrics([
    { worker: 0, text: one },
    { worker: 1, text: one },
  ]);
  const names = new Map<string, Set<string>>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
    const series = m[2] === "histogram" ? ["_bucket", "_sum", "_count"].map((x) => m[1] + x) : [m[1]!];
    for (const n of series) names.set(n, new Set());
  }
  for (const m of text.matchAll(/^(edgeproxy_\w+)(?:\{(.*)\})? \S+$/gm)) {
    const labels = names.get(m[1]!);
    if (!labels) throw new Error(`sample ${m[1]} without a TYPE`);
    for (const l of (m[2] ?? "").matchAll(/(\w+)="/g)) labels.add(l[1]!);
  }
  return names;
}

// Labels Prometheus adds to every scraped series.
const TARGET_LABELS = ["instance", "job"];

/** What a PromQL expression uses that /metrics does not export; [] when all is there. */
function unknownNames(expr: string, names: Map<string, Set<string>>): string[] {
  const problems: string[] = [];
  const used = [...expr.matchAll(/\b(edgeproxy_\w+)(\{[^}]*\})?/g)];
  const all = new Set(TARGET_LABELS);
  for (const [, name, selector] of used) {
    const labels = names.get(name!);
    if (!labels) {
      problems.push(`no metric ${name}`);
      continue;
    }
    for (const l of labels) all.add(l);
    for (const [, label] of (selector ?? "").matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) {
      if (!labels.has(label!) && !TARGET_LABELS.includes(label!)) problems.push(`${name} has no label ${label}`);
    }
  }
  if (used.length === 0) problems.push("no edgeproxy metric");
  for (const [, list] of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) {
    for (const label of list!.split(",").map((l) => l.trim()).filter(Boolean)) {
      if (!all.has(label)) problems.push(`grouped by ${label}, which none of its metrics has`);
    }
  }
  return problems;
}

/** Every PromQL string in the dashboard: the panels' targets and the variables' queries. */
function queries(dashboard: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown, key = ""): void => {
    if (Array.isArray(v)) v.forEach((x) => walk(x));
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, k);
    else if (typeof v === "string" && (key === "expr" || key === "definition" || (key === "query" && v.includes("edgeproxy_")))) out.push(v);
  };
  walk(dashboard);
  return out;
}

describe("deploy/grafana/edgeproxy.json", () => {
  const dashboard = JSON.parse(readFileSync(join(DEPLOY, "grafana/edgeproxy.json"), "utf8")) as { panels: { type: string; title: string; targets?: { expr: string }[] }[]; templating: { list: { name: string }[] } };
  const names = exported();

  test("the checker catches a wrong name, a wrong label and a wrong grouping", () => {
    expect(unknownNames("rate(edgeproxy_connections_total[1m])", names)).toEqual([]);
    expect(unknownNames("rate(edgeproxy_connection_total[1m])", names)).toEqual(["no metric edgeproxy_connection_total"]);
    expect(unknownNames('edgeproxy_bytes_total{dir="x"}', names)).toEqual(["edgeproxy_bytes_total has no label dir"]);
    expect(unknownNames("sum by (class) (edgeproxy_bytes_total)", names)).toEqual(["grouped by class, which none of its metrics has"]);
    expect(names.get("edgeproxy_connections_total")).toEqual(new Set(["worker", "service"]));
  });

  test("every query uses names and labels /metrics exports", () => {
    const all = queries(dashboard);
    expect(all.length).toBeGreaterThan(20);
    const problems = all.flatMap((q) => unknownNames(q, names).map((p) => `${p}: ${q}`));
    expect(problems).toEqual([]);
  });

  test("every panel has a query; the variables it uses are defined", () => {
    const vars = new Set(dashboard.templating.list.map((v) => v.name));
    for (const p of dashboard.panels.filter((p) => p.type !== "row")) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets!) for (const [, v] of t.expr.matchAll(/\$(\w+)/g)) expect(vars.has(v!) || v!.startsWith("__"), `${p.title}: $${v}`).toBe(true);
    }
  });
});

test("deploy/prometheus/scrape.yml: a /metrics job with a bearer token", () => {
  const yml = Bun.YAML.parse(readFileSync(join(DEPLOY, "prometheus/scrape.yml"), "utf8")) as { scrape_configs: { job_name: string; metrics_path: string; authorization: { type: string }; static_configs: { targets: string[] }[] }[] };
  const [job] = yml.scrape_configs;
  expect(job!.job_name).toBe("edgeproxy");
  expect(job!.metrics_path).toBe("/metrics");
  expect(job!.authorization.type).toBe("Bearer");
  expect(job!.static_configs[0]!.targets).toEqual(["127.0.0.1:9100"]);
});
