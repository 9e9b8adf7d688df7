// What the tls-handshake and h2 scenarios share: the nginx HTTP origin on the
// load core, each TLS peer in turn alone on the proxy core (all peers in every
// run, round-robin), what it negotiates (openssl s_client), a warm-up, then one
// measured load run with three CPU figures around it, each divided by the
// units the generator completed (handshakes, requests): the proxy core's busy
// time (/proc/stat, as in bench/load.ts), the proxy's processes' utime+stime,
// and every core's.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { front, nginxCommand, ORIGIN, originConfig, startPeer, stopPeer, type Endpoint, type Peer } from "./peers";
import { CpuSnapshot } from "./procstat";
import { Child, cpuMicros, httpStatus, median, processTree, sleep, waitConnectable } from "./sys";
import { describeSClient, parseSClient } from "./tls-parse";
import { TLS_PORT } from "./tls-peers";
import { f, fence, int, table, times } from "./md";
import type { BenchContext, PlotSpec, RatioRow } from "./scenario";

/** What one measured load run did. */
export interface Load {
  /** Handshakes or requests completed. */
  units: number;
  /** Wall time of the run, seconds. */
  seconds: number;
  /** Units that failed (errors, timeouts). */
  failed: number;
  /** Something wrong with this run, for the anomalies (the run still counts if units > 0). */
  anomaly?: string;
}

export interface TlsSample extends Load {
  peer: string;
  run: number;
  rate: number;
  coreUs: number;
  procUs: number;
  machineUs: number;
}

export interface Steps {
  warmup: (at: Endpoint) => Promise<void>;
  /** One measured run against `peer` (its name for the anomalies) on `at`. */
  measure: (at: Endpoint, peer: Peer) => Promise<Load>;
  /** Extra checks in run 1 (e.g. whether the server resumes sessions): one line for the report. */
  once?: (at: Endpoint) => Promise<string>;
  /** ALPN list offered by the s_client check. */
  alpn: string;
}

export interface SideBySide {
  samples: TlsSample[];
  anomalies: string[];
  /** Per peer: what s_client negotiated and the `once` line. */
  notes: Map<string, string[]>;
  originCommand: string[];
  originConfig: string;
}

/** Where peer `index` answers in run `r`: bench/peers.ts's per-run address, on the TLS port. */
export const tlsFront = (r: number, index: number): Endpoint => ({ ...front(r, index), port: TLS_PORT });

/** Run `cmd` to its end, bounded by `limitMs` (then killed); never throws. */
export async function runBounded(name: string, cmd: string[], limitMs: number): Promise<{ code: number | null; out: string; timedOut: boolean }> {
  const c = new Child(name, cmd);
  const done = await Promise.race([c.proc.exited.then(() => true), sleep(limitMs).then(() => false)]);
  if (!done) await c.stop(1000);
  // Let the last output chunks arrive after the exit.
  await sleep(20);
  return { code: c.proc.exitCode, out: c.text, timedOut: !done };
}

/** What a handshake with the peer negotiates, as one line. */
export async function negotiated(at: Endpoint, alpn: string, loadCore: number): Promise<string> {
  const r = await runBounded("s_client", ["taskset", "-c", String(loadCore), "openssl", "s_client", "-connect", `${at.host}:${at.port}`, "-servername", "bench.test", "-alpn", alpn], 5000);
  return describeSClient(parseSClient(r.out));
}

export async function sideBySide(ctx: BenchContext, peers: readonly Peer[], steps: Steps): Promise<SideBySide> {
  const dir = ctx.dir;
  writeFileSync(join(dir, "tls-origin.conf"), originConfig(dir));
  const originCommand = ["taskset", "-c", String(ctx.loadCore), ...nginxCommand(dir, "tls-origin.conf")];
  const origin = new Child("nginx origin", originCommand);
  const samples: TlsSample[] = [];
  const anomalies: string[] = [];
  const notes = new Map<string, string[]>();
  try {
    await waitConnectable(ORIGIN.host, ORIGIN.port, 5000, 10);
    if ((await httpStatus(ORIGIN.host, ORIGIN.port)) !== 200) throw new Error(`the nginx origin did not answer 200: ${origin.text}`);
    for (let r = 1; r <= ctx.runs; r++) {
      for (const [index, peer] of peers.entries()) {
        const at = tlsFront(r, index);
        const proc = startPeer(peer, at, ctx.proxyCore, dir)!;
        try {
          await waitConnectable(at.host, at.port, 10_000, 5).catch((e) => {
            throw new Error(`did not come up: ${(e as Error).message}; its output: ${proc.text.trim() || "(none)"}`);
          });
          if (peer.name.startsWith("edgeproxy")) await proc.waitFor(/ready/, 10_000);
          if (r === 1) {
            const lines = [await negotiated(at, steps.alpn, ctx.loadCore).catch((e) => `s_client: ${(e as Error).message}`)];
            if (steps.once) lines.push(await steps.once(at));
            notes.set(peer.name, lines);
          }
          await steps.warmup(at);
          const pids = processTree(proc.pid);
          const p0 = cpuMicros(pids);
          const c0 = CpuSnapshot.now();
          const load = await steps.measure(at, peer);
          const c1 = CpuSnapshot.now();
          const p1 = cpuMicros(pids);
          const per = (us: number) => (load.units > 0 ? us / load.units : NaN);
          const s: TlsSample = {
            ...load,
            peer: peer.name,
            run: r,
            rate: load.units > 0 ? load.units / load.seconds : NaN,
            coreUs: per(c1.busyMicrosSince(c0, ctx.proxyCore)),
            procUs: per(p1 - p0),
            machineUs: per(c1.busyMicrosSince(c0, "all")),
          };
          samples.push(s);
          ctx.log(`  run ${r} ${peer.name.padEnd(26)} ${s.rate.toFixed(0).padStart(7)}/s  core ${s.coreUs.toFixed(1)} proxy ${s.procUs.toFixed(1)} machine ${s.machineUs.toFixed(1)} µs each  failed ${s.failed}`);
          if (load.anomaly) anomalies.push(`${peer.name}, run ${r}: ${load.anomaly}`);
          if (proc.exited) throw new Error(`exited during the run: ${proc.text.trim()}`);
        } catch (e) {
          anomalies.push(`${peer.name}, run ${r}: ${(e as Error).message.slice(0, 800)}`);
        } finally {
          await stopPeer(proc, peer.name, r, anomalies);
          // edgeproxy's own count at shutdown (connections, TLS handshake errors) over everything this run sent it.
          const summary = peer.name.startsWith("edgeproxy") ? proc.text.match(/^edgeproxy: service .*\d+ connections.*$/m)?.[0] : undefined;
          if (r === 1 && summary) notes.get(peer.name)?.push(`its shutdown summary after run 1 (checks, warm-up and the measured run): \`${summary.trim()}\``);
        }
        await sleep(300);
      }
    }
  } finally {
    await origin.stop();
  }
  return { samples, anomalies, notes, originCommand, originConfig: originConfig(dir) };
}

/** Medians per peer across runs (NaN where a run measured nothing). */
export function tlsSummary(samples: readonly TlsSample[]) {
  const names = [...new Set(samples.map((s) => s.peer))];
  return names.map((peer) => {
    const ss = samples.filter((s) => s.peer === peer);
    const m = (k: "rate" | "coreUs" | "procUs" | "machineUs") => median(ss.map((s) => s[k]).filter(Number.isFinite));
    return { peer, runs: ss.length, rate: m("rate"), coreUs: m("coreUs"), procUs: m("procUs"), machineUs: m("machineUs"), units: ss.reduce((a, s) => a + s.units, 0), failed: ss.reduce((a, s) => a + s.failed, 0) };
  });
}
export type TlsSummary = ReturnType<typeof tlsSummary>[number];

const ours = (peer: string) => peer.startsWith("edgeproxy");

/**
 * edgeproxy against the best of the other peers on `key` (lowest for "lower",
 * highest for "higher"); undefined when edgeproxy was not in the run. No
 * target: issue 18 names none for these scenarios.
 */
export function bestPeerRow(scenario: string, metric: string, unit: string, better: "lower" | "higher", sums: readonly TlsSummary[], key: "rate" | "coreUs"): RatioRow | undefined {
  const e = sums.find((s) => ours(s.peer));
  if (!e) return undefined;
  const others = sums.filter((s) => !ours(s.peer) && Number.isFinite(s[key]));
  const best = others.length ? others.reduce((a, b) => ((better === "lower" ? b[key] < a[key] : b[key] > a[key]) ? b : a)) : undefined;
  return { scenario, metric, unit, better, edgeproxy: e[key], best: best ? { peer: best.peer, value: best[key] } : { peer: "none measured", value: NaN } };
}

/** The section's tables (medians, per run), the notes per peer and the commands, plus the CPU and rate plots. */
export function tlsSection(o: { unit: string; plot: string; title: string; ctx: BenchContext; peers: readonly Peer[]; result: SideBySide; load: (at: Endpoint) => string[] }): { markdown: string; plots: PlotSpec[]; sums: TlsSummary[] } {
  const { unit, ctx, result } = o;
  const sums = tlsSummary(result.samples);
  const others = sums.filter((s) => !ours(s.peer) && Number.isFinite(s.coreUs));
  const best = others.length ? Math.min(...others.map((s) => s.coreUs)) : NaN;
  const out: string[] = [
    table(
      ["peer", `core µs/${unit}`, "ratio", `process µs/${unit}`, `machine µs/${unit}`, `${unit}s/s`, `${unit}s`, "failed", "runs"],
      sums.map((s) => [s.peer, f(s.coreUs), times(s.coreUs / best), f(s.procUs), f(s.machineUs), int(s.rate), int(s.units), int(s.failed), int(s.runs)]),
    ),
    "",
    `Per run (core / process / machine µs per ${unit}, ${unit}s/s):`,
    "",
    table(
      ["peer", ...Array.from({ length: ctx.runs }, (_, r) => `run ${r + 1}`)],
      sums.map((s) => [s.peer, ...result.samples.filter((x) => x.peer === s.peer).map((x) => `${f(x.coreUs)} / ${f(x.procUs)} / ${f(x.machineUs)}, ${int(x.rate)}`)]),
    ),
    "",
    "What each peer negotiated (one `openssl s_client` handshake in run 1) and checked:",
    "",
    ...o.peers.map((p) => `- **${p.name}**: ${(result.notes.get(p.name) ?? ["not reached"]).join("; ")}`),
    "",
    "Commands (run 1; run r, peer p answers on 192.0.2.<10·r + p>):",
    "",
  ];
  for (const [index, p] of o.peers.entries()) {
    const at = tlsFront(1, index);
    out.push(`- **${p.name}**: \`taskset -c ${ctx.proxyCore} ${p.command(at).join(" ")}\``, `  - load: \`${o.load(at).join(" ")}\``);
  }
  out.push("", `Origin: \`${result.originCommand.join(" ")}\``, "", fence(result.originConfig, "nginx"), "");
  for (const [index, p] of o.peers.entries()) {
    const c = p.config?.(tlsFront(1, index));
    if (c) out.push(`${c.file} (run 1):`, "", fence(c.text), "");
  }
  const all: PlotSpec[] = [
    { name: `${o.plot}-cpu`, title: `${o.title}: CPU µs per ${unit} on the proxy core (median of ${ctx.runs}; lower is better)`, ylabel: `µs per ${unit}`, kind: "bars", series: sums.map((s) => ({ label: s.peer, points: [{ x: o.title, y: s.coreUs }] })) },
    { name: `${o.plot}-rate`, title: `${o.title}: ${unit}s per second (median of ${ctx.runs})`, ylabel: `${unit}s/s`, kind: "bars", series: sums.map((s) => ({ label: s.peer, points: [{ x: o.title, y: s.rate }] })) },
  ];
  // Only the peers measured (gnuplot refuses a plot without a value).
  const plots = all
    .map((p) => ({ ...p, series: p.series.filter((x) => x.points.some((pt) => Number.isFinite(pt.y))) }))
    .filter((p) => p.series.length > 0);
  return { markdown: out.join("\n"), plots, sums };
}
