// Scenario `tls-handshake` (issue 18): full TLS handshakes per second with an
// ECDSA P-256 certificate, and CPU per handshake on the proxy core, edgeproxy
// against nginx and HAProxy side by side (bench/tls-run.ts). The generator is
// `openssl s_time -new`: every connection a new SSL object with no session to
// offer, so the server cannot resume (s_time marks each connection "*" for
// new, "r" for resumed; any "r" is an anomaly). Without -www it sends no
// request: a handshake, then close, so no origin work is mixed in.
import type { Scenario, ScenarioResult } from "./scenario";
import { f, int } from "./md";
import { parseSTime } from "./tls-parse";
import { makeCert, tlsPeers } from "./tls-peers";
import { bestPeerRow, runBounded, sideBySide, tlsSection, type Load } from "./tls-run";
import type { Endpoint } from "./peers";

/**
 * s_time processes at once: one is sequential (connect, handshake, close),
 * so a single one leaves the proxy idle between handshakes; 8 keep several
 * handshakes in flight on the proxy while all share the load core.
 */
export const CLIENTS = 8;

/**
 * Seconds it takes: per peer and run, start, the s_client check, a 1-2 s warm-up, the run (s_time stops on a
 * whole-second clock: up to 1 s more), stop; the 1-2 s resumption check in run 1 only. Measured: 22 s for 1 × 2 s.
 */
export const tlsHandshakeEstimate = (runs: number, seconds: number): number => 5 + 3 * runs * (6 + seconds);

const sTime = (at: Endpoint, core: number, seconds: number, extra: string[] = ["-new"]) => ["taskset", "-c", String(core), "openssl", "s_time", "-connect", `${at.host}:${at.port}`, ...extra, "-time", String(seconds)];

export const tlsHandshakeScenario: Scenario = async (ctx): Promise<ScenarioResult> => {
  const tls = makeCert(ctx.dir, "hs");
  const peers = tlsPeers(ctx.dir, ctx.edgeproxy, tls, { h2: false, noResumption: true }, "hs");
  ctx.log(`tls-handshake: ${ctx.runs} run(s) × ${ctx.seconds} s per peer, ${CLIENTS} openssl s_time -new at once, ${peers.length} peers`);

  const measure = async (at: Endpoint): Promise<Load> => {
    const t0 = performance.now();
    const runs = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => runBounded(`s_time ${i}`, sTime(at, ctx.loadCore, ctx.seconds), (ctx.seconds + 15) * 1000)));
    const seconds = (performance.now() - t0) / 1000;
    let units = 0;
    let resumed = 0;
    const problems: string[] = [];
    for (const r of runs) {
      try {
        const s = parseSTime(r.out);
        units += s.connections;
        resumed += s.resumed;
        if (r.code !== 0) problems.push(`s_time exit ${r.code}: ${r.out.trim().slice(-300)}`);
      } catch (e) {
        problems.push(`${r.timedOut ? "timed out; " : ""}exit ${r.code}: ${(e as Error).message}`);
      }
    }
    if (resumed) problems.push(`${resumed} of ${units} connections were resumed sessions, not full handshakes`);
    // s_time stops at the first failed connection, so a failed process is one failed handshake.
    return { units, seconds, failed: runs.filter((r) => r.code !== 0).length, ...(problems.length ? { anomaly: problems.join("; ") } : {}) };
  };

  const result = await sideBySide(ctx, peers, {
    alpn: "http/1.1",
    warmup: async (at) => {
      await runBounded("s_time warm-up", sTime(at, ctx.loadCore, 1), 15_000);
    },
    measure,
    // Whether the server would resume if a client offered a session (-reuse; -www so TLS 1.3 tickets are read).
    once: async (at) => {
      const r = await runBounded("s_time -reuse", sTime(at, ctx.loadCore, 1, ["-reuse", "-www", "/"]), 15_000);
      try {
        const s = parseSTime(r.out);
        return `resumes sessions offered to it: ${s.resumed ? "yes" : "no"} (\`s_time -reuse -www /\`: ${int(s.resumed)} of ${int(s.connections)} connections resumed)`;
      } catch (e) {
        return `resumption check failed: ${(e as Error).message}`;
      }
    },
  });

  const section = tlsSection({ unit: "handshake", plot: "tls-handshake", title: "Full TLS handshakes (ECDSA P-256)", ctx, peers, result, load: (at) => sTime(at, ctx.loadCore, ctx.seconds) });
  const method = [
    `${CLIENTS} \`openssl s_time -new\` processes at once (core ${ctx.loadCore}) → each peer terminating TLS alone on core ${ctx.proxyCore} (one worker: edgeproxy \`--mode http --workers 1 --tls-cert/--tls-key\`, HAProxy \`nbthread 1\` mode http \`bind … ssl crt\`, nginx \`worker_processes 1\` \`listen … ssl\`), one throwaway self-signed ECDSA P-256 certificate for all. ` +
      `${ctx.runs} run(s) × ${ctx.seconds} s per peer after a 1 s warm-up (one s_time); peers round-robin within each run; medians.`,
    "",
    "- **Full handshakes only**: s_time `-new` gives every connection a fresh SSL object with no session to offer, so no server can resume; s_time prints `*` per new and `r` per resumed connection, and the run checks there is no `r`. " +
      "Each connection is TCP connect, TLS handshake (TLS 1.3 for every peer, X25519 key exchange, ECDSA P-256 signature: see below), close; no request, so the origin is idle and the cost is the handshake and the connection. " +
      "nginx and HAProxy are set as their docs advise for a full-handshake test: nginx `ssl_session_cache off; ssl_session_tickets off;` (and `ssl_protocols TLSv1.2 TLSv1.3`: nginx 1.22 would otherwise stop at TLS 1.2), HAProxy `tune.ssl.cachesize 0` and `no-tls-tickets`. edgeproxy has no such settings (Bun's TLS): the check below says whether it would resume, and a server that issues tickets pays for them here.",
    `- **core µs/handshake** (the primary figure): busy time of core ${ctx.proxyCore} from /proc/stat (user+nice+system+irq+softirq+steal) over the measured run ÷ the handshakes s_time completed; **process µs/handshake**: the proxy's utime+stime; **machine µs/handshake**: every core, clients included.`,
    `- **handshakes/s**: handshakes ÷ wall time from starting the s_time processes to the last one's exit (s_time runs until its whole-second clock passes \`-time\`, so ${ctx.seconds}-${ctx.seconds + 1} s). The clients' own handshake work fills core ${ctx.loadCore}, so the rate is bounded by the load core, alike for every peer: compare CPU per handshake first.`,
    "",
  ];
  const sums = section.sums;
  const ratios = [
    bestPeerRow("TLS full handshake (ECDSA P-256)", "CPU µs/handshake on the proxy core", "µs", "lower", sums, "coreUs"),
    bestPeerRow("TLS full handshake (ECDSA P-256)", "handshakes/s (load core bound)", "/s", "higher", sums, "rate"),
  ].filter((r) => r !== undefined);
  const anomalies = [...result.anomalies];
  const e = sums.find((s) => s.peer.startsWith("edgeproxy"));
  if (e && !Number.isFinite(e.coreUs)) anomalies.push(`edgeproxy completed no handshake (${f(e.units, 0)})`);
  return { title: "TLS: full handshakes per second, ECDSA P-256", markdown: method.join("\n") + section.markdown, ratios, plots: section.plots, anomalies };
};
