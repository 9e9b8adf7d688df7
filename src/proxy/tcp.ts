import type { Socket, TCPSocketListener } from "bun";
import { formatAddress, type Family } from "../config/address";
import type { ServiceConfig } from "../config/service";
import type { OriginPool } from "../origin/pool";
import type { Admission } from "./admission";
import type { CoarseClock } from "./clock";
import { endNames, type EndNames, type Ends } from "./inbound";
import { Pipeline } from "./pipeline";
import type { Protocol, Session } from "./pipelineapi";
import { proxyV1Header, proxyV2Header } from "./proxyheader/encode";
import { Relay } from "./relay";
import { responder } from "./responder";
import { NEW_GROUPS, type GroupPlan } from "./group";
import { openListeners, type DataPlaneService, type ServiceSocket } from "./service";
import { ServiceStats } from "./stats";
import type { SourceLimit } from "./sourcelimit";
import { serviceLog, type ServiceLog } from "../log/access";
import type { ClientTracker } from "./clients";
import type { SniRouteConfig } from "../config/pool";
import { SniRouter } from "./sni/router";
import { SniSession, type RunningSniRoute, type SniRouting } from "./sni/session";
import { SniRouteStats, SniStats } from "./sni/stats";
import { CertStore } from "./tls/certstore";
import type { CertificateConfig } from "../config/tls";

/** A tcp-mode service: one listener per address family, every steered connection relayed to the origin. */
export class TcpService implements DataPlaneService {
  readonly protocol = "tcp";
  readonly stats = new ServiceStats();
  private readonly pipeline: Pipeline;
  /** TLS-terminating: the certificates (owned: its file poll stops with the service). */
  private readonly certs: CertStore | undefined;
  /** Absent: the access log is off. The built-in responder's connections are not logged. */
  private readonly log: ServiceLog | undefined;
  private readonly listeners: { family: Family; listener: TCPSocketListener<any> }[] = [];
  private readonly stopSweep: () => void;
  private closing = false;
  /** Present when the service has sni routes. */
  private readonly sni: SniRouting | undefined;

  constructor(
    readonly config: ServiceConfig,
    private readonly clock: CoarseClock,
    admission: Admission,
    /** Absent for the built-in responder. Owned: started on listen, closed with the service. */
    readonly pool?: OriginPool,
    /** Per-client limits (source_connections, source_rate), checked by the pipeline's admission; absent: none. */
    readonly sourceLimit?: SourceLimit,
    /** One pool per config.sniRoutes entry, in order. Owned, as `pool` is. */
    private readonly routePools: readonly OriginPool[] = [],
    /** The process's busiest-clients tracker; absent: not counted. */
    clients?: ClientTracker,
  ) {
    // With sni routes the relay runs even without a pool of the service's own (unmatched connections are reset).
    const relays = pool !== undefined || config.sniRoutes !== undefined;
    this.log = relays ? serviceLog(config.name, config.accessLog) : undefined;
    this.sni = config.sniRoutes && this.sniRouting(config.sniRoutes, pool);
    const protocol = relays ? this.relayProtocol(pool, this.sni) : responder();
    // tcp offers no ALPN protocol: what runs inside is the origin's business.
    this.certs = config.tls ? new CertStore(config.tls, `service ${config.name}`, this.stats, []) : undefined;
    this.pipeline = new Pipeline(
      { admission, stats: this.stats, clock, acceptProxy: config.acceptProxy, ...(this.certs ? { tls: this.certs } : {}), deadlines: config.deadlines, ...sourceLimit?.pipelineHooks(), ...(this.log ? { log: this.log } : {}), ...(clients ? { clients } : {}) },
      protocol,
    );
    this.stopSweep = clock.onTick((now) => {
      this.pipeline.sweep(now);
      if (this.closing && this.pipeline.size === 0) this.stopSweep();
      // No connection, no deadline: the clock may stop until the next one (Pipeline's open wakes it).
      return this.pipeline.size > 0;
    });
  }

  /** Open the listeners (one per family the service's prefixes use). Undo on failure. */
  listen(plan: GroupPlan = NEW_GROUPS): ServiceSocket[] {
    try {
      const sockets = openListeners(this.config, plan, this.pipeline.handlers(), this.listeners);
      void this.pool?.start();
      for (const p of this.routePools) void p.start();
      return sockets;
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** The routes' pools and counters, shared by every connection's SniSession. */
  private sniRouting(routes: readonly SniRouteConfig[], pool: OriginPool | undefined): SniRouting {
    const running: RunningSniRoute[] = routes.map((r, i) => ({ pool: this.routePools[i]!, stats: new SniRouteStats(String(i + 1), r.names.join(",")) }));
    const fallback = pool && { pool, stats: new SniRouteStats("default", "") };
    const stats = new SniStats([...running, ...(fallback ? [fallback] : [])].map((r) => r.stats));
    return { router: new SniRouter(routes, (_, i) => running[i]!), fallback, stats, serviceStats: this.stats, clock: this.clock, handshakeMs: this.config.deadlines.handshakeMs };
  }

  /** The relay to an origin of the pool, as the pipeline's last stage. */
  private relayProtocol(pool: OriginPool | undefined, sni: SniRouting | undefined): Protocol {
    const log = this.log;
    const options = { connectTimeoutMs: this.config.connectTimeoutMs, idleTimeoutMs: this.config.idleTimeoutMs, clock: this.clock, stats: this.stats, log, ...(pool?.tls ? { originTls: pool.tls } : {}) };
    const tls = this.config.tls !== undefined;
    const { proxyProtocol } = this.config;
    const stats = this.stats;
    // Balancing sees the client, and port-preserving and port-range origins the edge port, as a
    // trusted PROXY header names them (else the socket's peer and local port). Each of Bun's
    // address getters is a syscall or a string: ask only for what the pool uses.
    const dial = (relay: Relay, p: OriginPool, s: Socket<any>, ends: Ends | undefined): boolean => {
      const pick = ends
        ? p.pick(formatAddress(ends.client.addr), ends.edge.port)
        : p.pick(p.config.balance === "hash" ? s.remoteAddress : "", p.followsEdgePort ? s.localPort : 0);
      if (!pick) {
        stats.originError("no_origin");
        relay.cause("origin_error", "no_origin");
        relay.abort();
        return false;
      }
      relay.connect(pick);
      return true;
    };
    return {
      // `ends` is parsed only when a PROXY header is sent (or accepted); plain connections skip the address parsing.
      needEnds: proxyProtocol !== "off",
      start(s: Socket<any>, ends: Ends | undefined, rest: Uint8Array, names?: EndNames): Session {
        const relay = new Relay(s, options);
        if (log) {
          // As text once: the line is written after the close, when Bun no longer knows the socket's ends.
          relay.names = ends ? endNames(ends) : names;
          if (tls) relay.tls = { version: s.getTLSVersion() || null, sni: s.getServername() || undefined };
        }
        if (ends && proxyProtocol === "v1") relay.preamble(proxyV1Header(ends.client, ends.edge));
        if (ends && proxyProtocol === "v2") relay.preamble(proxyV2Header(ends.client, ends.edge, "stream"));
        // The ClientHello first, then the pool its name routes to.
        if (sni) return new SniSession(relay, sni, (p) => dial(relay, p, s, ends), rest);
        if (dial(relay, pool!, s, ends) && rest.length) relay.clientData(rest);
        return relay;
      },
    };
  }

  /** New certificates from a reloaded config, for new handshakes. */
  reloadCertificates(certs: readonly CertificateConfig[]): void {
    this.certs?.replace(certs);
  }

  report() {
    const origins = [this.pool, ...this.routePools].flatMap((p) => p?.snapshot() ?? []);
    return { connections: this.stats.snapshot(), ...(origins.length ? { origins } : {}), ...(this.sni ? { sni: this.sni.stats.snapshot() } : {}) };
  }

  summary(): string {
    const s = this.stats;
    const errors = [...s.originErrors].map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
    const list = (m: Map<string, number>, what: string) => (m.size ? `, ${what}: ${[...m].map(([reason, n]) => `${reason} ${n}`).join(", ")}` : "");
    return `${s.connectionsTotal} connections, ${s.bytesFromClients} bytes in, ${s.bytesFromOrigins} bytes out, origin errors: ${errors}${list(s.proxyHeaderErrors, "PROXY header errors")}${list(s.tlsHandshakeErrors, "TLS handshake errors")}${list(s.deadlinesExpired, "deadlines expired")}${this.sniSummary()}`;
  }

  /** ", sni routes: 1 2, default 4, ClientHellos refused: timeout 1" (refusals only when there were some). */
  private sniSummary(): string {
    if (!this.sni) return "";
    const { routes, parseErrors, noRoute } = this.sni.stats;
    const refused = Object.entries(parseErrors).filter(([, n]) => n > 0);
    return `, sni routes: ${routes.map((r) => `${r.route} ${r.connections}`).join(", ")}${noRoute ? `, no route ${noRoute}` : ""}${refused.length ? `, ClientHellos refused: ${refused.map(([r, n]) => `${r} ${n}`).join(", ")}` : ""}`;
  }

  /** Connections in any stage (each holds a cap slot): what a drain waits for. */
  openCount(): number {
    return this.pipeline.size;
  }

  /**
   * Stop accepting. With `abort`, reset every connection too; without, they
   * run on, still under their deadlines, and the sweep stops with the last of
   * them. Idempotent.
   */
  close(abort = false): void {
    this.closing = true;
    this.certs?.close();
    this.pool?.close();
    for (const p of this.routePools) p.close();
    for (const { listener } of this.listeners.splice(0)) listener.stop(false);
    if (abort) this.pipeline.abort();
    if (this.pipeline.size === 0) this.stopSweep();
  }
}
