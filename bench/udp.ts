// Scenario 4: UDP request/response through edgeproxy --mode udp and nginx's
// stream UDP proxy. Closed-loop load (bench/udp-load.ts, load core) → proxy
// (proxy core, alone) → Bun echo origin (load core). CPU while the load
// generator counts: the proxy core's busy time (/proc/stat), the machine's,
// and the utime+stime of the proxy's processes.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { f, fence, int, table, times } from "./md";
import { nginxCommand, nginxMain, stopPeer, streamModuleLine, type Endpoint } from "./peers";
import { CpuSnapshot } from "./procstat";
import type { BenchContext, Scenario, ScenarioResult } from "./scenario";
import { Child, cpuMicros, median, processTree, sleep } from "./sys";
import { oneWorker } from "./tcp";
import { CPU_TARGET } from "./wrk-scenario";

export const UDP_ORIGIN: Endpoint = { host: "127.0.0.1", port: 9053 };
const udpFront = (run: number, peer: number): Endpoint => ({ host: `192.0.2.${100 + 10 * run + peer}`, port: 8053 });

export interface UdpOptions {
  runs: number;
  seconds: number;
  flows: number;
  size: number;
  /** Load before the counted window, off the books: edgeproxy's JIT compiles the datagram path in its first seconds of traffic. */
  warmupMs: number;
  proxyCore: number;
  loadCore: number;
}

export interface UdpSample {
  peer: string;
  /** Request/response exchanges counted (one datagram each way). */
  replies: number;
  rps: number;
  lost: number;
  p50Ms: number;
  p99Ms: number;
  /** Proxy process CPU per exchange, µs (NaN for the direct path). */
  proxyUs: number;
  /** Busy time of the proxy core per exchange, µs (NaN for the direct path). */
  coreUs: number;
  /** Busy time of every core per exchange, µs. */
  machineUs: number;
  proxyCpuPct: number;
}

interface UdpPeer {
  name: string;
  command?: (at: Endpoint) => string[];
  config?: (at: Endpoint) => { file: string; text: string };
}

export interface UdpReport {
  samples: UdpSample[];
  anomalies: string[];
  commands: string[];
  configs: { file: string; text: string }[];
  opts: UdpOptions;
}

/**
 * $EDGEPROXY_BENCH_UDP_AB names a second edgeproxy binary (say, one built
 * from the commit before a change) measured as one more peer in the same
 * runs, interleaved with the others: an A/B side by side on a noisy machine.
 */
const AB_BINARY = process.env.EDGEPROXY_BENCH_UDP_AB;

function udpPeers(dir: string, edgeproxy: string, edgeArgs: string[]): UdpPeer[] {
  const moduleLine = streamModuleLine();
  const edge = (name: string, binary: string): UdpPeer => ({
    name,
    command: () => [binary, "--mode", "udp", "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", `${UDP_ORIGIN.host}:${UDP_ORIGIN.port}`, ...edgeArgs],
  });
  return [
    { name: "direct (no proxy)" },
    edge("edgeproxy udp", edgeproxy),
    ...(AB_BINARY ? [edge("edgeproxy udp (A/B: $EDGEPROXY_BENCH_UDP_AB)", AB_BINARY)] : []),
    {
      name: "nginx stream udp",
      command: () => nginxCommand(dir, "stream-udp.conf"),
      // Sessions last while traffic flows (no proxy_responses limit), like edgeproxy's flows.
      config: (at) => ({
        file: "stream-udp.conf",
        text: `${moduleLine}${nginxMain(dir, "stream-udp")}stream {
  server {
    listen ${at.host}:${at.port} udp;
    proxy_pass ${UDP_ORIGIN.host}:${UDP_ORIGIN.port};
    proxy_timeout 60s;
  }
}
`,
      }),
    },
  ];
}

const loadCommand = (at: Endpoint, o: UdpOptions) => [
  "taskset", "-c", String(o.loadCore), process.execPath, join(import.meta.dir, "udp-load.ts"), at.host, String(at.port), String(o.flows), String(o.seconds), String(o.size), String(o.warmupMs),
];

/** Every peer in turn, `o.runs` times; the samples and what was run. */
export async function measureUdp(dir: string, edgeproxy: string, o: UdpOptions, log: (s: string) => void): Promise<UdpReport> {
  const origin = new Child("udp origin", ["taskset", "-c", String(o.loadCore), process.execPath, join(import.meta.dir, "udp-echo.ts"), UDP_ORIGIN.host, String(UDP_ORIGIN.port)]);
  const all = udpPeers(dir, edgeproxy, oneWorker(edgeproxy));
  const samples: UdpSample[] = [];
  const anomalies: string[] = [];
  const commands: string[] = [];
  const configs: { file: string; text: string }[] = [];
  try {
    await origin.waitFor(/udp echo on/, 10_000);
    for (let r = 1; r <= o.runs; r++) {
      for (const [index, peer] of all.entries()) {
        const at = peer.command ? udpFront(r, index) : UDP_ORIGIN;
        if (peer.config) {
          const c = peer.config(at);
          writeFileSync(join(dir, c.file), c.text);
          if (r === 1) configs.push(c);
        }
        const cmd = peer.command ? ["taskset", "-c", String(o.proxyCore), ...peer.command(at)] : undefined;
        if (r === 1) commands.push(`${peer.name}: ${cmd ? cmd.join(" ") : "(none)"}; load: ${loadCommand(at, o).join(" ")}`);
        const proc = cmd ? new Child(peer.name, cmd) : undefined;
        try {
          if (proc && peer.name.startsWith("edgeproxy")) await proc.waitFor(/ready/, 10_000);
          else if (proc) await sleep(300);
          const pids = proc ? processTree(proc.pid) : [];
          const load = new Child("udp load", loadCommand(at, o));
          await load.waitFor(/counting/, 10_000);
          const p0 = cpuMicros(pids);
          const c0 = CpuSnapshot.now();
          const done = await load.waitFor(/^\{.*\}$/m, (o.seconds + 10) * 1000);
          const c1 = CpuSnapshot.now();
          const p1 = cpuMicros(pids);
          await load.stop();
          const res = JSON.parse(done[0]) as { replies: number; seconds: number; rps: number; lost: number; p50Ms: number; p99Ms: number };
          const s: UdpSample = {
            peer: peer.name,
            replies: res.replies,
            rps: res.rps,
            lost: res.lost,
            p50Ms: res.p50Ms,
            p99Ms: res.p99Ms,
            proxyUs: proc ? (p1 - p0) / res.replies : NaN,
            coreUs: proc ? c1.busyMicrosSince(c0, o.proxyCore) / res.replies : NaN,
            machineUs: c1.busyMicrosSince(c0, "all") / res.replies,
            proxyCpuPct: proc ? ((p1 - p0) / 1e6 / res.seconds) * 100 : NaN,
          };
          samples.push(s);
          log(`  run ${r} ${peer.name.padEnd(20)} ${s.rps.toFixed(0).padStart(7)} exchanges/s  core ${Number.isNaN(s.coreUs) ? "   -" : s.coreUs.toFixed(1)} proxy ${Number.isNaN(s.proxyUs) ? "   -" : s.proxyUs.toFixed(1)} machine ${s.machineUs.toFixed(1)} µs/exchange (${Number.isNaN(s.proxyCpuPct) ? "-" : s.proxyCpuPct.toFixed(0)}% cpu)  lost ${s.lost}`);
          if (s.replies === 0) anomalies.push(`${peer.name} run ${r}: no replies; its output: ${proc?.text.trim() || "(none)"}`);
        } finally {
          if (proc) await stopPeer(proc, peer.name, r, anomalies);
        }
        await sleep(200);
      }
    }
  } finally {
    await origin.stop();
  }
  return { samples, anomalies, commands, configs, opts: o };
}

/** Median per peer across runs. */
export function summarizeUdp(samples: readonly UdpSample[]) {
  return [...new Set(samples.map((s) => s.peer))].map((peer) => {
    const ss = samples.filter((s) => s.peer === peer);
    return {
      peer,
      runs: ss.length,
      proxyUs: median(ss.map((s) => s.proxyUs)),
      proxyCpuPct: median(ss.map((s) => s.proxyCpuPct)),
      coreUs: median(ss.map((s) => s.coreUs)),
      machineUs: median(ss.map((s) => s.machineUs)),
      rps: median(ss.map((s) => s.rps)),
      p50Ms: median(ss.map((s) => s.p50Ms)),
      p99Ms: median(ss.map((s) => s.p99Ms)),
      lost: ss.reduce((a, s) => a + s.lost, 0),
    };
  });
}

/** Scenario 4 for `bun run bench`: UDP exchanges through edgeproxy and nginx stream udp. */
export const udpScenario: Scenario = async (ctx: BenchContext): Promise<ScenarioResult> => {
  const o: UdpOptions = { runs: ctx.runs, seconds: ctx.seconds, flows: 50, size: 64, warmupMs: ctx.quick ? 500 : 5000, proxyCore: ctx.proxyCore, loadCore: ctx.loadCore };
  ctx.log(`UDP: ${o.runs} run(s) × ${o.seconds} s per peer, ${o.flows} flows`);
  const u = await measureUdp(ctx.dir, ctx.edgeproxy, o, ctx.log);
  const rows = summarizeUdp(u.samples);
  const nginx = rows.find((r) => r.peer.startsWith("nginx"));
  const edge = rows.find((r) => r.peer === "edgeproxy udp");
  const out = [
    `bench/udp-load.ts (${o.flows} connected sockets, one ${o.size}-byte request outstanding each, core ${o.loadCore}) → proxy (core ${o.proxyCore}, alone on it) → Bun echo origin (core ${o.loadCore}). ` +
      `${o.runs} run(s) × ${o.seconds} s per peer after ${o.warmupMs / 1000} s of warm-up (the tcp and http scenarios' 5 s: Bun's JIT compiles the datagram path for several seconds of traffic, ≈ 9% of the process's samples between 3 and 6 s, bench/profiles/udp.md); medians. One exchange is one datagram each way through the proxy, so CPU per datagram is half the CPU per exchange. ` +
      "CPU is read from when the load generator starts counting to when it prints its result (a few ms longer than its count window, the same for every peer): " +
      `**core** = busy time of core ${o.proxyCore} from /proc/stat; **process** = utime+stime of the proxy's processes; **machine** = busy time of every core. ` +
      "Ratio: core CPU to nginx stream udp's (lower is better). Lost: requests unanswered for 200 ms (resent).",
    "",
    table(
      ["peer", "core µs/datagram", "ratio to nginx", "core µs/exchange", "process µs/exchange", "machine µs/exchange", "exchanges/s", "p50 ms", "p99 ms", "lost", "runs"],
      rows.map((r) => [r.peer, f(r.coreUs / 2), Number.isFinite(r.coreUs) ? times(r.coreUs / (nginx?.coreUs ?? NaN)) : "–", f(r.coreUs), f(r.proxyUs), f(r.machineUs), int(r.rps), f(r.p50Ms, 3), f(r.p99Ms, 3), int(r.lost), int(r.runs)]),
    ),
    "",
    "Commands (run 1):",
    "",
    ...u.commands.map((c) => `- \`${c}\``),
    "",
    ...u.configs.flatMap((c) => [`${c.file} (run 1):`, "", fence(c.text), ""]),
  ];
  const ratio = (edge?.coreUs ?? NaN) / (nginx?.coreUs ?? NaN);
  return {
    title: "UDP proxy: CPU per datagram",
    markdown: out.join("\n"),
    ratios: edge
      ? [{ scenario: "UDP request/response", metric: "CPU µs/datagram on the proxy core", unit: "µs", better: "lower", edgeproxy: edge.coreUs / 2, best: { peer: nginx?.peer ?? "nginx stream udp (not measured)", value: (nginx?.coreUs ?? NaN) / 2 }, target: { text: `≤ ${CPU_TARGET}× nginx`, met: ratio <= CPU_TARGET } }]
      : [],
    plots: [
      {
        name: "udp-cpu",
        title: `UDP: CPU µs per datagram (median of ${o.runs}; lower is better)`,
        ylabel: "µs per datagram",
        kind: "bars",
        series: rows.filter((r) => Number.isFinite(r.coreUs)).map((r) => ({ label: r.peer, points: [{ x: "proxy core", y: r.coreUs / 2 }, { x: "proxy process", y: r.proxyUs / 2 }] })),
      },
    ],
    anomalies: u.anomalies,
  };
};
