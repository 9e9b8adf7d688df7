// Adapter for bench/coverage.ts's older entry (edgeproxy, reps, core, log) →
// CoverageReport, until helper "scale"'s rework (a `coverageScenario:
// Scenario`) is on main. bench/registry.ts picks this only when the module's
// export is the old one; delete this file once it no longer is.
import { f, int, mib, table } from "./md";
import type { BenchContext, ScenarioResult } from "./scenario";

// The old CoverageReport, restated so this file does not break when coverage.ts changes shape.
interface Row {
  approach: string;
  scope: string;
  sockets: number;
  processes: number;
  setupMs: number;
  wallMs: number;
  kernelKiB: number;
  bpfKiB: number;
  rssKiB: number;
  reps: number;
  outcome: string;
  command: string;
}
interface Report {
  rows: Row[];
  noiseKiB: number;
  anomalies: string[];
}
export type LegacyCoverage = (edgeproxy: string, reps: number, core: number, log: (s: string) => void) => Promise<Report>;

export async function legacyCoverage(old: LegacyCoverage, ctx: BenchContext): Promise<ScenarioResult> {
  const reps = ctx.quick ? 1 : ctx.runs;
  ctx.log(`coverage: ${reps} run(s) per edgeproxy case`);
  const cov = await old(ctx.edgeproxy, reps, ctx.proxyCore, ctx.log);
  const out = [
    "Listening sockets: the process's fds that are LISTEN sockets in /proc/net/tcp{,6} of the benchmark netns. " +
      "Kernel Δ: growth of Slab+Percpu in /proc/meminfo from before spawn to 300 ms after setup, machine-wide " +
      `(drift over an idle second before the test: ${int(cov.noiseKiB)} KiB). BPF: memlock of edgeproxy's maps and program from /proc/<pid>/fdinfo. ` +
      "Setup: edgeproxy's own `ready (setup X ms)`; for socket-per-port the socket()+bind()+listen() loop. " +
      "Wall: spawn → first steered connection accepted (edgeproxy) or spawn → all binds done (socket per port).",
    "",
    table(
      ["approach", "scope", "listening sockets", "processes", "setup ms", "wall ms", "kernel Δ", "BPF memlock", "RSS", "runs", "outcome"],
      cov.rows.map((r) => [r.approach, r.scope, int(r.sockets), int(r.processes), f(r.setupMs), f(r.wallMs), mib(r.kernelKiB), r.bpfKiB ? mib(r.bpfKiB) : "–", mib(r.rssKiB), int(r.reps), r.outcome]),
    ),
    "",
    "Commands:",
    "",
    ...cov.rows.map((r) => `- \`${r.command}\``),
    "",
  ];
  const edge = cov.rows.find((r) => r.approach === "edgeproxy" && r.scope.startsWith("/24 ("));
  const perPort = cov.rows.find((r) => r.approach.startsWith("socket per port, 4"));
  return {
    title: "Coverage: every port of one address, and of a /24",
    markdown: out.join("\n"),
    ratios: edge
      ? [{ scenario: "Coverage 1-65535 on a /24", metric: `setup ms (${edge.sockets} listening socket(s))`, unit: "ms", better: "lower", edgeproxy: edge.setupMs, best: { peer: `${perPort?.approach ?? "socket per port"} (1 address only)`, value: perPort?.setupMs ?? NaN }, target: { text: "≤ 4 sockets, ≤ 50 ms", met: edge.sockets <= 4 && edge.setupMs <= 50 } }]
      : [],
    plots: [{ name: "coverage-setup", title: "Coverage: setup time for ports 1-65535 (lower is better)", ylabel: "ms", kind: "bars", logY: true, series: cov.rows.map((r) => ({ label: `${r.approach}, ${r.scope.replace(/, ports 1-65535$/, "")}${r.approach.startsWith("socket per port") && r.sockets < 65535 ? ` (stopped at ${int(r.sockets)})` : ""}`, points: [{ x: "setup", y: r.setupMs }] })) }],
    anomalies: cov.anomalies,
  };
}
