// Scenario `slowloris` (issue 15): hostile clients against edgeproxy --mode
// http, nginx and HAProxy mode http, each with its default timeouts, side by
// side in one run. Two attacks, one after the other, each against a fresh
// proxy: slowloris (K connections trickling header lines, never finishing the
// head) on a plain listener, and an unfinished-TLS flood (K connections that
// never send a ClientHello) on a TLS listener; meanwhile a normal client sends
// requests at a steady rate. Per proxy: how long the proxy lets an attacker
// hold a connection, how many normal requests fail, the normal p50/p99.
// The clients are bench/hostile.ts processes on the load core.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { nginxHttpConfig } from "./http";
import type { AttackResult, Hold, NormalResult } from "./hostile";
import { f, fence, int, table } from "./md";
import { nginxCommand, ORIGIN, originConfig, type Endpoint } from "./peers";
import type { BenchContext, PlotSpec, RatioRow, ScenarioResult } from "./scenario";
import { Child, cpuMicros, median, processTree, run, sleep, waitConnectable } from "./sys";
import { oneWorker } from "./tcp";
import { makeCert, type Tls } from "./tls-peers";

/** Attacker connections per attack: well inside the 20,000 open-file limit of each process (the proxy holds one per attacker). */
const ATTACKERS = 1_000;
/** Slowloris: one header line per connection this often (the issue's measurement used 5 s). */
const TRICKLE_MS = 5_000;
/** Normal client: requests per second, each on a new connection, and the deadline after which one counts as failed. */
const RATE = 20;
const TIMEOUT_MS = 2_000;
const HOSTILE = join(import.meta.dir, "hostile.ts");

/**
 * Attack window and the no-attack baseline before it, in seconds. The full
 * window outlasts nginx's 60 s client_header_timeout; the quick one only
 * shows deadlines under 35 s.
 */
export const windows = (quick: boolean) => (quick ? { attack: 35, baseline: 3 } : { attack: 80, baseline: 5 });

interface Attack {
  name: "slowloris" | "tls";
  title: string;
  tls: boolean;
  trickleMs: number;
}
const ATTACKS: readonly Attack[] = [
  { name: "slowloris", title: "Slowloris", tls: false, trickleMs: TRICKLE_MS },
  { name: "tls", title: "Unfinished TLS", tls: true, trickleMs: 0 },
];

/** Seconds the scenario takes: every attack against every proxy, with start, baseline and teardown. */
export const slowlorisEstimate = (quick: boolean): number => {
  const w = windows(quick);
  return ATTACKS.length * 3 * (w.attack + w.baseline + 6) + 5;
};

interface Proxy {
  name: string;
  /** What the report shows of its configuration. */
  shown: (at: Endpoint, tls?: Tls) => string;
  start: (ctx: BenchContext, at: Endpoint, tls?: Tls) => Child;
}

/** HAProxy requires its timeouts to be set; these are the values its manual and Debian's shipped haproxy.cfg give. */
const haproxyConfig = (at: Endpoint, tls?: Tls) => `global
  nbthread 1
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  option forwardfor
  timeout connect 5s
  timeout client 50s
  timeout server 50s
  timeout http-request 10s
listen bench
  bind ${at.host}:${at.port}${tls ? ` ssl crt ${tls.pem}` : ""}
  server origin ${ORIGIN.host}:${ORIGIN.port}
`;

function proxies(ctx: BenchContext): Proxy[] {
  const pin = ["taskset", "-c", String(ctx.proxyCore)];
  const edgeArgs = (at: Endpoint, tls?: Tls) => [
    "--mode", "http", ...oneWorker(ctx.edgeproxy), "--ports", String(at.port), "--prefix", `${at.host}/32`, "--origin", `${ORIGIN.host}:${ORIGIN.port}`,
    ...(tls ? ["--tls-cert", tls.cert, "--tls-key", tls.key] : []),
  ];
  return [
    {
      name: "edgeproxy http",
      shown: (at, tls) => `edgeproxy ${edgeArgs(at, tls).join(" ")}`,
      start: (c, at, tls) => new Child("edgeproxy", [...pin, c.edgeproxy, ...edgeArgs(at, tls)]),
    },
    {
      name: "haproxy (mode http)",
      shown: (at, tls) => fence(haproxyConfig(at, tls)),
      start: (c, at, tls) => {
        writeFileSync(join(c.dir, "slow-haproxy.cfg"), haproxyConfig(at, tls));
        return new Child("haproxy", [...pin, "haproxy", "-db", "-f", join(c.dir, "slow-haproxy.cfg")]);
      },
    },
    {
      name: "nginx http proxy",
      shown: (at, tls) => fence(nginxHttpConfig(ctx.dir, "slow-nginx", at, tls)),
      start: (c, at, tls) => {
        writeFileSync(join(c.dir, "slow-nginx.conf"), nginxHttpConfig(c.dir, "slow-nginx", at, tls));
        return new Child("nginx", [...pin, ...nginxCommand(c.dir, "slow-nginx.conf")]);
      },
    },
  ];
}

interface Measured {
  attack: Attack;
  proxy: string;
  baseline?: NormalResult;
  during?: NormalResult;
  result?: AttackResult;
  /** The proxy's CPU over the attack window, % of one core. */
  cpuPct: number;
}

const hostile = (ctx: BenchContext, name: string, args: (string | number)[]) =>
  new Child(name, ["taskset", "-c", String(ctx.loadCore), process.execPath, HOSTILE, ...args.map(String)]);
const json = async <T>(c: Child, boundS: number): Promise<T> => JSON.parse((await c.waitFor(/^\{.*\}$/m, boundS * 1000))[0]) as T;

async function measure(ctx: BenchContext, attack: Attack, proxy: Proxy, at: Endpoint, tls: Tls, anomalies: string[]): Promise<Measured> {
  const w = windows(ctx.quick);
  const m: Measured = { attack, proxy: proxy.name, cpuPct: NaN };
  const where = `${attack.name}, ${proxy.name}`;
  const proc = proxy.start(ctx, at, attack.tls ? tls : undefined);
  const clients: Child[] = [];
  try {
    await waitConnectable(at.host, at.port, 15_000, 5).catch((e) => {
      throw new Error(`did not come up: ${(e as Error).message}; its output: ${proc.text.trim() || "(none)"}`);
    });
    if (proxy.name.startsWith("edgeproxy")) await proc.waitFor(/ready/, 10_000);
    const mode = attack.tls ? "tls" : "plain";
    const base = hostile(ctx, "normal client (baseline)", ["normal", at.host, at.port, mode, RATE, w.baseline, TIMEOUT_MS]);
    clients.push(base);
    m.baseline = await json<NormalResult>(base, w.baseline + 15);
    if (m.baseline.ok === 0) throw new Error(`no normal request succeeded before the attack: ${m.baseline.samples.join("; ")}`);
    const pids = processTree(proc.pid);
    const cpu0 = cpuMicros(pids);
    const t0 = performance.now();
    const attacker = hostile(ctx, "attackers", ["attack", at.host, at.port, ATTACKERS, w.attack, attack.trickleMs]);
    const normal = hostile(ctx, "normal client", ["normal", at.host, at.port, mode, RATE, w.attack, TIMEOUT_MS]);
    clients.push(attacker, normal);
    [m.result, m.during] = await Promise.all([json<AttackResult>(attacker, w.attack + 20), json<NormalResult>(normal, w.attack + 20)]);
    m.cpuPct = ((cpuMicros(pids) - cpu0) / 1e4 / ((performance.now() - t0) / 1000));
    ctx.log(`  ${where}: ${m.result.connected}/${ATTACKERS} attackers connected, ${m.result.holds.filter((h) => !h.open).length} closed by the proxy; normal ${m.during.ok} ok, ${m.during.failedTotal} failed, p99 ${m.during.p99Ms ?? "-"} ms`);
    if (proc.exited) throw new Error(`exited during the attack: ${proc.text.trim()}`);
  } catch (e) {
    anomalies.push(`${where}: ${(e as Error).message.slice(0, 600)}`);
  } finally {
    for (const c of clients) await c.stop();
    const end = await proc.stop();
    const clean = !end.forced && (end.code === 0 || (!proxy.name.startsWith("edgeproxy") && end.signal === "SIGTERM"));
    if (!clean) anomalies.push(`${where}: after SIGTERM: exit ${end.code}, signal ${end.signal}${end.forced ? " (needed SIGKILL)" : ""}; output:\n${proc.text.trim().slice(-2000) || "(none)"}`);
    await sleep(1000); // the attackers' sockets close; the next proxy starts clean
  }
  return m;
}

/** Median and max hold, in seconds; `capped` when the value is an attacker still open at the end (a lower bound). */
export function holdStats(holds: readonly Hold[]): { median: number; medianCapped: boolean; max: number; maxCapped: boolean } {
  const sorted = [...holds].sort((a, b) => a.s - b.s);
  if (!sorted.length) return { median: NaN, medianCapped: false, max: NaN, maxCapped: false };
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
  const last = sorted.at(-1)!;
  return { median: median(sorted.map((h) => h.s)), medianCapped: mid.open, max: last.s, maxCapped: holds.some((h) => h.open) };
}

const secs = (v: number, capped: boolean) => (Number.isFinite(v) ? `${capped ? "≥ " : ""}${f(v, 1)} s` : "–");
const ms = (v: number | null | undefined) => (v === null || v === undefined ? "–" : f(v, v >= 100 ? 0 : 1));
const reasons = (n?: NormalResult) => (n ? Object.entries(n.failed).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ") || "–" : "–");

export async function slowlorisScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const w = windows(ctx.quick);
  const anomalies: string[] = [];
  const tls = makeCert(ctx.dir, "slow");
  const list = proxies(ctx);
  ctx.log(`slowloris: ${ATTACKS.length} attacks × ${list.length} proxies × (${w.baseline} s baseline + ${w.attack} s attack); bounded at ~${slowlorisEstimate(ctx.quick)} s`);
  writeFileSync(join(ctx.dir, "slow-origin.conf"), originConfig(ctx.dir));
  const origin = new Child("nginx origin", ["taskset", "-c", String(ctx.loadCore), ...nginxCommand(ctx.dir, "slow-origin.conf")]);
  const runs: Measured[] = [];
  try {
    await waitConnectable(ORIGIN.host, ORIGIN.port, 5000, 10);
    for (const [ai, attack] of ATTACKS.entries()) {
      for (const [pi, proxy] of list.entries()) {
        ctx.log(`slowloris: ${attack.name} against ${proxy.name}`);
        // An address of its own per run, so one run's closing sockets never meet the next's.
        const at = { host: `192.0.2.${150 + 10 * ai + pi}`, port: attack.tls ? 8443 : 8080 };
        runs.push(await measure(ctx, attack, proxy, at, tls, anomalies));
      }
    }
  } finally {
    await origin.stop();
  }
  const took = (performance.now() - t0) / 1000;

  const out: string[] = [
    `Two attacks, each against every proxy in turn (a fresh process per attack, alone on core ${ctx.proxyCore}, every timeout at its default): ` +
      `**slowloris**: ${int(ATTACKERS)} connections on a plain HTTP listener, each sending \`GET / HTTP/1.1\`, \`Host\` and then one header line every ${TRICKLE_MS / 1000} s, never the empty line that ends the head; ` +
      `**unfinished TLS**: ${int(ATTACKERS)} connections to a TLS listener that send nothing (no ClientHello). ` +
      `The attackers (one \`bun bench/hostile.ts attack\` process, 100 connects in flight) and a normal client (\`bun bench/hostile.ts normal\`: ${RATE} GET requests a second at a steady pace, each on a new connection with \`Connection: close\`, over TLS on the TLS listener; a request fails on a refusal, reset, TLS error, non-200 or no complete response within ${TIMEOUT_MS / 1000} s) run on core ${ctx.loadCore} with the nginx origin (${ORIGIN.host}:${ORIGIN.port}, \`return 200 "ok\\n"\`).`,
    "",
    `Each run: the normal client alone for ${w.baseline} s (baseline), then attackers and normal client together for ${w.attack} s${ctx.quick ? " (quick: shorter than nginx's 60 s client_header_timeout, so nginx's close is not seen; the full run's window is " + windows(false).attack + " s)" : ""}. ` +
      `Hold: from an attacker's connect to the proxy's FIN or reset; an attacker still open when the window ends counts with the time it was held so far ("≥": a lower bound). Proxy CPU: utime+stime of its processes over the attack, % of one core. The clients share the load core with each other and the origin, and the machine may be shared: a stall of a second or so makes the ~20 requests then in flight slow at once, and at 20 requests a second that alone sets the p99 (the slowest requests and the client's own stalls are listed under each table). One run per proxy and attack: these are deadlines, not rates. ` +
      `Scenario time: ${f(took, 0)} s (bound: the runner stops it after 3 × its ${slowlorisEstimate(ctx.quick)} s estimate + 60 s).`,
    "",
  ];
  const ratios: RatioRow[] = [];
  const plots: PlotSpec[] = [];
  for (const attack of ATTACKS) {
    const rows = runs.filter((r) => r.attack === attack);
    out.push(`### ${attack.title} (${int(ATTACKERS)} attackers, ${w.attack} s)`, "");
    out.push(
      table(
        ["proxy", "attackers connected", "closed by the proxy", "hold median", "hold max", "normal ok / failed", "failures", "normal p50 / p99 ms (baseline)", "normal p50 / p99 / max ms (attack)", "proxy CPU %"],
        rows.map((r) => {
          const h = r.result ? holdStats(r.result.holds) : undefined;
          return [
            r.proxy,
            r.result ? `${int(r.result.connected)}${Object.keys(r.result.notConnected).length ? ` (not: ${Object.entries(r.result.notConnected).map(([k, v]) => `${k} ${v}`).join(", ")})` : ""}` : "–",
            r.result ? `${int(r.result.holds.filter((x) => !x.open).length)}${r.result.answered ? ` (${int(r.result.answered)} answered first)` : ""}` : "–",
            h ? secs(h.median, h.medianCapped) : "–",
            h ? secs(h.max, h.maxCapped) : "–",
            r.during ? `${int(r.during.ok)} / ${int(r.during.failedTotal)}` : "–",
            reasons(r.during),
            r.baseline ? `${ms(r.baseline.p50Ms)} / ${ms(r.baseline.p99Ms)}` : "–",
            r.during ? `${ms(r.during.p50Ms)} / ${ms(r.during.p99Ms)} / ${ms(r.during.maxMs)}` : "–",
            f(r.cpuPct, 0),
          ];
        }),
      ),
      "",
    );
    for (const r of rows) {
      if (r.during?.samples.length) out.push(`- ${r.proxy}, first failures (seconds into the attack): ${r.during.samples.join("; ")}`);
      if (r.during?.slowest.length) out.push(`- ${r.proxy}, slowest normal requests during the attack (seconds into it: latency): ${r.during.slowest.join("; ")}`);
      if (r.during?.stalls.length) out.push(`- ${r.proxy}: the normal client's own event loop ran ≥ 100 ms late (seconds into the attack: lateness): ${r.during.stalls.join("; ")}; requests in flight then were slowed on the client's side`);
    }
    out.push("");
    const edge = rows.find((r) => r.proxy.startsWith("edgeproxy"));
    const nginx = rows.find((r) => r.proxy.startsWith("nginx"));
    const peers = rows.filter((r) => r !== edge && r.result);
    if (edge?.result && edge.during) {
      const eh = holdStats(edge.result.holds);
      const nh = nginx?.result ? holdStats(nginx.result.holds) : undefined;
      const bestHold = peers.reduce<{ peer: string; value: number }>((a, r) => {
        const v = holdStats(r.result!.holds).max;
        return v < a.value || !Number.isFinite(a.value) ? { peer: r.proxy, value: v } : a;
      }, { peer: "none measured", value: NaN });
      // "No longer than nginx": every attacker closed by edgeproxy no later than nginx closed its last (a capped nginx figure is a lower bound).
      ratios.push({
        scenario: `${attack.title} (${int(ATTACKERS)} attackers)`,
        metric: `longest attacker hold, capped at ${w.attack} s`,
        unit: "s",
        better: "lower",
        edgeproxy: eh.max,
        best: bestHold,
        target: { text: `≤ nginx (${nh ? secs(nh.max, nh.maxCapped) : "not measured"})`, met: Boolean(nh) && !eh.maxCapped && eh.max <= nh!.max },
      });
      const bestFailed = peers.filter((r) => r.during).reduce<{ peer: string; value: number }>((a, r) => (r.during!.failedTotal < a.value || !Number.isFinite(a.value) ? { peer: r.proxy, value: r.during!.failedTotal } : a), { peer: "none measured", value: NaN });
      ratios.push({ scenario: `${attack.title} (${int(ATTACKERS)} attackers)`, metric: `normal requests failed (of ${int(edge.during.sent)})`, unit: "req", better: "lower", edgeproxy: edge.during.failedTotal, best: bestFailed, target: { text: "0", met: edge.during.failedTotal === 0 } });
      const bestP99 = peers.filter((r) => r.during?.p99Ms != null).reduce<{ peer: string; value: number }>((a, r) => (r.during!.p99Ms! < a.value || !Number.isFinite(a.value) ? { peer: r.proxy, value: r.during!.p99Ms! } : a), { peer: "none measured", value: NaN });
      ratios.push({ scenario: `${attack.title} (${int(ATTACKERS)} attackers)`, metric: "normal p99 during the attack", unit: "ms", better: "lower", edgeproxy: edge.during.p99Ms ?? NaN, best: bestP99 });
    }
    const step = w.attack <= 40 ? 2 : 5;
    plots.push({
      name: `slowloris-${attack.name}`,
      title: `${attack.title}: attacker connections still open (of ${int(ATTACKERS)})`,
      ylabel: "open attacker connections",
      kind: "line",
      series: rows.filter((r) => r.result).map((r) => ({
        label: r.proxy,
        points: r.result!.timeline.flatMap((n, i) => ((i + 1) % step === 0 ? [{ x: `${i + 1} s`, y: n }] : [])),
      })),
    });
  }
  const sample = { host: "192.0.2.15x", port: 8443 };
  out.push("Configurations (the TLS attack's; the slowloris runs are the same without TLS, on port 8080):", "");
  for (const p of list) out.push(`${p.name}:`, "", p.name.startsWith("edgeproxy") ? fence(p.shown(sample, tls), "sh") : p.shown(sample, tls), "");
  out.push(
    "edgeproxy runs with every default. " +
      "nginx runs with every timeout at its default (`client_header_timeout 60s` bounds both the request head and the TLS handshake; `worker_connections 16384` is the benchmark's, as in every scenario: nginx's own default of 512 would run out at 1,000 attackers). " +
      "HAProxy's timeouts are infinite unless its config sets them (it warns at start): `timeout connect 5s`, `timeout client 50s` and `timeout server 50s` are the example of its manual (section 2.6, Examples) and Debian's shipped /etc/haproxy/haproxy.cfg; `timeout http-request 10s` follows the manual's advice for it (\"a few seconds … add 3 or more seconds to cover TCP retransmits\"), the setting it names against slowloris. HAProxy 2.6 has no separate TLS handshake timeout: `timeout client` applies.",
  );
  // Quoted from the binary under test, so the report stays true whichever deadlines it has.
  const help = run([ctx.edgeproxy, "--help"]).out.split("\n").filter((l) => /^\s+--\S*(timeout|deadline)\b/i.test(l));
  out.push("", "The timeouts of the edgeproxy under test, as its `--help` states them:", "", fence(help.join("\n") || "(none listed)"));
  return { title: "Hostile clients: slowloris and unfinished TLS handshakes", markdown: out.join("\n"), ratios, plots, anomalies };
}
