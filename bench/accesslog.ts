// Scenario `accesslog`: what the access log costs. edgeproxy tcp and http,
// each with the access log off and on (one JSON line per connection, per
// request), side by side in one run through bench/load.ts (same origin, wrk,
// core pinning and CPU accounting as the tcp and http scenarios), and the
// ratio on/off of CPU per request on the proxy core. Target: ≤ 1.10×. Then
// the same paired (bench/paired.ts), saturated and at a fixed rate, and
// nginx's own log in the same pairs for reference.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { httpPeers } from "./http";
import { loadScenario, MODES, summarize, type LoadOptions } from "./load";
import { f, int, table, times } from "./md";
import { front, peers, type Peer } from "./peers";
import type { BenchContext, RatioRow, Scenario, ScenarioResult } from "./scenario";
import { pairedRun } from "./paired";
import { median } from "./sys";
import { oneWorker, withArgs } from "./tcp";
import { MODE_LABEL } from "./wrk-scenario";

/** The access log may cost at most this much more CPU per request. */
const TARGET = 1.1;
/**
 * The fixed-rate pairs: each of wrk's 50 connections waits this long before each request, so that both
 * variants, sharing one core, stay well below what it can take: ≈ 10,000 keep-alive requests/s each, and
 * ≈ 2,400 connections/s each (tcp one connection per request costs ≈ 70 µs, so 4 ms would be past saturation).
 */
const FIXED_DELAY_MS = { "keep-alive": 4, close: 20 } as const;
/** A fixed-rate pair whose variants' request counts differ by more than this is no comparison at one rate. */
const RATE_SPREAD = 0.05;

/** Does this binary have --access-log? */
const hasAccessLog = (binary: string): boolean => {
  const r = Bun.spawnSync([binary, "--help"], { stdout: "pipe", stderr: "pipe" });
  return /--access-log\b/.test(r.stdout.toString() + r.stderr.toString());
};

export const accesslogScenario: Scenario = async (ctx: BenchContext): Promise<ScenarioResult> => {
  const title = "Access log: CPU per request with the log off and on";
  if (!hasAccessLog(ctx.edgeproxy)) return { title, markdown: "This edgeproxy has no --access-log: nothing measured.", ratios: [], plots: [], anomalies: ["accesslog: the binary has no --access-log"] };
  const logs = { tcp: join(ctx.dir, "access-tcp.log"), http: join(ctx.dir, "access-http.log") };
  const one = oneWorker(ctx.edgeproxy);
  const tcp = peers(ctx.dir, ctx.edgeproxy).find((p) => p.name.startsWith("edgeproxy"))!;
  const http = httpPeers(ctx.dir, ctx.edgeproxy).find((p) => p.name.startsWith("edgeproxy"))!;
  const variants = (p: Peer, kind: "tcp" | "http"): Peer[] => [
    withArgs({ ...p, name: `edgeproxy ${kind}` }, one, " (log off)"),
    withArgs({ ...p, name: `edgeproxy ${kind}` }, [...one, "--access-log", logs[kind]], " (log on)"),
  ];
  const all = [...variants(tcp, "tcp"), ...variants(http, "http")];
  const opts: LoadOptions = { runs: ctx.runs, seconds: ctx.seconds, warmupSeconds: ctx.quick ? 1 : 5, connections: 50, proxyCore: ctx.proxyCore, loadCore: ctx.loadCore };
  ctx.log(`accesslog: ${opts.runs} run(s) × ${opts.seconds} s per variant and mode, ${all.length} variants`);
  const load = await loadScenario(ctx.dir, ctx.edgeproxy, opts, ctx.log, all);
  const sums = summarize(load.samples);
  const at = (peer: string, mode: string) => sums.find((s) => s.peer === peer && s.mode === mode);

  const rows: string[][] = [];
  const ratios: RatioRow[] = [];
  const anomalies = [...load.anomalies];
  for (const kind of ["tcp", "http"] as const) {
    for (const mode of MODES) {
      const off = at(`edgeproxy ${kind} (log off)`, mode);
      const on = at(`edgeproxy ${kind} (log on)`, mode);
      if (!off || !on) continue;
      const ratio = on.coreUs / off.coreUs;
      rows.push([kind, MODE_LABEL[mode], f(off.coreUs), f(on.coreUs), times(ratio), f(off.proxyUs), f(on.proxyUs), int(off.rps), int(on.rps), ratio <= TARGET ? "met" : "missed"]);
      ratios.push({
        scenario: `Access log ${kind.toUpperCase()} ${MODE_LABEL[mode]}`,
        metric: "CPU µs/request on the proxy core, log on",
        unit: "µs",
        better: "lower",
        edgeproxy: on.coreUs,
        best: { peer: "edgeproxy, log off", value: off.coreUs },
        target: { text: `≤ ${TARGET}× log off`, met: ratio <= TARGET },
      });
      if (ratio > TARGET) anomalies.push(`accesslog: ${kind} ${mode}: ${times(ratio)} the CPU per request with the log on (target ≤ ${TARGET}×)`);
    }
  }
  // The same four, paired (bench/paired.ts): log off and on at once on the same cores, B/A of process CPU per
  // request per pair. Sequential runs of one variant differ by ±15% here; pairs by a few percent. Each as much as
  // wrk takes (saturated: a per-request cost also lowers the batching) and at a fixed rate (each wrk connection waits DELAY_MS before each request: both variants serve the same requests per
  // second, well below saturation, as an edge mostly runs); and nginx's own JSON log, with the same fields, in the
  // same harness: what a log costs the reference proxy (not judged).
  const pairs = Math.max(3, ctx.runs);
  const settings = [
    { proxy: ctx.edgeproxy, name: "edgeproxy", fixed: false, judged: true },
    { proxy: ctx.edgeproxy, name: "edgeproxy", fixed: true, judged: true },
    { proxy: "nginx", name: "nginx (reference)", fixed: false, judged: false },
    { proxy: "nginx", name: "nginx (reference)", fixed: true, judged: false },
  ];
  const pairedRows: string[][] = [];
  for (const set of settings) {
    for (const kind of ["tcp", "http"] as const) {
      for (const mode of MODES) {
        const logPath = join(ctx.dir, `access-${kind}-paired-${set.proxy === "nginx" ? "nginx" : "edgeproxy"}.log`);
        const delayMs = set.fixed ? FIXED_DELAY_MS[mode] : undefined;
        const rate = set.fixed ? `fixed (${delayMs} ms per connection between requests)` : "saturated";
        const run = await pairedRun(set.proxy, kind, mode, pairs, ["--access-log", logPath], { proxy: ctx.proxyCore, load: ctx.loadCore }, ctx.quick ? 2 : 5, delayMs);
        const what = `${set.name} ${kind} ${mode}, ${set.fixed ? "fixed" : "saturated"} rate`;
        if (run.failure) {
          anomalies.push(`accesslog: paired ${what}: no pair measured (${run.failure})`);
          continue;
        }
        if (set.fixed) {
          // Both variants at the rate asked for: else one fell behind (the core was saturated) and this is no fixed-rate pair.
          const spread = Math.max(...run.aRequests.map((a, i) => Math.abs(a - run.bRequests[i]!) / Math.max(a, run.bRequests[i]!)));
          if (spread > RATE_SPREAD) anomalies.push(`accesslog: paired ${what}: the variants' request counts differ by up to ${(spread * 100).toFixed(0)}% (not one rate)`);
        }
        // The ratio of the medians, as the opening table computes it from the row (the pairs' own B/A listed beside it).
        const ratio = median(run.b) / median(run.a);
        ctx.log(`accesslog: paired ${what}: B/A ${run.ratios.map((r) => r.toFixed(3)).join(" ")}`);
        const rps = (n: number[]) => int(median(n) / (ctx.quick ? 2 : 5));
        pairedRows.push([set.name, rate, kind, MODE_LABEL[mode], f(median(run.a)), f(median(run.b)), times(ratio), run.ratios.map((r) => f(r, 3)).join(", "), `${rps(run.aRequests)} / ${rps(run.bRequests)}`, set.judged ? (ratio <= TARGET ? "met" : "missed") : "—"]);
        if (!set.judged) continue;
        const fixed = set.fixed ? ", fixed rate" : "";
        ratios.push({
          scenario: `Access log ${kind.toUpperCase()} ${MODE_LABEL[mode]}, paired${fixed}`,
          metric: "process CPU µs/request, log on, both at once",
          unit: "µs",
          better: "lower",
          edgeproxy: median(run.b),
          best: { peer: "edgeproxy, log off", value: median(run.a) },
          target: { text: `≤ ${TARGET}× log off`, met: ratio <= TARGET },
        });
        if (ratio > TARGET) anomalies.push(`accesslog: paired ${what}: ${times(ratio)} the process CPU per request with the log on (target ≤ ${TARGET}×)`);
      }
    }
  }
  const written = (Object.entries(logs) as [string, string][]).map(([kind, path]) => {
    if (!existsSync(path)) return `${kind}: no log file`;
    const text = readFileSync(path, "utf8");
    const n = text.length ? text.split("\n").length - 1 : 0;
    return `${kind}: ${int(n)} lines, ${f(statSync(path).size / 1e6)} MB`;
  });
  const markdown = [
    `The tcp and http scenarios' setup (wrk \`-t1 -c${opts.connections}\` on core ${opts.loadCore} → edgeproxy \`--workers 1\` alone on core ${opts.proxyCore} → nginx origin), ` +
      `${opts.runs} run(s) × ${opts.seconds} s per variant and mode, each after a ${opts.warmupSeconds} s warm-up in the same mode (edgeproxy's JIT compiles a mode's code when it first runs: a one-off, not a per-request cost), variants round-robin within each run, medians. ` +
      "Log on: `--access-log FILE` on the same disk as the scratch directory: a line per connection (tcp: so keep-alive writes a line per wrk connection, one connection per request a line per request) and a line per request (http). " +
      `core µs/req: busy time of the proxy core per request (as in the tcp scenario); process µs/req: the edgeproxy process's utime+stime. Target: log on ≤ ${TARGET}× log off.`,
    "",
    table(["service", "mode", "core µs/req off", "core µs/req on", "on/off", "process µs/req off", "process µs/req on", "req/s off", "req/s on", `≤ ${TARGET}×`], rows),
    "",
    `Paired (\`bench/pair.sh\`, bench/paired.ts): log off (A) and on (B) **at the same time**, each in its own netns, both proxies on core ${ctx.proxyCore}, both wrk loads and nginx origins on core ${ctx.loadCore}, ${pairs} pairs of ${ctx.quick ? 2 : 5} s after as long a warm-up; process µs/req: utime+stime of the proxy (nginx: master and worker) ÷ its wrk's requests, the median of the pairs; on/off: on's median ÷ off's. The machine's noise hits both variants of a pair alike, so this ratio is steady to a few percent. ` +
      `Saturated, wrk sends as fast as each variant answers, which also counts what a slower proxy costs its own kernel side: with a 1.08 µs busy loop added per request (no log), the same pairs read 1.07–1.10× for http keep-alive (≈ 1.7 µs per added µs). ` +
      `At a fixed rate, each wrk connection waits before each request (\`DELAY_MS\`, wrk's script delay(): ${FIXED_DELAY_MS["keep-alive"]} ms keep-alive, ${FIXED_DELAY_MS.close} ms one connection per request): both variants serve about the same requests per second (req/s A / B), well below what the shared core takes. ` +
      "nginx (reference): nginx as the proxy (http: a reverse proxy with the http scenario's forwarding headers and upstream keep-alive; tcp: stream) with its own access log off and on, a JSON `log_format` with the fields of ours (`escape=json`, `buffer=64k`, listening on the wildcard so `$server_addr` costs a getsockname as our edge does; its time is per second) and, with the log, an X-Request-Id to the origin as ours: what a log costs the reference proxy in the same harness; not judged.",
    "",
    table(["proxy", "rate", "service", "mode", "process µs/req off", "process µs/req on", "on/off", "B/A per pair", "req/s A / B", `≤ ${TARGET}×`], pairedRows),
    "",
    `Lines written over the whole scenario (warm-ups included): ${written.join("; ")}.`,
    "",
    "Commands (run 1):",
    "",
    ...all.map((p, i) => `- **${p.name}**: \`${p.command(front(1, i)).join(" ")}\``),
  ].join("\n");
  return { title, markdown, ratios, plots: [], anomalies };
};
