// Which module measures each scenario of `bun run bench`, in run order, and
// how long it should take.
import { bulkScenario } from "./bulk";
import { coverageScenario } from "./coverage";
import type { ScenarioName } from "./flags";
import { httpScenario } from "./http";
import { idleScenario } from "./idle";
import { lookupScenario } from "./lookup";
import { slowlorisEstimate, slowlorisScenario } from "./slowloris";
import type { Scenario } from "./scenario";
import { tcpScenario } from "./tcp";
import { udpScenario } from "./udp";
import { workersScenario } from "./workers";
import { accesslogScenario } from "./accesslog";
import { h2Estimate, h2Scenario } from "./h2";
import { tlsHandshakeEstimate, tlsHandshakeScenario } from "./tls-handshake";

export interface Entry {
  name: ScenarioName;
  what: string;
  /** Seconds it should take for `runs` runs of `seconds` each (startup, warm-up and teardown included); `quick` for --quick. */
  estimate: (runs: number, seconds: number, quick: boolean) => number;
  /** The scenario, or why it cannot run in this checkout. */
  load: () => Promise<Scenario | string>;
}

const now = (s: Scenario) => async () => s;

export const REGISTRY: Entry[] = [
  // Per peer and run: start (~1 s), 1 s warm-up, two modes, settle.
  { name: "tcp", what: "TCP keep-alive and per connection: edgeproxy, HAProxy, nginx stream, direct", estimate: (r, s) => 5 * r * (3 + 2 * s), load: now(tcpScenario) },
  { name: "http", what: "HTTP keep-alive and per connection: edgeproxy, HAProxy, nginx", estimate: (r, s) => 4 * r * (3 + 2 * s), load: now(httpScenario) },
  { name: "bulk", what: "iperf3 through each proxy, both directions, peak RSS", estimate: (r, s) => 5 * r * (3 + 2 * s), load: now(bulkScenario) },
  { name: "udp", what: "UDP request/response: edgeproxy, nginx stream udp, direct", estimate: (r, s) => 3 * r * (2 + s), load: now(udpScenario) },
  { name: "coverage", what: "ports 1-65535 on a /24 and a /120: sockets, setup; socket per port, HAProxy and nginx ranges", estimate: (r) => 30 + 12 * r, load: now(coverageScenario) },
  { name: "lookup", what: "sk_lookup cost against the number of bindings, connection rate with and without it", estimate: (r) => 15 + 15 * r, load: now(lookupScenario) },
  { name: "idle", what: "memory per idle connection (5,000), time to first connection", estimate: (r) => 10 + 20 * r, load: now(idleScenario) },
  { name: "workers", what: "edgeproxy --workers 2 against 1, keep-alive", estimate: (r, s) => 2 * r * (4 + s), load: now(workersScenario) },
  // Fixed windows, not --runs × --seconds: each attack lasts long enough to see the peers' deadlines (bench/slowloris.ts).
  { name: "slowloris", what: "slowloris and unfinished-TLS floods against edgeproxy, HAProxy, nginx with default timeouts", estimate: (_r, _s, quick) => slowlorisEstimate(quick), load: now(slowlorisScenario) },
  // Per run: 4 variants (tcp and http, log off and on), each as a tcp/http peer.
  { name: "accesslog", what: "CPU per request with the access log off and on, tcp and http, saturated and at a fixed rate; nginx's own log for reference", estimate: (r, s) => 4 * r * (3 + 2 * s) + 16 * Math.max(3, r) * (3 + 2 * s), load: now(accesslogScenario) },
  // Per run: 3 TLS peers (edgeproxy, HAProxy, nginx), each with checks, a 1 s warm-up and the measured run (bench/tls-run.ts).
  { name: "tls-handshake", what: "full TLS handshakes/s (ECDSA P-256, openssl s_time -new): edgeproxy, HAProxy, nginx", estimate: (r, s) => tlsHandshakeEstimate(r, s), load: now(tlsHandshakeScenario) },
  { name: "h2", what: "HTTP/2 over TLS (h2load -c16 -m10): edgeproxy, HAProxy, nginx", estimate: (r, s) => h2Estimate(r, s), load: now(h2Scenario) },
];
