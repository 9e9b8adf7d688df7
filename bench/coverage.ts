// Scenario 1: answering on every port 1-65535 of one address, and of a /24.
// edgeproxy (one socket per address family, steered by sk_lookup) against one
// listening socket per port (bench/bind-ports.ts).
import { join } from "node:path";
import { bpfMemlock, Child, kernelKiB, listeningSocketsOf, median, rssKiB, sleep, tcpCheck, waitConnectable } from "./sys";

export interface CoverageRow {
  approach: string;
  scope: string;
  /** Listening sockets the process(es) hold, counted in /proc/net/tcp{,6} of the netns. */
  sockets: number;
  processes: number;
  /** The tool's own setup time (edgeproxy's "ready (setup X ms)"; the bind loop for per-port). */
  setupMs: number;
  /** edgeproxy: spawn -> first steered connection accepted; per-port: spawn -> every process done binding. */
  wallMs: number;
  /** edgeproxy: spawn -> "ready" line on stderr. */
  readyMs: number;
  /** Slab+Percpu growth from before spawn to after setup (machine-wide gauge). */
  kernelKiB: number;
  /** memlock of the BPF maps and programs (from fdinfo). */
  bpfKiB: number;
  rssKiB: number;
  reps: number;
  outcome: string;
  command: string;
}

export interface CoverageReport {
  rows: CoverageRow[];
  /** Slab+Percpu drift over an idle second: the noise floor of the kernelKiB column. */
  noiseKiB: number;
  anomalies: string[];
}

const PROBE = "GET / HTTP/1.0\r\nHost: bench\r\n\r\n";
const randomPort = () => 1 + Math.floor(Math.random() * 65535);

interface EdgeCase {
  scope: string;
  prefix: string;
  /** Addresses to dial inside the prefix. */
  addresses: () => string;
  v6?: boolean;
}

const CASES: EdgeCase[] = [
  { scope: "1 address (192.0.2.1), ports 1-65535", prefix: "192.0.2.1/32", addresses: () => "192.0.2.1" },
  { scope: "/24 (192.0.2.0/24), ports 1-65535", prefix: "192.0.2.0/24", addresses: () => `192.0.2.${Math.floor(Math.random() * 256)}` },
  { scope: "/24 + IPv6 /64, ports 1-65535", prefix: "192.0.2.0/24,2001:db8::/64", addresses: () => `192.0.2.${Math.floor(Math.random() * 256)}`, v6: true },
];

type EdgeRun = Omit<CoverageRow, "approach" | "scope" | "reps" | "outcome" | "command"> & { answered: number; probes: number };

async function edgeOnce(edgeproxy: string, c: EdgeCase, core: number, anomalies: string[]): Promise<EdgeRun> {
  const cmd = ["taskset", "-c", String(core), edgeproxy, "--ports", "1-65535", "--prefix", c.prefix];
  const k0 = kernelKiB();
  const t0 = performance.now();
  const proc = new Child("edgeproxy", cmd);
  try {
    // Poll a random steered address:port until a connection is accepted; before
    // the program is attached the kernel answers RST, so polling is cheap.
    const [first, ready] = await Promise.all([
      waitConnectable(c.addresses(), randomPort(), 15_000, 1),
      proc.waitFor(/ready(?: \(setup ([\d.]+) ms\))?/, 15_000).then((m) => ({ at: performance.now(), setup: m[1] ? Number(m[1]) : NaN })),
    ]);
    await sleep(300); // let deferred frees/allocations settle before reading meminfo
    const kernel = kernelKiB() - k0;
    // Spot-check the data path on random pairs plus the range edges.
    const targets: [string, number][] = [[c.addresses(), 1], [c.addresses(), 65535]];
    for (let i = 0; i < 14; i++) targets.push([c.addresses(), randomPort()]);
    if (c.v6) for (let i = 0; i < 4; i++) targets.push([`2001:db8::${Math.floor(Math.random() * 0xffff).toString(16)}`, randomPort()]);
    const ok = await Promise.all(targets.map(([h, p]) => tcpCheck(h, p, 3000, PROBE)));
    ok.forEach((v, i) => v || anomalies.push(`edgeproxy ${c.prefix}: no answer on ${targets[i]![0]} port ${targets[i]![1]}`));
    if (c.prefix.endsWith("/32") && (await tcpCheck("192.0.2.200", 8080, 1000))) anomalies.push("edgeproxy 192.0.2.1/32: 192.0.2.200:8080 (outside the prefix) was answered too");
    const bpf = bpfMemlock(proc.pid);
    return {
      sockets: listeningSocketsOf([proc.pid]),
      processes: 1,
      setupMs: ready.setup,
      wallMs: first - t0,
      readyMs: ready.at - t0,
      kernelKiB: kernel,
      bpfKiB: bpf.bytes / 1024,
      rssKiB: rssKiB(proc.pid),
      answered: ok.filter(Boolean).length,
      probes: ok.length,
    };
  } finally {
    const end = await proc.stop();
    if (end.code !== 0) anomalies.push(`edgeproxy ${c.prefix}: after SIGTERM: exit ${end.code}, signal ${end.signal}: ${proc.text.trim()}`);
    await sleep(500); // sockets and maps are freed via RCU after exit
  }
}

async function perPort(ranges: [number, number][], anomalies: string[]): Promise<Omit<CoverageRow, "approach" | "scope" | "reps" | "command"> & { bound: number }> {
  const script = join(import.meta.dir, "bind-ports.ts");
  const k0 = kernelKiB();
  const t0 = performance.now();
  const procs = ranges.map(([a, b]) => new Child(`bind-ports ${a}-${b}`, [process.execPath, script, "192.0.2.1", String(a), String(b)]));
  try {
    const results = await Promise.all(
      procs.map(async (p) => JSON.parse((await p.waitFor(/^\{.*\}$/m, 120_000))[0]) as { bound: number; ms: number; error: string | null }),
    );
    const wall = performance.now() - t0;
    await sleep(300);
    const kernel = kernelKiB() - k0;
    const bound = results.reduce((a, r) => a + r.bound, 0);
    const errors = results.flatMap((r) => (r.error ? [r.error] : []));
    return {
      bound,
      sockets: listeningSocketsOf(procs.map((p) => p.pid)),
      processes: procs.length,
      setupMs: Math.max(...results.map((r) => r.ms)),
      wallMs: wall,
      readyMs: NaN,
      kernelKiB: kernel,
      bpfKiB: 0,
      rssKiB: procs.reduce((a, p) => a + rssKiB(p.pid), 0),
      outcome: errors.length ? `stopped early: ${errors.join("; ")}` : "all ports bound",
    };
  } finally {
    for (const p of procs) if ((await p.stop()).code !== 0) anomalies.push(`${p.name}: did not exit cleanly: ${p.text.trim()}`);
    await sleep(1000);
  }
}

export async function coverageScenario(edgeproxy: string, reps: number, core: number, log: (s: string) => void): Promise<CoverageReport> {
  const anomalies: string[] = [];
  const n0 = kernelKiB();
  await sleep(1000);
  const noiseKiB = Math.abs(kernelKiB() - n0);
  const rows: CoverageRow[] = [];
  const edgeRows: CoverageRow[] = [];

  // Socket per port first: edgeproxy's spot-check connections leave TIME_WAIT
  // sockets on 192.0.2.1 ports, which a plain bind() (no SO_REUSEADDR) would hit.
  const one = await perPort([[1, 65535]], anomalies);
  rows.push({ ...one, approach: "socket per port, 1 process", scope: "1 address (192.0.2.1), ports 1-65535", reps: 1, command: "bun bench/bind-ports.ts 192.0.2.1 1 65535" });
  log(`  socket per port, 1 process: ${one.bound} bound; ${one.outcome}`);
  const split: [number, number][] = [[1, 16384], [16385, 32768], [32769, 49152], [49153, 65535]];
  const four = await perPort(split, anomalies);
  rows.push({ ...four, approach: "socket per port, 4 processes", scope: "1 address (192.0.2.1), ports 1-65535", reps: 1, command: split.map(([a, b]) => `bun bench/bind-ports.ts 192.0.2.1 ${a} ${b}`).join(" & ") });
  log(`  socket per port, 4 processes: ${four.bound} bound; ${four.outcome}`);
  for (const c of CASES) {
    const runs: EdgeRun[] = [];
    for (let i = 0; i < reps; i++) runs.push(await edgeOnce(edgeproxy, c, core, anomalies));
    const med = (f: (r: EdgeRun) => number) => median(runs.map(f));
    const answered = runs.reduce((a, r) => a + r.answered, 0);
    const probes = runs.reduce((a, r) => a + r.probes, 0);
    edgeRows.push({
      approach: "edgeproxy",
      scope: c.scope,
      sockets: Math.max(...runs.map((r) => r.sockets)),
      processes: 1,
      setupMs: med((r) => r.setupMs),
      wallMs: med((r) => r.wallMs),
      readyMs: med((r) => r.readyMs),
      kernelKiB: med((r) => r.kernelKiB),
      bpfKiB: med((r) => r.bpfKiB),
      rssKiB: med((r) => r.rssKiB),
      reps,
      outcome: `${answered}/${probes} random address:port probes answered`,
      command: `edgeproxy --ports 1-65535 --prefix ${c.prefix}`,
    });
    log(`  edgeproxy ${c.scope}: ${edgeRows.at(-1)!.sockets} socket(s), first connection after ${edgeRows.at(-1)!.wallMs.toFixed(1)} ms`);
  }
  return { rows: [...edgeRows, ...rows], noiseKiB, anomalies };
}
