// Scenario 3: bulk TCP throughput. An iperf3 server (the origin) and the
// iperf3 client both run on the load core; each proxy alone on the proxy
// core relays one stream, in each direction (iperf3 -R: the server sends).
// The direct path puts the client on the proxy core instead, so client and
// server each have a core: the physical limit of this machine's loopback.
// While the stream runs, the proxy's processes' VmRSS is sampled every 50 ms
// and the largest sum kept (VmHWM would be the peak since start, not during
// the transfer).
import { readFileSync } from "node:fs";
import { parseIperf3, type IperfResult } from "./iperf";
import { f, int, mib, table, times } from "./md";
import { peers, startPeer, stopPeer, type Endpoint } from "./peers";
import { CpuSnapshot } from "./procstat";
import type { BenchContext, Scenario, ScenarioResult } from "./scenario";
import { Child, cpuMicros, median, processTree, sleep } from "./sys";
import { engineVariants, oneWorker, spliceVariants, withArgs } from "./tcp";
import { variantName } from "./wrk-scenario";

const IPERF_ORIGIN: Endpoint = { host: "127.0.0.1", port: 5201 };
/** Run r, peer p answers here: away from the TCP (10–99) and UDP (110–199) scenarios' addresses. */
const bulkFront = (run: number, peer: number): Endpoint => ({ host: `192.0.2.${200 + 5 * (run - 1) + peer}`, port: 8080 });

/** The targets: ≥ 1.3× the best tuned peer's Gbit/s (issue 19; issue 7 said HAProxy's), at most 64 MiB of RSS, and (issue 19) at most 16 MiB of anonymous memory above idle. */
const GBIT_TARGET = 1.3;
const RSS_TARGET_KIB = 64 * 1024;
const ANON_GROWTH_TARGET_KIB = 16 * 1024;
/** The peers' relay buffer for bulk: what edgeproxy's engine reads at once (src/engine/engine.ts BUFFER_SIZE). */
const BUFFER_SIZE = 256 * 1024;
/** How long a started proxy sits before its idle memory is read. */
const IDLE_SETTLE_MS = 500;

type Direction = "upload" | "download";
const DIRECTIONS: readonly Direction[] = ["upload", "download"];
const DIRECTION_LABEL: Record<Direction, string> = { upload: "client → origin", download: "origin → client (-R)" };

interface BulkSample {
  peer: string;
  direction: Direction;
  gbit: number;
  retransmits: number;
  /** Busy share of the proxy core over the transfer, % (NaN for the direct path). */
  corePct: number;
  /** The proxy processes' utime+stime over the transfer, % of one core. */
  processPct: number;
  /** Largest sum of the proxy processes' VmRSS seen during the transfer. */
  peakRssKiB: number;
  /** The same for RssAnon (heap and buffers, without the mapped executable and libraries). */
  peakAnonKiB: number;
  /** RssAnon of the proxy processes once started and idle, before any transfer: what peakAnonKiB grew from. */
  idleAnonKiB: number;
  /** How many processes that sum is over (nginx: master + worker). */
  processes: number;
}

export const iperfClient = (at: Endpoint, core: number, seconds: number, direction: Direction) => [
  "taskset", "-c", String(core), "iperf3", "-c", at.host, "-p", String(at.port), "-t", String(seconds), "-J", ...(direction === "download" ? ["-R"] : []),
];

/** /proc/net/tcp's hex form of an IPv4 `host`:`port` (the address in host byte order, little-endian here). */
export function procNetTcpAddress(at: Endpoint): string {
  const ip = at.host.split(".").map(Number).reverse().map((b) => b.toString(16).toUpperCase().padStart(2, "0")).join("");
  return `${ip}:${at.port.toString(16).toUpperCase().padStart(4, "0")}`;
}

/**
 * Wait until a socket listens on `at` (/proc/net/tcp, state 0A). Not by
 * connecting: iperf3 takes any connection, also one relayed by a proxy, as a
 * test's control channel and then refuses the real test as busy; and not by
 * its "Server listening" line, which stdio buffers when not a tty.
 */
async function listening(at: Endpoint, timeoutMs: number): Promise<void> {
  const local = procNetTcpAddress(at);
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const rows = readFileSync("/proc/net/tcp", "utf8").split("\n").map((l) => l.trim().split(/\s+/));
    if (rows.some((f) => f[1] === local && f[3] === "0A")) return;
    await sleep(20);
  }
  throw new Error(`nothing listened on ${at.host}:${at.port} within ${timeoutMs} ms`);
}

/** The sums of VmRSS and RssAnon (/proc/PID/status) over `pids`, KiB. */
function memoryOf(pids: number[]): { rssKiB: number; anonKiB: number } {
  let rssKiB = 0;
  let anonKiB = 0;
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      rssKiB += Number(status.match(/^VmRSS:\s+(\d+) kB/m)?.[1] ?? 0);
      anonKiB += Number(status.match(/^RssAnon:\s+(\d+) kB/m)?.[1] ?? 0);
    } catch {
      // a process gone meanwhile counts nothing
    }
  }
  return { rssKiB, anonKiB };
}

/** Run the client to completion (bounded), sampling `pids`' RSS meanwhile. */
async function transfer(cmd: string[], seconds: number, pids: number[]): Promise<{ r: IperfResult; peakRssKiB: number; peakAnonKiB: number; wallS: number }> {
  let peak = 0;
  let peakAnon = 0;
  const sample = () => {
    const m = memoryOf(pids);
    peak = Math.max(peak, m.rssKiB);
    peakAnon = Math.max(peakAnon, m.anonKiB);
  };
  const t0 = performance.now();
  const client = new Child("iperf3 client", cmd);
  const timer = setInterval(sample, 50);
  try {
    sample();
    const done = await Promise.race([client.proc.exited.then(() => true), sleep((seconds + 15) * 1000).then(() => false)]);
    if (!done) {
      await client.stop();
      throw new Error(`${cmd.join(" ")} did not finish within ${seconds + 15} s`);
    }
  } finally {
    clearInterval(timer);
  }
  const wallS = (performance.now() - t0) / 1000;
  const json = client.text.slice(client.text.indexOf("{"), client.text.lastIndexOf("}") + 1);
  return { r: parseIperf3(json || client.text), peakRssKiB: peak, peakAnonKiB: peakAnon, wallS };
}

export const bulkScenario: Scenario = async (ctx: BenchContext): Promise<ScenarioResult> => {
  const all = engineVariants(
    spliceVariants(
      peers(ctx.dir, ctx.edgeproxy, IPERF_ORIGIN, BUFFER_SIZE).map((p) => (p.name.startsWith("edgeproxy") ? withArgs(p, oneWorker(ctx.edgeproxy)) : p)),
      ctx.edgeproxy,
    ),
    ctx.edgeproxy,
  );
  ctx.log(`bulk: ${ctx.runs} run(s) × ${ctx.seconds} s per peer and direction, ${all.length} peers`);
  const serverCmd = ["taskset", "-c", String(ctx.loadCore), "iperf3", "-s", "-B", IPERF_ORIGIN.host, "-p", String(IPERF_ORIGIN.port)];
  let server = new Child("iperf3 server", serverCmd);
  const samples: BulkSample[] = [];
  const anomalies: string[] = [];
  const commands = new Map<string, string>();
  try {
    await listening(IPERF_ORIGIN, 10_000);
    for (let r = 1; r <= ctx.runs; r++) {
      for (const [index, peer] of all.entries()) {
        // iperf3 serves one test at a time and a failed one can end it: start it again if so.
        if (server.exited) {
          anomalies.push(`the iperf3 server had exited before ${peer.name} run ${r}: ${server.text.trim().split("\n").slice(-3).join(" / ")}`);
          server = new Child("iperf3 server", serverCmd);
          await listening(IPERF_ORIGIN, 10_000);
        }
        const at = peer.proxied ? bulkFront(r, index) : IPERF_ORIGIN;
        const proc = startPeer(peer, at, ctx.proxyCore, ctx.dir);
        try {
          if (proc && peer.name.startsWith("edgeproxy")) await proc.waitFor(/ready/, 10_000);
          else if (proc) await listening(at, 10_000);
          const pids = proc ? processTree(proc.pid) : [];
          const clientCore = proc ? ctx.loadCore : ctx.proxyCore;
          // Idle: started, settled, nothing relayed yet (the bound is on what a transfer adds to this).
          await sleep(IDLE_SETTLE_MS);
          const idleAnonKiB = memoryOf(pids).anonKiB;
          // A 1 s stream off the books: connection setup, JIT, buffers.
          await transfer(iperfClient(at, clientCore, 1, "upload"), 1, pids);
          for (const direction of DIRECTIONS) {
            const cmd = iperfClient(at, clientCore, ctx.seconds, direction);
            if (r === 1 && direction === "upload") commands.set(peer.name, `${proc ? `\`${proc.cmd.join(" ")}\`, then ` : ""}\`${cmd.join(" ")}\``);
            const p0 = cpuMicros(pids);
            const c0 = CpuSnapshot.now();
            const t = await transfer(cmd, ctx.seconds, pids);
            const c1 = CpuSnapshot.now();
            const p1 = cpuMicros(pids);
            const s: BulkSample = {
              peer: peer.name,
              direction,
              gbit: t.r.bitsPerSecond / 1e9,
              retransmits: t.r.retransmits,
              corePct: proc ? (c1.busyMicrosSince(c0, ctx.proxyCore) / 1e4 / t.wallS) : NaN,
              processPct: proc ? (p1 - p0) / 1e4 / t.wallS : NaN,
              peakRssKiB: proc ? t.peakRssKiB : NaN,
              peakAnonKiB: proc ? t.peakAnonKiB : NaN,
              idleAnonKiB: proc ? idleAnonKiB : NaN,
              processes: pids.length,
            };
            samples.push(s);
            ctx.log(`  run ${r} ${peer.name.padEnd(24)} ${direction.padEnd(8)} ${s.gbit.toFixed(2).padStart(6)} Gbit/s  core ${f(s.corePct, 0)}%  process ${f(s.processPct, 0)}%  peak RSS ${mib(s.peakRssKiB)}  anon idle ${mib(s.idleAnonKiB)} peak ${mib(s.peakAnonKiB)}`);
          }
        } catch (e) {
          anomalies.push(`${peer.name} run ${r}: ${(e as Error).message}${proc ? `; its output: ${proc.text.trim() || "(none)"}` : ""}`);
        } finally {
          if (proc) await stopPeer(proc, peer.name, r, anomalies);
        }
        await sleep(200);
      }
    }
  } finally {
    await server.stop();
  }
  return render(ctx, all.map((p) => p.name), samples, commands, anomalies, serverCmd);
};

function render(ctx: BenchContext, names: string[], samples: BulkSample[], commands: Map<string, string>, anomalies: string[], serverCmd: string[]): ScenarioResult {
  const med = (peer: string, d: Direction | undefined, k: keyof Omit<BulkSample, "peer" | "direction">) => median(samples.filter((s) => s.peer === peer && (!d || s.direction === d)).map((s) => s[k]));
  const peak = (peer: string) => Math.max(...samples.filter((s) => s.peer === peer).map((s) => s.peakRssKiB));
  /** Peak RssAnon minus the same process's idle RssAnon, per sample. */
  const growth = (s: BulkSample) => s.peakAnonKiB - s.idleAnonKiB;
  const medGrowth = (peer: string, d: Direction) => median(samples.filter((s) => s.peer === peer && s.direction === d).map(growth));
  const maxGrowth = (peer: string) => Math.max(...samples.filter((s) => s.peer === peer).map(growth));
  const rows = names.flatMap((peer) =>
    DIRECTIONS.map((d) => [peer, DIRECTION_LABEL[d], f(med(peer, d, "gbit"), 2), f(med(peer, d, "corePct"), 0), f(med(peer, d, "processPct"), 0), `${mib(med(peer, d, "peakRssKiB"))}${peer === "direct (no proxy)" ? "" : ` (${int(med(peer, d, "processes"))} proc.)`}`, mib(med(peer, d, "peakAnonKiB")), mib(med(peer, d, "idleAnonKiB")), mib(medGrowth(peer, d)), int(med(peer, d, "retransmits"))]),
  );
  const out = [
    `iperf3 server (the origin, \`${serverCmd.join(" ")}\`) and client on core ${ctx.loadCore}; each proxy alone on core ${ctx.proxyCore}; one TCP stream for ${ctx.seconds} s per direction after a 1 s stream off the books; ${ctx.runs} run(s), medians. ` +
      `Direct: the client on core ${ctx.proxyCore} and the server on core ${ctx.loadCore}, no proxy: the physical limit (through a proxy, client and server share one core). ` +
      "Gbit/s is what the receiving side counted (iperf3 `end.sum_received`). Core %: busy share of the proxy core from /proc/stat over the transfer (100% = the whole core). Process %: utime+stime of the proxy's processes. " +
      `Peak RSS: the largest sum of VmRSS over the proxy's processes, sampled every 50 ms during the transfer (pages shared between them, such as the executable, count once per process); the anonymous column is the same for RssAnon (heap and buffers, without file-backed pages such as the executable); idle anonymous: RssAnon ${IDLE_SETTLE_MS} ms after the proxy started, before any transfer; above idle: each sample's peak anonymous minus its own idle one (issue 19's bound: ≤ 16 MiB). Peers tuned for bulk as their documentation's buffer knob allows: HAProxy \`tune.bufsize ${BUFFER_SIZE}\`, nginx stream \`proxy_buffer_size ${BUFFER_SIZE / 1024}k\` (defaults 16 KiB), the size edgeproxy's engine reads at once.`,
    "",
    table(["peer", "direction", "Gbit/s", "core %", "process %", "peak RSS", "of it anonymous", "idle anonymous", "anonymous above idle", "retransmits"], rows),
    "",
    "Commands (run 1, upload; download adds `-R`):",
    "",
    ...names.map((n) => `- **${n}**: ${commands.get(n) ?? "(not run)"}`),
    "",
  ];
  const edges = names.filter((n) => n.startsWith("edgeproxy"));
  const others = names.filter((n) => !n.startsWith("edgeproxy") && n !== "direct (no proxy)");
  const gbit = (n: string) => med(n, undefined, "gbit");
  const bestPeer = others.length ? others.reduce((a, b) => (gbit(b) > gbit(a) ? b : a)) : undefined;
  const ratios = edges.flatMap((e) => {
    const suffix = edges.length > 1 ? ` (${variantName(e)})` : "";
    const vsBest = gbit(e) / (bestPeer ? gbit(bestPeer) : NaN);
    const leanest = others.length ? others.reduce((a, b) => (peak(b) < peak(a) ? b : a)) : undefined;
    return [
      { scenario: `Bulk throughput${suffix}`, metric: "Gbit/s, one stream, both directions", unit: "Gbit/s", better: "higher" as const, edgeproxy: gbit(e), best: { peer: bestPeer ?? "none measured", value: bestPeer ? gbit(bestPeer) : NaN }, target: { text: `≥ ${GBIT_TARGET}× the best tuned peer (${times(vsBest)})`, met: vsBest >= GBIT_TARGET } },
      { scenario: `Bulk peak RSS${suffix}`, metric: "peak RSS during transfer", unit: "MiB", better: "lower" as const, edgeproxy: peak(e) / 1024, best: { peer: leanest ?? "none measured", value: leanest ? peak(leanest) / 1024 : NaN }, target: { text: "≤ 64 MiB", met: peak(e) <= RSS_TARGET_KIB } },
      {
        scenario: `Bulk anonymous memory above idle${suffix}`,
        metric: "largest peak RssAnon minus idle RssAnon",
        unit: "MiB",
        better: "lower" as const,
        edgeproxy: maxGrowth(e) / 1024,
        best: (() => {
          const least = others.length ? others.reduce((a, b) => (maxGrowth(b) < maxGrowth(a) ? b : a)) : undefined;
          return { peer: least ?? "none measured", value: least ? maxGrowth(least) / 1024 : NaN };
        })(),
        target: { text: "≤ 16 MiB", met: maxGrowth(e) <= ANON_GROWTH_TARGET_KIB },
      },
    ];
  });
  return {
    title: "Bulk throughput (iperf3) and peak RSS",
    markdown: out.join("\n"),
    ratios,
    plots: [
      { name: "bulk-gbit", title: `Bulk: one TCP stream, Gbit/s (median of ${ctx.runs}; higher is better)`, ylabel: "Gbit/s", kind: "bars", series: names.map((n) => ({ label: n, points: DIRECTIONS.map((d) => ({ x: DIRECTION_LABEL[d], y: med(n, d, "gbit") })) })) },
      { name: "bulk-rss", title: "Bulk: peak RSS of the proxy during the transfer (lower is better)", ylabel: "MiB", kind: "bars", series: names.filter((n) => n !== "direct (no proxy)").map((n) => ({ label: n, points: DIRECTIONS.map((d) => ({ x: DIRECTION_LABEL[d], y: med(n, d, "peakRssKiB") / 1024 })) })) },
    ],
    anomalies,
  };
}
