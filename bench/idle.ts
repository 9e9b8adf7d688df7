// Scenario 7 (issue 7): memory per idle connection with 5,000 client
// connections held open through each proxy, and the time from start to the
// first steered (or accepted) connection.
import { writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { nginxCommand, nginxMain, streamModuleLine } from "./peers";
import type { BenchContext, PlotSpec, RatioRow, ScenarioResult } from "./scenario";
import { Child, kernelKiB, median, processTree, rssKiB, sleep, waitConnectable } from "./sys";

const CONNECTIONS = 5_000;
const ORIGIN = { host: "127.0.0.1", port: 9100 };
const HOLD = join(import.meta.dir, "idle-hold.ts");

interface Peer {
  name: string;
  /** Where clients dial; undefined = the origin itself (no proxy). */
  at?: { host: string; port: number };
  start?: (ctx: BenchContext, at: { host: string; port: number }) => Child;
  /** The command, as the report states it. */
  shown: string;
}

function peers(ctx: BenchContext, workers: number): Peer[] {
  const edge = (w: number): Peer => ({
    name: `edgeproxy --workers ${w}`,
    at: { host: "192.0.2.60", port: 8080 },
    // More than one worker: a core each (every core of the machine), as in production.
    start: (c, at) =>
      new Child("edgeproxy", ["taskset", "-c", w > 1 ? `0-${cpus().length - 1}` : String(c.proxyCore), c.edgeproxy, "--workers", String(w), "--ports", String(at.port), "--prefix", `${at.host}/32`, "--origin", `${ORIGIN.host}:${ORIGIN.port}`]),
    shown: `edgeproxy --workers ${w} --ports 8080 --prefix 192.0.2.60/32 --origin ${ORIGIN.host}:${ORIGIN.port}`,
  });
  const haproxyCfg = (at: { host: string; port: number }) =>
    `global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\nlisten idle\n  bind ${at.host}:${at.port}\n  server origin ${ORIGIN.host}:${ORIGIN.port}\n`;
  const nginxCfg = (at: { host: string; port: number }) => `${streamModuleLine()}${nginxMain(ctx.dir, "idle-stream")}stream {\n  server {\n    listen ${at.host}:${at.port} backlog=4096;\n    proxy_pass ${ORIGIN.host}:${ORIGIN.port};\n  }\n}\n`;
  return [
    edge(workers),
    {
      name: "haproxy (mode tcp)",
      at: { host: "192.0.2.61", port: 8080 },
      start: (c, at) => {
        writeFileSync(join(c.dir, "idle-haproxy.cfg"), haproxyCfg(at));
        return new Child("haproxy", ["taskset", "-c", String(c.proxyCore), "haproxy", "-db", "-f", join(c.dir, "idle-haproxy.cfg")]);
      },
      shown: "haproxy -db -f idle-haproxy.cfg (nbthread 1, maxconn 8000, mode tcp)",
    },
    {
      name: "nginx stream",
      at: { host: "192.0.2.62", port: 8080 },
      start: (c, at) => {
        writeFileSync(join(c.dir, "idle-stream.conf"), nginxCfg(at));
        return new Child("nginx", ["taskset", "-c", String(c.proxyCore), ...nginxCommand(c.dir, "idle-stream.conf")]);
      },
      shown: "nginx -c idle-stream.conf (1 worker, stream proxy_pass)",
    },
  ];
}

const treeRss = (pid: number) => processTree(pid).reduce((a, p) => a + (() => { try { return rssKiB(p); } catch { return 0; } })(), 0);

interface IdleRun {
  rssKiB: number;
  kernelKiB: number;
  connected: number;
  originOpen: number;
}

async function idleOnce(ctx: BenchContext, peer: Peer, anomalies: string[]): Promise<IdleRun | undefined> {
  const origin = new Child("origin", ["taskset", "-c", String(ctx.loadCore), process.execPath, HOLD, "origin", ORIGIN.host, String(ORIGIN.port)]);
  let proxy: Child | undefined;
  let clients: Child | undefined;
  try {
    await origin.waitFor(/^listening$/m, 10_000);
    const at = peer.at ?? ORIGIN;
    if (peer.start) {
      proxy = peer.start(ctx, at);
      await waitConnectable(at.host, at.port, 15_000, 5);
    }
    await sleep(500); // one probe connection went through; let it close and the proxy settle
    const rss0 = proxy ? treeRss(proxy.pid) : 0;
    const k0 = kernelKiB();
    clients = new Child("clients", ["taskset", "-c", String(ctx.loadCore), process.execPath, HOLD, "clients", at.host, String(at.port), String(CONNECTIONS)]);
    const r = JSON.parse((await clients.waitFor(/^\{.*\}$/m, 60_000))[0]) as { connected: number; failed: number };
    // The proxy connects to the origin after accepting: wait until the origin holds them all.
    const m = await origin.waitFor(new RegExp(`^open ${CONNECTIONS}$`, "m"), 30_000).catch(() => undefined);
    await sleep(500);
    const run: IdleRun = { rssKiB: proxy ? treeRss(proxy.pid) - rss0 : 0, kernelKiB: kernelKiB() - k0, connected: r.connected, originOpen: m ? CONNECTIONS : Number([...origin.text.matchAll(/^open (\d+)$/gm)].at(-1)?.[1] ?? 0) };
    if (r.failed || run.originOpen !== CONNECTIONS) anomalies.push(`idle, ${peer.name}: ${r.connected} clients connected, ${r.failed} failed, origin holds ${run.originOpen}`);
    return run;
  } catch (e) {
    anomalies.push(`idle, ${peer.name}: ${(e as Error).message.slice(0, 400)}`);
    return undefined;
  } finally {
    await clients?.stop();
    if (proxy) {
      const end = await proxy.stop();
      if (end.code !== 0 && peer.name.startsWith("edgeproxy")) anomalies.push(`${peer.name}: exit ${end.code} after SIGTERM`);
    }
    await origin.stop();
    await sleep(1000); // sockets are freed after the processes go (and RCU)
  }
}

/** "edgeproxy: start +12.3 ms: modules evaluated" ($EDGEPROXY_START_TRACE, src/system/starttrace.ts): phase -> ms since the runtime started. */
export function startPhases(text: string): Map<string, number> {
  return new Map([...text.matchAll(/^edgeproxy: start \+([\d.]+) ms: (.+)$/gm)].map((m) => [m[2]!, Number(m[1])]));
}

/**
 * spawn -> first connection accepted on the peer's address (for edgeproxy:
 * steered by the program); `phases` gets a single edgeproxy's startup phases
 * ($EDGEPROXY_START_TRACE: one stderr line each, no other effect).
 */
async function firstConnection(ctx: BenchContext, peer: Peer, anomalies: string[], phases?: Map<string, number>[]): Promise<number> {
  const origin = new Child("origin", ["taskset", "-c", String(ctx.loadCore), process.execPath, HOLD, "origin", ORIGIN.host, String(ORIGIN.port)]);
  let proxy: Child | undefined;
  try {
    await origin.waitFor(/^listening$/m, 10_000);
    const traced = phases !== undefined;
    if (traced) process.env.EDGEPROXY_START_TRACE = "1";
    const t0 = performance.now();
    try {
      proxy = peer.start!(ctx, peer.at!);
    } finally {
      if (traced) delete process.env.EDGEPROXY_START_TRACE;
    }
    const ms = (await waitConnectable(peer.at!.host, peer.at!.port, 15_000, 1)) - t0;
    if (traced) {
      await proxy.waitFor(/^edgeproxy: start \+[\d.]+ ms: ready$/m, 10_000).catch(() => undefined);
      phases.push(startPhases(proxy.text));
    }
    return ms;
  } catch (e) {
    anomalies.push(`first connection, ${peer.name}: ${(e as Error).message.slice(0, 400)}`);
    return NaN;
  } finally {
    await proxy?.stop();
    await origin.stop();
    await sleep(300);
  }
}

const fmt = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : "—");

export async function idleScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const anomalies: string[] = [];
  const n0 = kernelKiB();
  await sleep(1000);
  const noise = Math.abs(kernelKiB() - n0);
  const list: Peer[] = [{ name: "direct (clients → origin, no proxy)", shown: "—" }, ...peers(ctx, 1)];
  const runs = new Map<string, IdleRun[]>(list.map((p) => [p.name, []]));
  for (let i = 0; i < ctx.runs; i++) {
    for (const p of list) {
      ctx.log(`idle: ${p.name}, run ${i + 1}/${ctx.runs}`);
      const r = await idleOnce(ctx, p, anomalies);
      if (r) runs.get(p.name)!.push(r);
    }
  }
  const firstPeers = [...peers(ctx, 1), peers(ctx, 2)[0]!];
  const first = new Map<string, number[]>(firstPeers.map((p) => [p.name, []]));
  const phases: Map<string, number>[] = [];
  for (let i = 0; i < Math.max(3, ctx.runs); i++) for (const [k, p] of firstPeers.entries()) first.get(p.name)!.push(await firstConnection(ctx, p, anomalies, k === 0 ? phases : undefined));
  const phaseNames = [...new Set(phases.flatMap((m) => [...m.keys()]))];

  const med = (name: string, f: (r: IdleRun) => number) => median((runs.get(name) ?? []).map(f));
  const direct = med(list[0]!.name, (r) => r.kernelKiB);
  const rows = list.map((p) => {
    const rss = (med(p.name, (r) => r.rssKiB) * 1024) / CONNECTIONS;
    const kernel = (med(p.name, (r) => r.kernelKiB) * 1024) / CONNECTIONS;
    const proxyKernel = p.at ? ((med(p.name, (r) => r.kernelKiB) - direct) * 1024) / CONNECTIONS : NaN;
    return { p, rss, kernel, proxyKernel, n: runs.get(p.name)!.length };
  });
  const proxied = rows.filter((r) => r.p.at);
  const edge = proxied[0]!;
  const bestRss = proxied.slice(1).reduce((a, b) => (b.rss < a.rss ? b : a));
  const bestKernel = proxied.slice(1).reduce((a, b) => (b.proxyKernel < a.proxyKernel ? b : a));
  const firstMed = firstPeers.map((p) => ({ p, ms: median(first.get(p.name)!.filter(Number.isFinite)) }));
  const bestFirst = firstMed.slice(1, 3).reduce((a, b) => (b.ms < a.ms ? b : a));
  const firstEdge = firstMed[0]!;

  const lines = [
    `${CONNECTIONS.toLocaleString("en")} TCP connections are opened through each proxy by one client process (bench/idle-hold.ts clients, 200 connects in flight, core ${ctx.loadCore}) to an origin process that accepts and holds them (bench/idle-hold.ts origin, ${ORIGIN.host}:${ORIGIN.port}); no byte is sent. Each proxy runs one worker on core ${ctx.proxyCore}. A run counts when the origin holds all ${CONNECTIONS.toLocaleString("en")}.`,
    "",
    `RSS per connection: (RSS of the proxy's processes with the connections open − RSS 500 ms after one probe connection) / ${CONNECTIONS.toLocaleString("en")}. Kernel per connection: growth of Slab+Percpu (/proc/meminfo, machine-wide) over the same interval / ${CONNECTIONS.toLocaleString("en")}: it includes the client's and origin's sockets, so "proxy's kernel share" subtracts the direct run (clients → origin, no proxy). Noise: Slab+Percpu moved ${noise} KiB over an idle second before the test (${fmt((noise * 1024) / CONNECTIONS, 0)} B per connection at this scale), and other work on the machine adds to it. Median of ${ctx.runs} run(s), peers interleaved in each run.`,
    "",
    "| proxy | command | RSS B/conn | kernel B/conn (all sockets) | proxy's kernel share B/conn | runs |",
    "| --- | --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.p.name} | \`${r.p.shown}\` | ${r.p.at ? fmt(r.rss, 0) : "—"} | ${fmt(r.kernel, 0)} | ${r.p.at ? fmt(r.proxyKernel, 0) : "—"} | ${r.n} |`),
    "",
    `Time to first connection: from spawning the proxy to the first TCP connection accepted on its address (polled every 1 ms; before edgeproxy's program is attached the kernel answers RST, so for edgeproxy this is the first connection the program steered; for HAProxy and nginx, the first one their own listening socket accepted on 192.0.2.6x:8080). Median of ${Math.max(3, ctx.runs)} runs; edgeproxy --workers 2 runs on every core. This includes each program's own start (Bun runtime, nginx/HAProxy config parsing).`,
    "",
    "| proxy | spawn → first connection, ms |",
    "| --- | --- |",
    ...firstMed.map((f) => `| ${f.p.name} | ${fmt(f.ms)} |`),
    "",
    `Where ${firstPeers[0]!.name}'s start goes ($EDGEPROXY_START_TRACE=1 in the same runs: each phase's end in ms since its runtime started, and the phase's own ms; median of ${phases.length}). The exec and the runtime's own start before its time origin are not in it: the first connection's time above minus "steered from here".`,
    "",
    "| phase | ends at, ms | own, ms |",
    "| --- | --- | --- |",
    ...phaseNames.map((name, i) => {
      const at = median(phases.map((m) => m.get(name) ?? NaN).filter(Number.isFinite));
      const own = median(phases.map((m) => (m.get(name) ?? NaN) - (i ? (m.get(phaseNames[i - 1]!) ?? NaN) : 0)).filter(Number.isFinite));
      return `| ${name} | ${fmt(at)} | ${fmt(own)} |`;
    }),
  ];
  const ratios: RatioRow[] = [
    { scenario: "Idle connections (5,000)", metric: "proxy RSS per idle connection", unit: "B", better: "lower", edgeproxy: edge.rss, best: { peer: bestRss.p.name, value: bestRss.rss } },
    { scenario: "Idle connections (5,000)", metric: "proxy's kernel memory per idle connection (Slab+Percpu, minus direct)", unit: "B", better: "lower", edgeproxy: edge.proxyKernel, best: { peer: bestKernel.p.name, value: bestKernel.proxyKernel } },
    { scenario: "Start", metric: "spawn → first steered / accepted connection", unit: "ms", better: "lower", edgeproxy: firstEdge.ms, best: { peer: bestFirst.p.name, value: bestFirst.ms } },
  ];
  const plots: PlotSpec[] = [
    {
      name: "idle-memory",
      title: `Memory per idle connection (${CONNECTIONS.toLocaleString("en")} open)`,
      ylabel: "bytes per connection",
      kind: "bars",
      series: proxied.map((r) => ({ label: r.p.name, points: [{ x: "proxy RSS", y: r.rss }, { x: "proxy's kernel share", y: r.proxyKernel }] })),
    },
    { name: "first-connection", title: "Spawn to first connection", ylabel: "ms", kind: "bars", series: firstMed.map((f) => ({ label: f.p.name, points: [{ x: "first connection", y: f.ms }] })) },
  ];
  return { title: "Idle connections and start time", markdown: lines.join("\n"), ratios, plots, anomalies };
}
