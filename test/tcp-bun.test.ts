// Bun's sockets (engine = "bun", src/proxy/tcp.ts): what TLS, sni routes and
// origin_tls services run on, and what $EDGEPROXY_ENGINE=bun forces for all.
// The shared tcp relay suite (tcp-relay.case.ts) on it, so the default being
// the engine does not leave this path untested.
import { proxyFixture } from "./helpers/fixture";
import { tcpRelayCases } from "./tcp-relay.case";

tcpRelayCases(proxyFixture(), "bun");
