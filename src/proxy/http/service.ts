import type { ClientTracker } from "../clients";
import type { TCPSocketListener } from "bun";
import type { Family } from "../../config/address";
import { POOL_DEFAULTS, type PoolConfig } from "../../config/pool";
import type { ServiceConfig } from "../../config/service";
import { EdgeError } from "../../errors";
import { OriginPool, type PoolOptions } from "../../origin/pool";
import type { Admission } from "../admission";
import type { CoarseClock } from "../clock";
import { NEW_GROUPS, type GroupPlan } from "../group";
import { Pipeline } from "../pipeline";
import { openListeners } from "../service";
import type { DataPlaneService, ServiceSocket } from "../service";
import { ServiceStats } from "../stats";
import { HttpConnection } from "./conn";
import { H2Connection } from "./h2";
import type { HttpContext, RoutePool } from "./context";
import { OriginConnections } from "./origins";
import { HttpRouter } from "./router";
import { HttpStats } from "./stats";
import type { SourceLimit } from "../sourcelimit";
import { serviceLog } from "../../log/access";
import { CertStore } from "../tls/certstore";
import type { CertificateConfig } from "../../config/tls";

/** The ALPN protocols an http service offers (RFC 7301), in the server's order: h2 first unless http2 = false. */
export function httpAlpn(http: { readonly http2: boolean } | undefined): readonly string[] {
  return (http?.http2 ?? true) ? ["h2", "http/1.1"] : ["http/1.1"];
}

/**
 * An http-mode service: one listener per address family (the dispatcher
 * steers every bound port and prefix to it), HTTP/1.1 proxied per request to
 * the pool its route names. Optionally TLS-terminating.
 */
export class HttpService implements DataPlaneService {
  readonly protocol = "tcp";
  readonly stats = new ServiceStats();
  readonly httpStats = new HttpStats();
  private readonly ctx: HttpContext;
  private readonly pools = new Map<PoolConfig, OriginPool>();
  private readonly listeners: { family: Family; listener: TCPSocketListener<any> }[] = [];
  private readonly stopSweep: () => void;
  private closing = false;
  private readonly pipeline: Pipeline;
  /** TLS-terminating: the certificates (owned: its file poll stops with the service). */
  private readonly certs: CertStore | undefined;

  constructor(
    readonly config: ServiceConfig,
    clock: CoarseClock,
    admission: Admission,
    /** Edge range and start-time addresses for the pools (kind and owner are set here). */
    poolOptions: Pick<PoolOptions, "edgeRange" | "resolved"> = {},
    /** Per-client limits (source_connections, source_rate), checked by the pipeline's admission; absent: none. */
    readonly sourceLimit?: SourceLimit,
    /** The process's busiest-clients tracker; absent: not counted. */
    clients?: ClientTracker,
  ) {
    // A service made from the command line has no http section: the defaults, no routes.
    const http = config.http ?? { ...POOL_DEFAULTS.http, routes: [] };
    http.routes.forEach((r, i) => {
      if (r.pool && !this.pools.has(r.pool)) this.pools.set(r.pool, new OriginPool(r.pool, { ...poolOptions, kind: "http", owner: `service ${config.name} route ${i + 1} (${r.host ?? ""}${r.path})` }));
    });
    if (config.pool && !this.pools.has(config.pool)) this.pools.set(config.pool, new OriginPool(config.pool, { ...poolOptions, kind: "http", owner: `service ${config.name}` }));
    let router: HttpRouter<RoutePool>;
    try {
      router = new HttpRouter<RoutePool>(http.routes, config.pool, (p) => this.pools.get(p)!);
    } catch (cause) {
      throw new EdgeError(`service ${config.name}`, `bad route: ${(cause as Error).message}`, "config", { cause });
    }
    const origins = new OriginConnections();
    const active = new Set<{ drainService(): void }>();
    const log = serviceLog(config.name, config.accessLog);
    const ctx: HttpContext = { config, http, router, origins, clock, stats: this.stats, httpStats: this.httpStats, proto: config.tls ? "https" : "http", admission, active, draining: false, ...(log ? { log } : {}) };
    this.ctx = ctx;
    this.certs = config.tls ? new CertStore(config.tls, `service ${config.name}`, this.stats, httpAlpn(config.http)) : undefined;
    this.pipeline = new Pipeline(
      { admission, stats: this.stats, clock, acceptProxy: config.acceptProxy, ...(this.certs ? { tls: this.certs } : {}), deadlines: config.deadlines, ...sourceLimit?.pipelineHooks(), ...(log ? { log } : {}), ...(clients ? { clients } : {}) },
      // The HTTP connection as the pipeline's last stage; bytes after a PROXY header are its first.
      // The one place HTTP/2 branches off: the TLS handshake's ALPN chose h2 (RFC 7301; offered by openListeners).
      { needEnds: false, start: (s, ends, rest, names) => (http.http2 && s.alpnProtocol === "h2" ? new H2Connection(s, ctx, ends, names) : new HttpConnection(s, ctx, ends, names)).started(rest) },
    );
    this.stopSweep = clock.onTick((now) => {
      this.pipeline.sweep(now);
      origins.sweep(now);
      if (this.closing && this.pipeline.size === 0) {
        origins.close();
        this.stopSweep();
      }
      // No connection and no pooled origin connection: no deadline, the clock may stop until the next one (Pipeline's open wakes it).
      return this.pipeline.size > 0 || !origins.empty;
    });
  }

  /** Open the listeners (one per family the service's prefixes use). Undo on failure. */
  listen(plan: GroupPlan = NEW_GROUPS): ServiceSocket[] {
    for (const p of this.pools.values()) void p.start();
    try {
      return openListeners(this.config, plan, this.pipeline.handlers({ binaryType: "uint8array" }), this.listeners);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** New certificates from a reloaded config, for new handshakes. */
  reloadCertificates(certs: readonly CertificateConfig[]): void {
    this.certs?.replace(certs);
  }

  report() {
    const origins = [...this.pools.values()].flatMap((p) => p.snapshot());
    return { connections: this.stats.snapshot(), http: this.httpStats.snapshot(this.ctx.origins.opened, this.ctx.origins.reused), ...(origins.length ? { origins } : {}) };
  }

  summary(): string {
    const s = this.stats;
    const h = this.httpStats;
    const classes = [1, 2, 3, 4, 5].map((c) => `${c}xx ${h.byClass[c]}`).join(", ");
    const errors = [...s.originErrors].map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
    const list = (m: Map<string, number>, what: string) => (m.size ? `, ${what}: ${[...m].map(([reason, n]) => `${reason} ${n}`).join(", ")}` : "");
    const closed = Object.entries(h.h2.closed).filter(([, n]) => n > 0);
    const h2 = h.h2.sessions ? `, HTTP/2: ${h.h2.sessions} sessions, ${h.h2.streams} streams${closed.length ? `, closed: ${closed.map(([r, n]) => `${r} ${n}`).join(", ")}` : ""}` : "";
    return `${s.connectionsTotal} connections, ${h.requests} requests (${classes})${h2}, origin errors: ${errors}${list(s.proxyHeaderErrors, "PROXY header errors")}${list(s.tlsHandshakeErrors, "TLS handshake errors")}${list(s.deadlinesExpired, "deadlines expired")}`;
  }

  /** Connections in any stage (each holds a cap slot): what a drain waits for. */
  openCount(): number {
    return this.pipeline.size;
  }

  /** Stop accepting; with `abort`, reset every open connection too. Idempotent. */
  close(abort = false): void {
    this.closing = true;
    this.certs?.close();
    for (const { listener } of this.listeners.splice(0)) listener.stop(false);
    if (abort) this.pipeline.abort();
    else {
      // Draining: connections between requests close now (RFC 9112 §9.6: a client retries a
      // request it had not sent yet), the others after their response, which says so.
      this.ctx.draining = true;
      for (const c of [...this.ctx.active]) c.drainService();
    }
    for (const p of this.pools.values()) p.close();
    if (this.pipeline.size === 0) {
      this.ctx.origins.close();
      this.stopSweep();
    }
  }
}
