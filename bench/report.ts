// Markdown for bench/results/<date>-<host>.md.
import type { CoverageReport } from "./coverage";
import { MODES, summarize, wrkCommand, type LoadOptions, type LoadReport } from "./load";
import { front, ORIGIN } from "./peers";
import { summarizeUdp, type UdpReport } from "./udp";

export interface Machine {
  date: string;
  host: string;
  cpu: string;
  cores: number;
  kernel: string;
  memory: string;
  nofile: string;
  versions: Record<string, string>;
}

const f = (n: number, digits = 1) => (Number.isFinite(n) ? n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "–");
const i = (n: number) => f(n, 0);
const mib = (kib: number) => (Number.isFinite(kib) ? (Math.abs(kib) >= 1024 ? `${f(kib / 1024)} MiB` : `${i(kib)} KiB`) : "–");
// Columns whose cells are all numbers (or "–") are right-aligned.
const numeric = (cell: string) => /^[\d,.–×-]+$/.test(cell);
const table = (head: string[], rows: string[][]) =>
  [
    `| ${head.join(" | ")} |`,
    `|${head.map((_, c) => (rows.every((r) => numeric(r[c] ?? "")) ? " ---: " : " --- ")).join("|")}|`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");
const fence = (text: string, lang = "") => `\`\`\`${lang}\n${text.trimEnd()}\n\`\`\``;

export function renderReport(o: { m: Machine; quick: boolean; argv: string; cov?: CoverageReport; load?: LoadReport; udp?: UdpReport; http?: LoadReport; opts: LoadOptions; netnsSetup: string[] }): string {
  const { m, cov, load, opts } = o;
  const out: string[] = [];
  out.push(`# edgeproxy benchmark: ${m.date}, ${m.host}${o.quick ? " (quick)" : ""}`, "");
  out.push(`${m.versions.edgeproxy ?? "edgeproxy ?"}; ${opts.runs} run(s) × ${opts.seconds} s per peer and mode (after a ${opts.warmupSeconds} s warm-up), median shown. Produced by \`${o.argv}\`.`, "");
  if (o.http) renderTcp(out, o.http, opts, "HTTP proxy (L7)");
  if (load) renderTcp(out, load, opts, "TCP proxy");
  if (o.udp) renderUdp(out, o.udp);
  if (cov) renderCoverage(out, cov);
  renderTail(out, o);
  return out.join("\n");
}

function renderUdp(out: string[], u: UdpReport): void {
  const o = u.opts;
  out.push("## UDP proxy: CPU per request/response", "");
  out.push(
    `bench/udp-load.ts (${o.flows} connected sockets, one ${o.size}-byte request outstanding each, core ${o.loadCore}) → proxy (core ${o.proxyCore}, alone on it) → Bun echo origin (core ${o.loadCore}). ` +
      "One exchange is one datagram each way through the proxy. Proxy CPU = utime+stime delta of the proxy's processes while the load generator counts ÷ exchanges. " +
      "Ratio is to nginx stream udp (lower is better). Lost: requests unanswered for 200 ms (resent).",
    "",
  );
  const rows = summarizeUdp(u.samples);
  const nginx = rows.find((r) => r.peer.startsWith("nginx"))?.proxyUs ?? NaN;
  out.push(
    table(
      ["peer", "proxy µs/exchange", "ratio to nginx", "proxy CPU %", "exchanges/s", "p50 ms", "p99 ms", "lost", "runs"],
      rows.map((r) => [r.peer, f(r.proxyUs), Number.isFinite(r.proxyUs) ? `${f(r.proxyUs / nginx, 2)}×` : "–", f(r.proxyCpuPct, 0), i(r.rps), f(r.p50Ms, 3), f(r.p99Ms, 3), i(r.lost), i(r.runs)]),
    ),
    "",
  );
  out.push("Commands (run 1):", "", ...u.commands.map((c) => `- \`${c}\``), "");
  for (const c of u.configs) out.push(`${c.file} (run 1):`, "", fence(c.text), "");
  if (u.anomalies.length) out.push("UDP anomalies:", "", ...u.anomalies.map((a) => `- ${a}`), "");
}

function renderTcp(out: string[], load: LoadReport, opts: LoadOptions, title: string): void {
  out.push(`## ${title}: CPU per request`, "");
  out.push(
    `wrk (\`-t1 -c${opts.connections}\`, core ${opts.loadCore}) → proxy (core ${opts.proxyCore}, alone on it) → nginx origin \`return 200 "ok"\` (1 worker, core ${opts.loadCore}, shared with wrk). ` +
      `Proxy CPU = utime+stime delta of the proxy's processes (/proc/<pid>/stat, all threads; for nginx master+worker) over the wrk run ÷ requests completed. ` +
      `Ratio is to the lowest-CPU proxy of the same mode (lower is better). One worker each: edgeproxy (one Bun process), HAProxy \`nbthread 1\`, nginx \`worker_processes 1\`. ` +
      `req/s is bounded by core ${opts.loadCore}, which runs both wrk and the origin, so compare CPU/request first.`,
    "",
  );
  const sums = summarize(load.samples);
  for (const mode of MODES) {
    const rows = sums.filter((s) => s.mode === mode);
    const best = Math.min(...rows.filter((s) => Number.isFinite(s.proxyUs)).map((s) => s.proxyUs));
    out.push(`### ${mode === "close" ? "One connection per request (`-H 'Connection: close'`)" : "Keep-alive"}`, "");
    out.push(
      table(
        ["peer", "proxy µs/req", "ratio", "µs/req min–max", "proxy CPU %", "req/s", "p99 ms", "origin µs/req", "errors"],
        rows.map((s) => [
          s.peer,
          f(s.proxyUs),
          Number.isFinite(s.proxyUs) ? `${f(s.proxyUs / best, 2)}×` : "–",
          Number.isFinite(s.proxyUs) && s.runs > 1 ? `${f(s.proxyUsMin)}–${f(s.proxyUsMax)}` : "–",
          f(s.proxyCpuPct, 0),
          i(s.rps),
          f(s.p99Ms, 2),
          f(s.originUs),
          i(s.errors),
        ]),
      ),
      "",
    );
  }

}

function renderCoverage(out: string[], cov: CoverageReport): void {
  out.push("## Coverage: every port of one address, and of a /24", "");
  out.push(
    "Listening sockets: the process's fds that are LISTEN sockets in /proc/net/tcp{,6} of the benchmark netns. " +
      "Kernel Δ: growth of Slab+Percpu in /proc/meminfo from before spawn to 300 ms after setup — machine-wide, so it includes the process itself (a Bun runtime in both approaches) and host noise " +
      `(drift over an idle second before the test: ${i(cov.noiseKiB)} KiB). ` +
      "BPF: memlock of edgeproxy's maps and program from /proc/<pid>/fdinfo (large maps are vmalloc'd, so this is mostly not in the Slab figure). " +
      "Setup: edgeproxy's own `ready (setup X ms)` figure; for socket-per-port the socket()+bind()+listen() loop. " +
      "Wall: spawn → first steered connection accepted (edgeproxy, polling a random address:port every ms) or spawn → all binds done (socket per port).",
    "",
  );
  out.push(
    table(
      ["approach", "scope", "listening sockets", "processes", "setup ms", "wall ms", "kernel Δ (Slab+Percpu)", "BPF memlock", "RSS", "runs", "outcome"],
      cov.rows.map((r) => [r.approach, r.scope, i(r.sockets), i(r.processes), f(r.setupMs), f(r.wallMs), mib(r.kernelKiB), r.bpfKiB ? mib(r.bpfKiB) : "–", mib(r.rssKiB), i(r.reps), r.outcome]),
    ),
    "",
  );
  const full = cov.rows.find((r) => r.approach.startsWith("socket per port") && r.sockets === 65535) ?? cov.rows.find((r) => r.approach.startsWith("socket per port"));
  if (full && full.sockets > 0) {
    const per = full.kernelKiB / full.sockets;
    const n = 256 * 65535;
    out.push(
      `Socket per port on the /24 was not attempted: it needs 256 × 65,535 = ${i(n)} sockets ` +
        `(≈ ${f((per * n) / 1024 / 1024)} GiB of kernel memory at the ${f(per * 1024, 0)} bytes/socket measured above, and ${i(Math.ceil(n / 19_990))} processes at a 20,000-file limit), ` +
        "or 65,535 wildcard sockets that would also capture every other address of the host.",
      "",
    );
  }
  const ready = cov.rows.filter((r) => r.approach === "edgeproxy" && r.scope.startsWith("/24"));
  if (ready.length) {
    const worst = Math.max(...ready.map((r) => r.setupMs));
    const sockets = Math.max(...ready.map((r) => r.sockets));
    out.push(`Issue target for a /24 (≤ 4 listening sockets, setup ≤ 100 ms): ${sockets} socket(s), setup ${f(worst)} ms — ${sockets <= 4 && worst <= 100 ? "met" : Number.isFinite(worst) ? "NOT met" : "setup not reported by this edgeproxy build"}.`, "");
  }

}

function renderTail(out: string[], o: { m: Machine; argv: string; cov?: CoverageReport; load?: LoadReport; http?: LoadReport; opts: LoadOptions; netnsSetup: string[] }): void {
  const { m, cov, opts } = o;
  const load = o.load ?? o.http;
  out.push("## Anomalies", "");
  const anomalies = [...(cov?.anomalies ?? []), ...(o.load?.anomalies ?? []), ...(o.http?.anomalies ?? [])];
  out.push(anomalies.length ? anomalies.map((a) => `- ${a.includes("\n") ? `${a.split("\n")[0]}\n\n${fence(a.split("\n").slice(1).join("\n"))}\n` : a}`).join("\n") : load ? "None: every wrk run completed with 0 socket errors and 0 non-2xx responses; every process stopped on SIGTERM without SIGKILL (edgeproxy and nginx with exit 0; HAProxy dies of the signal)." : "None beyond the UDP section's.", "");

  out.push("## Machine", "");
  out.push(
    `- CPU: ${m.cpu}, ${m.cores} cores; memory ${m.memory}; open-file limit ${m.nofile}`,
    `- kernel ${m.kernel}`,
    ...Object.entries(m.versions).map(([k, v]) => `- ${k}: ${v}`),
    "",
  );

  out.push("## Commands", "");
  out.push(`Everything ran inside a private network and mount namespace (\`unshare --net --mount\`), set up with:`, "", fence(o.netnsSetup.join("\n"), "sh"), "");
  if (!load) return;
  out.push("Origin:", "", fence(load.originCommand.join(" "), "sh"), "", fence(load.originConfig, "nginx"), "");
  out.push(
    `Proxies (each started, warmed up with a ${opts.warmupSeconds} s keep-alive wrk, measured in both modes, stopped with SIGTERM; peers round-robin within each run). ` +
      "Each run and peer answers on its own address 192.0.2.<10·run + peer> (shown for run 1), so TIME_WAIT sockets left by one peer's connections never meet the next one's:",
    "",
  );
  for (const [index, p] of load.peers.entries()) {
    const at = p.proxied ? front(1, index) : ORIGIN;
    const cmd = p.proxied ? `taskset -c ${opts.proxyCore} ${p.command(at).join(" ")}` : "(none: wrk dials the origin)";
    out.push(`- **${p.name}**: \`${cmd}\``);
    out.push(`  - wrk: \`${wrkCommand(at, "keep-alive", opts.seconds, opts.connections, opts.loadCore).join(" ")}\` (and with \`-H 'Connection: close'\`)`);
  }
  out.push("");
  for (const [index, p] of load.peers.entries()) {
    const c = p.config?.(front(1, index));
    if (c) out.push(`${c.file} (run 1):`, "", fence(c.text), "");
  }
  if (cov) out.push("Coverage:", "", fence(cov.rows.map((r) => r.command).join("\n"), "sh"), "");
}
