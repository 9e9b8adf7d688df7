// Scenario `h2` (issue 18): HTTP/2 over TLS, requests per second and CPU per
// request on the proxy core, edgeproxy against nginx (`listen … ssl http2`)
// and HAProxy (`bind … ssl crt … alpn h2,http/1.1`) side by side
// (bench/tls-run.ts), each multiplexing the streams onto keep-alive HTTP/1.1
// connections to the http scenario's origin. Load: h2load (nghttp2).
// edgeproxy is run as an http service with TLS; a build without ALPN h2 makes
// h2load fall back to HTTP/1.1 and complete nothing, which the report records
// as an anomaly instead of a number.
import type { Endpoint } from "./peers";
import type { Scenario, ScenarioResult } from "./scenario";
import { parseH2load, type H2loadResult } from "./tls-parse";
import { makeCert, tlsPeers } from "./tls-peers";
import { bestPeerRow, runBounded, sideBySide, tlsSection, type Load } from "./tls-run";

/** h2load clients (TLS connections) and concurrent streams per connection. */
export const CONNECTIONS = 16;
export const STREAMS = 10;

/** Seconds it takes: per peer and run, start, one s_client, 1 s warm-up, the run, stop. Measured: 12 s for 1 × 2 s. */
export const h2Estimate = (runs: number, seconds: number): number => 5 + 3 * runs * (3 + seconds);

export const h2loadCommand = (at: Endpoint, core: number, seconds: number) => ["taskset", "-c", String(core), "h2load", "-t1", `-c${CONNECTIONS}`, `-m${STREAMS}`, "-D", String(seconds), `https://${at.host}:${at.port}/`];

/** What a run of h2load did, as a Load; `peer` names the proxy in the anomaly. */
export function h2Load(peer: string, r: H2loadResult, seconds: number): Load {
  const problems: string[] = [];
  if (r.protocol !== "h2") {
    problems.push(
      peer.startsWith("edgeproxy")
        ? `edgeproxy does not negotiate h2 in this checkout (h2load: application protocol ${r.protocol ?? "none"}; ${r.succeeded} requests succeeded)`
        : `${peer} did not negotiate h2 (h2load: application protocol ${r.protocol ?? "none"})`,
    );
  }
  if (r.status2xx !== r.succeeded) problems.push(`${r.succeeded - r.status2xx} of ${r.succeeded} succeeded requests were not 2xx`);
  // Streams still open when -D ends are counted failed; more than that is a real failure.
  if (r.failed > CONNECTIONS * STREAMS) problems.push(`${r.failed} requests failed (${r.errored} errored, ${r.timeout} timed out)`);
  const units = r.protocol === "h2" ? r.succeeded : 0;
  return { units, seconds: r.seconds || seconds, failed: r.failed, ...(problems.length ? { anomaly: problems.join("; ") } : {}) };
}

export const h2Scenario: Scenario = async (ctx): Promise<ScenarioResult> => {
  const tls = makeCert(ctx.dir, "h2");
  const peers = tlsPeers(ctx.dir, ctx.edgeproxy, tls, { h2: true, noResumption: false }, "h2");
  ctx.log(`h2: ${ctx.runs} run(s) × ${ctx.seconds} s per peer, h2load -c${CONNECTIONS} -m${STREAMS}, ${peers.length} peers`);
  const result = await sideBySide(ctx, peers, {
    alpn: "h2,http/1.1",
    warmup: async (at) => {
      await runBounded("h2load warm-up", h2loadCommand(at, ctx.loadCore, 1), 15_000);
    },
    measure: async (at, peer) => {
      const r = await runBounded("h2load", h2loadCommand(at, ctx.loadCore, ctx.seconds), (ctx.seconds + 15) * 1000);
      try {
        return h2Load(peer.name, parseH2load(r.out), ctx.seconds);
      } catch (e) {
        return { units: 0, seconds: ctx.seconds, failed: 0, anomaly: `${r.timedOut ? "timed out; " : ""}exit ${r.code}: ${(e as Error).message}` };
      }
    },
  });
  const section = tlsSection({ unit: "request", plot: "h2", title: "HTTP/2 over TLS", ctx, peers, result, load: (at) => h2loadCommand(at, ctx.loadCore, ctx.seconds) });
  const method = [
    `h2load (\`-t1 -c${CONNECTIONS} -m${STREAMS}\`: ${CONNECTIONS} TLS connections, ${STREAMS} concurrent streams each, GET /, core ${ctx.loadCore}) → each peer alone on core ${ctx.proxyCore} → the http scenario's nginx origin \`return 200 "ok"\` (HTTP/1.1, core ${ctx.loadCore}, shared with h2load). ` +
      `${ctx.runs} run(s) × ${ctx.seconds} s (\`-D\`) per peer after a 1 s warm-up; peers round-robin within each run; medians.`,
    "",
    "- **Peers**, one worker each, TLS 1.3 with one throwaway ECDSA P-256 certificate: " +
      "edgeproxy `--mode http --workers 1 --tls-cert/--tls-key` (the http TLS service: whatever ALPN this build offers; before HTTP/2 support it offers none, h2load falls back to HTTP/1.1 and completes nothing, recorded under Anomalies as \"edgeproxy does not negotiate h2 in this checkout\"); " +
      "nginx 1.22 `listen … ssl http2` (its form before 1.25.1's `http2 on`), `ssl_protocols TLSv1.2 TLSv1.3`, proxy_pass to an upstream with `keepalive 64`, `proxy_http_version 1.1` and an empty Connection header as its docs advise for upstream keep-alive; " +
      "HAProxy 2.6 mode http, `bind … ssl crt … alpn h2,http/1.1` (its manual's example), `http-reuse always` (idle origin connections shared, like edgeproxy's pool). All three add X-Forwarded-For/-Proto/-Host and Forwarded, as in the http scenario.",
    `- **core µs/request** (the primary figure): busy time of core ${ctx.proxyCore} from /proc/stat over the h2load run ÷ requests that succeeded (the ${CONNECTIONS} TLS handshakes are inside, a few ms); **process µs/request**: the proxy's utime+stime; **machine µs/request**: every core.`,
    `- **requests/s**: h2load's succeeded requests ÷ its measured duration. Core ${ctx.loadCore} runs both h2load and the origin, so compare CPU per request first. Failed: h2load's failed requests; up to ${CONNECTIONS * STREAMS} can be streams still open when \`-D\` ends.`,
    "",
  ];
  const ratios = [
    bestPeerRow("HTTP/2 over TLS", "CPU µs/request on the proxy core", "µs", "lower", section.sums, "coreUs"),
    bestPeerRow("HTTP/2 over TLS", "requests/s (load core bound)", "/s", "higher", section.sums, "rate"),
  ].filter((r) => r !== undefined);
  return { title: "HTTP/2 over TLS: requests per second and CPU per request", markdown: method.join("\n") + section.markdown, ratios, plots: section.plots, anomalies: result.anomalies };
};
