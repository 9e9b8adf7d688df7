// CPU per proxied request, the engine of the TCP and HTTP scenarios. wrk
// (load core) -> proxy (proxy core) -> nginx origin (load core). Three CPU
// figures per wrk run, each divided by completed requests: the proxy core's
// busy time (/proc/stat cpuN, includes softirq and kworker work done for the
// proxy), the whole machine's, and the utime+stime of the proxy's processes.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { front, nginxCommand, ORIGIN, originConfig, peers, startPeer, stopPeer, type Endpoint, type Peer } from "./peers";
import { CpuSnapshot } from "./procstat";
import { Child, cpuMicros, httpStatus, median, processTree, run, sleep, waitConnectable } from "./sys";

export type Mode = "keep-alive" | "close";
export const MODES: readonly Mode[] = ["keep-alive", "close"];

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  socketErrors: number;
  non2xx: number;
  p50Ms: number;
  p99Ms: number;
  raw: string;
}

export interface Sample extends WrkResult {
  peer: string;
  mode: Mode;
  /** Proxy process CPU per request in µs (NaN for the direct path). */
  proxyUs: number;
  /** Busy time of the proxy's core per request, µs (NaN for the direct path: nothing runs there). */
  coreUs: number;
  /** Busy time of every core per request, µs: proxy, wrk, origin and kernel together. */
  machineUs: number;
  /** Proxy CPU use over the run, in % of one core. */
  proxyCpuPct: number;
  /** Origin CPU per request in µs: the same work for every peer, a sanity check. */
  originUs: number;
}

export interface LoadOptions {
  runs: number;
  seconds: number;
  /** Load in the mode about to be measured, before each measured window (not counted). */
  warmupSeconds: number;
  connections: number;
  proxyCore: number;
  loadCore: number;
}

export const wrkCommand = (target: Endpoint, mode: Mode, seconds: number, connections: number, core: number) => [
  "taskset", "-c", String(core),
  "wrk", "-t1", `-c${connections}`, `-d${seconds}s`, "--timeout", "2s", "--latency",
  ...(mode === "close" ? ["-H", "Connection: close"] : []),
  `http://${target.host}:${target.port}/`,
];

const toMs = (v: string, unit: string) => Number(v) * ({ us: 1e-3, ms: 1, s: 1e3, m: 6e4 }[unit] ?? NaN);

export function parseWrk(raw: string): WrkResult {
  const num = (re: RegExp) => Number(raw.match(re)?.[1] ?? 0);
  const done = raw.match(/(\d+) requests in ([\d.]+)(us|ms|s|m)/);
  if (!done) throw new Error(`cannot parse wrk output:\n${raw}`);
  const lat = (pct: string) => {
    const m = raw.match(new RegExp(`^\\s*${pct}%\\s+([\\d.]+)(us|ms|s|m)`, "m"));
    return m ? toMs(m[1]!, m[2]!) : NaN;
  };
  const se = raw.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  return {
    requests: Number(done[1]),
    seconds: toMs(done[2]!, done[3]!) / 1000,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    socketErrors: se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    non2xx: num(/Non-2xx or 3xx responses: (\d+)/),
    p50Ms: lat("50"),
    p99Ms: lat("99"),
    raw,
  };
}

function runWrk(cmd: string[], seconds: number): WrkResult {
  const r = run(cmd, (seconds + 15) * 1000);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${r.code}): ${r.out}`);
  return parseWrk(r.out);
}

export interface LoadReport {
  samples: Sample[];
  anomalies: string[];
  peers: Peer[];
  originConfig: string;
  originCommand: string[];
}

/** Start the origin, then for each run start every peer in turn (round-robin spreads host noise across peers). */
export async function loadScenario(dir: string, edgeproxy: string, o: LoadOptions, log: (s: string) => void, all: Peer[] = peers(dir, edgeproxy)): Promise<LoadReport> {
  writeFileSync(join(dir, "origin.conf"), originConfig(dir));
  const originCommand = ["taskset", "-c", String(o.loadCore), ...nginxCommand(dir, "origin.conf")];
  const origin = new Child("nginx origin", originCommand);
  const samples: Sample[] = [];
  const anomalies: string[] = [];
  try {
    await waitConnectable(ORIGIN.host, ORIGIN.port, 5000, 10);
    // A full response also proves the worker has been forked, so processTree sees it.
    const status = await httpStatus(ORIGIN.host, ORIGIN.port);
    if (status !== 200) throw new Error(`the nginx origin answered ${status || "nothing"}: ${origin.text}`);
    const originPids = processTree(origin.pid);
    for (let r = 1; r <= o.runs; r++) {
      for (const [index, peer] of all.entries()) {
        const target = peer.proxied ? front(r, index) : ORIGIN;
        const proc = startPeer(peer, target, o.proxyCore, dir);
        try {
          try {
            await waitConnectable(target.host, target.port, 10_000, 5);
          } catch (e) {
            throw new Error(`${peer.name} did not come up: ${(e as Error).message}; its output: ${proc?.text.trim() || "(none)"}`);
          }
          if (proc && peer.name.startsWith("edgeproxy")) await proc.waitFor(/ready/, 10_000);
          const status = await httpStatus(target.host, target.port);
          if (status !== 200) anomalies.push(`${peer.name}: a plain GET through it returned status ${status || "none"} before the load`);
          const proxyPids = proc ? processTree(proc.pid) : [];
          for (const mode of MODES) {
            // Warm up off the books, in the mode about to be measured: caches, connection pools and
            // edgeproxy's JIT, which compiles the code a mode runs when it first runs it: JSC's JITWorker
            // thread took 8–12% of the proxy's CPU in a per-connection run after a 1 s keep-alive-only
            // warm-up, 1.5% after 6 s of that mode (bench/profiles/tcp.md, issue 19).
            runWrk(wrkCommand(target, mode, o.warmupSeconds, o.connections, o.loadCore), o.warmupSeconds);
            const cmd = wrkCommand(target, mode, o.seconds, o.connections, o.loadCore);
            const p0 = cpuMicros(proxyPids);
            const o0 = cpuMicros(originPids);
            const c0 = CpuSnapshot.now();
            const w = runWrk(cmd, o.seconds);
            const c1 = CpuSnapshot.now();
            const p1 = cpuMicros(proxyPids);
            const o1 = cpuMicros(originPids);
            const s: Sample = {
              ...w,
              peer: peer.name,
              mode,
              proxyUs: proc ? (p1 - p0) / w.requests : NaN,
              coreUs: proc ? c1.busyMicrosSince(c0, o.proxyCore) / w.requests : NaN,
              machineUs: c1.busyMicrosSince(c0, "all") / w.requests,
              proxyCpuPct: proc ? ((p1 - p0) / 1e6 / w.seconds) * 100 : NaN,
              originUs: (o1 - o0) / w.requests,
            };
            samples.push(s);
            log(`  run ${r} ${peer.name.padEnd(20)} ${mode.padEnd(10)} ${w.rps.toFixed(0).padStart(7)} req/s  core ${Number.isNaN(s.coreUs) ? "   -" : s.coreUs.toFixed(1)} proxy ${Number.isNaN(s.proxyUs) ? "   -" : s.proxyUs.toFixed(1)} machine ${s.machineUs.toFixed(1)} µs/req (${Number.isNaN(s.proxyCpuPct) ? "-" : s.proxyCpuPct.toFixed(0)}% cpu)  origin ${s.originUs.toFixed(1)} µs/req  errors ${w.socketErrors} non-2xx ${w.non2xx}`);
            if (w.socketErrors || w.non2xx) anomalies.push(`${peer.name}, ${mode}, run ${r}: ${w.socketErrors} socket errors, ${w.non2xx} non-2xx responses from \`${cmd.join(" ")}\`:\n${w.raw.trim()}`);
            if (proc?.exited) throw new Error(`${peer.name} exited during the ${mode} run: ${proc.text.trim()}`);
          }
        } finally {
          if (proc) await stopPeer(proc, peer.name, r, anomalies);
        }
        // Let the last connections' FIN/TIME_WAIT traffic settle before the next peer.
        await sleep(300);
      }
    }
  } finally {
    await origin.stop();
  }
  return { samples, anomalies, peers: all, originConfig: originConfig(dir), originCommand };
}

/** Median per (peer, mode) across runs. */
export function summarize(samples: readonly Sample[]) {
  const keys = [...new Set(samples.map((s) => `${s.peer}\t${s.mode}`))];
  return keys.map((k) => {
    const [peer, mode] = k.split("\t") as [string, Mode];
    const ss = samples.filter((s) => s.peer === peer && s.mode === mode);
    return {
      peer,
      mode,
      runs: ss.length,
      proxyUs: median(ss.map((s) => s.proxyUs)),
      proxyUsMin: Math.min(...ss.map((s) => s.proxyUs)),
      proxyUsMax: Math.max(...ss.map((s) => s.proxyUs)),
      proxyCpuPct: median(ss.map((s) => s.proxyCpuPct)),
      coreUs: median(ss.map((s) => s.coreUs)),
      machineUs: median(ss.map((s) => s.machineUs)),
      p50Ms: median(ss.map((s) => s.p50Ms)),
      rps: median(ss.map((s) => s.rps)),
      originUs: median(ss.map((s) => s.originUs)),
      p99Ms: median(ss.map((s) => s.p99Ms)),
      errors: ss.reduce((a, s) => a + s.socketErrors + s.non2xx, 0),
      requests: ss.reduce((a, s) => a + s.requests, 0),
    };
  });
}
export type Summary = ReturnType<typeof summarize>[number];
