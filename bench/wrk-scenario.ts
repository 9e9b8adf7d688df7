// What the TCP and HTTP scenarios share: wrk through each peer in both modes
// (bench/load.ts), then the report section, the ratio rows and the plots.
import { fence, f, int, table, times } from "./md";
import { front, ORIGIN, type Peer } from "./peers";
import { loadScenario, MODES, summarize, wrkCommand, type LoadOptions, type Mode, type Summary } from "./load";
import type { BenchContext, PlotSpec, RatioRow, ScenarioResult } from "./scenario";

export const MODE_LABEL: Record<Mode, string> = { "keep-alive": "keep-alive", close: "one connection per request" };

/** The issue's CPU target: ≤ 0.9× the best peer's CPU per request. */
export const CPU_TARGET = 0.9;

export interface WrkSpec {
  /** "TCP" or "HTTP": the ratio table's scenario prefix and the section's subject. */
  kind: string;
  /** Plot file-name prefix: "tcp", "http". */
  plot: string;
  title: string;
  /** The peers, direct path first; names starting "edgeproxy" are ours. */
  peers: Peer[];
  /** Extra method text (what each peer is configured to do). */
  method: string;
}

const ours = (p: string) => p.startsWith("edgeproxy");
/** "edgeproxy (splice auto)" → "splice auto"; plain "edgeproxy" stays. */
export const variantName = (peer: string): string => peer.replace(/^edgeproxy\s*/, "").replace(/^\((.*)\)$/, "$1") || "edgeproxy";

/** Ratio rows for every edgeproxy variant against the best non-edgeproxy proxy of the same mode. */
export function cpuRatios(kind: string, rows: readonly { peer: string; mode: string; value: number }[], metric: string, modes: readonly string[] = MODES): RatioRow[] {
  const out: RatioRow[] = [];
  for (const mode of modes) {
    const here = rows.filter((r) => r.mode === mode && Number.isFinite(r.value));
    const peers = here.filter((r) => !ours(r.peer));
    const best = peers.length ? peers.reduce((a, b) => (b.value < a.value ? b : a)) : { peer: "none measured", value: NaN };
    const variants = here.filter((r) => ours(r.peer));
    for (const e of variants) {
      const ratio = e.value / best.value;
      out.push({
        scenario: `${kind} ${MODE_LABEL[mode as Mode] ?? mode}${variants.length > 1 ? ` (${variantName(e.peer)})` : ""}`,
        metric,
        unit: "µs",
        better: "lower",
        edgeproxy: e.value,
        best: { peer: best.peer, value: best.value },
        target: { text: `≤ ${CPU_TARGET}× best peer`, met: ratio <= CPU_TARGET },
      });
    }
  }
  return out;
}

export async function wrkScenario(ctx: BenchContext, spec: WrkSpec): Promise<ScenarioResult> {
  // 5 s per mode: the JIT's tier-up of the per-connection path took ~5 s of one-connection-per-request traffic
  // (perf: JSC's JITWorker thread 8-12% of the proxy's samples after a 1 s warm-up, 1.5% after 6 s; bench/profiles/tcp.md).
  const opts: LoadOptions = { runs: ctx.runs, seconds: ctx.seconds, warmupSeconds: ctx.quick ? 1 : 5, connections: 50, proxyCore: ctx.proxyCore, loadCore: ctx.loadCore };
  ctx.log(`${spec.kind}: ${opts.runs} run(s) × ${opts.seconds} s per peer and mode, ${spec.peers.length} peers`);
  const load = await loadScenario(ctx.dir, ctx.edgeproxy, opts, ctx.log, spec.peers);
  const sums = summarize(load.samples);
  const out: string[] = [];
  out.push(
    `wrk (\`-t1 -c${opts.connections}\`, core ${opts.loadCore}) → proxy (core ${opts.proxyCore}, alone on it) → nginx origin \`return 200 "ok"\` (1 worker, core ${opts.loadCore}, shared with wrk). ` +
      `${opts.runs} run(s) × ${opts.seconds} s per peer and mode after a ${opts.warmupSeconds} s warm-up in the same mode; peers round-robin within each run; medians. ${spec.method}`,
    "",
    "How each number was made, per wrk run, divided by the requests wrk completed:",
    "",
    `- **core µs/req** (the primary figure): busy time of core ${opts.proxyCore} (the proxy's, nothing else pinned there) from its /proc/stat line — user+nice+system+irq+softirq+steal ticks — read just before and after wrk. It includes kernel work done for the proxy outside its process context (softirq, kworkers), which process accounting misses.`,
    "- **process µs/req**: utime+stime delta of the proxy's processes (/proc/<pid>/stat, all threads; nginx master+worker).",
    "- **machine µs/req**: busy time summed over every core (proxy, wrk, origin, kernel): the whole cost of a request on this machine, including the direct path's.",
    `- **req/s, p50, p99**: wrk's own (\`--latency\`). req/s is bounded by core ${opts.loadCore}, which runs both wrk and the origin, so compare CPU/request first. Ratio: core µs/req to the lowest of the other proxies in the same mode.`,
    "",
  );
  for (const mode of MODES) {
    const rows = sums.filter((s) => s.mode === mode);
    const others = rows.filter((s) => s.peer !== "direct (no proxy)" && !ours(s.peer) && Number.isFinite(s.coreUs));
    const best = Math.min(...others.map((s) => s.coreUs));
    out.push(`### ${MODE_LABEL[mode]}${mode === "close" ? " (`-H 'Connection: close'`)" : ""}`, "");
    out.push(
      table(
        ["peer", "core µs/req", "ratio", "process µs/req", "machine µs/req", "req/s", "p50 ms", "p99 ms", "runs", "errors"],
        rows.map((s: Summary) => [s.peer, f(s.coreUs), Number.isFinite(s.coreUs) ? times(s.coreUs / best) : "–", f(s.proxyUs), f(s.machineUs), int(s.rps), f(s.p50Ms, 2), f(s.p99Ms, 2), int(s.runs), int(s.errors)]),
      ),
      "",
    );
  }
  out.push("Per run (core / process / machine µs per request, req/s):", "");
  out.push(
    table(
      ["peer", "mode", ...Array.from({ length: opts.runs }, (_, r) => `run ${r + 1}`)],
      sums.map((s) => [
        s.peer,
        s.mode,
        ...load.samples.filter((x) => x.peer === s.peer && x.mode === s.mode).map((x) => `${f(x.coreUs)} / ${f(x.proxyUs)} / ${f(x.machineUs)}, ${int(x.rps)}`),
      ]),
    ),
    "",
  );
  out.push("Commands (run 1; run r, peer p answers on 192.0.2.<10·r + p> so one peer's TIME_WAIT sockets never meet the next one's):", "");
  for (const [index, p] of spec.peers.entries()) {
    const at = p.proxied ? front(1, index) : ORIGIN;
    out.push(`- **${p.name}**: \`${p.proxied ? `taskset -c ${opts.proxyCore} ${p.command(at).join(" ")}` : "(none: wrk dials the origin)"}\``);
    out.push(`  - wrk: \`${wrkCommand(at, "keep-alive", opts.seconds, opts.connections, opts.loadCore).join(" ")}\` (and with \`-H 'Connection: close'\`)`);
  }
  out.push("", `Origin: \`${load.originCommand.join(" ")}\``, "", fence(load.originConfig, "nginx"), "");
  for (const [index, p] of spec.peers.entries()) {
    const c = p.config?.(front(1, index));
    if (c) out.push(`${c.file} (run 1):`, "", fence(c.text), "");
  }

  const proxied = (name: string) => name !== "direct (no proxy)";
  const names = [...new Set(sums.map((s) => s.peer))];
  const plots: PlotSpec[] = [
    {
      name: `${spec.plot}-cpu`,
      title: `${spec.kind}: CPU µs per request on the proxy core (median of ${opts.runs}; lower is better)`,
      ylabel: "µs per request",
      kind: "bars",
      series: names.filter(proxied).map((peer) => ({ label: peer, points: MODES.map((m) => ({ x: MODE_LABEL[m], y: sums.find((s) => s.peer === peer && s.mode === m)?.coreUs ?? NaN })) })),
    },
    {
      name: `${spec.plot}-rps`,
      title: `${spec.kind}: requests per second (median of ${opts.runs})`,
      ylabel: "requests/s",
      kind: "bars",
      series: names.map((peer) => ({ label: peer, points: MODES.map((m) => ({ x: MODE_LABEL[m], y: sums.find((s) => s.peer === peer && s.mode === m)?.rps ?? NaN })) })),
    },
  ];
  return {
    title: spec.title,
    markdown: out.join("\n"),
    ratios: cpuRatios(spec.kind, sums.map((s) => ({ peer: s.peer, mode: s.mode, value: s.coreUs })), "CPU µs/request on the proxy core"),
    plots,
    anomalies: load.anomalies,
  };
}
