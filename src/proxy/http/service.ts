import type { Socket, TCPSocketListener } from "bun";
import type { Family } from "../../config/address";
import { POOL_DEFAULTS, type PoolConfig } from "../../config/pool";
import { serviceFamilies, type ServiceConfig } from "../../config/service";
import { EdgeError } from "../../errors";
import { OriginPool, type PoolOptions } from "../../origin/pool";
import type { Admission } from "../admission";
import type { CoarseClock } from "../clock";
import { InboundHeader, mustSendHeader, socketEnds, type Pending } from "../inbound";
import { joinGroup, NEW_GROUPS, REUSE_PORT, type GroupPlan } from "../group";
import { LISTEN_ADDRESS, listenerSocket, type DataPlaneService, type ServiceSocket } from "../service";
import { ServiceStats } from "../stats";
import { HttpConnection } from "./conn";
import type { HttpContext } from "./context";
import { OriginConnections } from "./origins";
import { HttpRouter } from "./router";
import { HttpStats } from "./stats";
import type { SourceLimit } from "../sourcelimit";

// A client socket's `data`: the PROXY header reader first (accept_proxy sources only), then the connection.
type Stage = HttpConnection | InboundHeader;

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
  /** Connections whose PROXY header (accept_proxy) is not complete yet. */
  private readonly pending = new Set<Pending>();

  constructor(
    readonly config: ServiceConfig,
    clock: CoarseClock,
    admission: Admission,
    /** Edge range and start-time addresses for the pools (kind and owner are set here). */
    poolOptions: Pick<PoolOptions, "edgeRange" | "resolved"> = {},
    /** Per-client limits at accept (source_connections, source_rate); absent: none. */
    readonly sourceLimit?: SourceLimit,
  ) {
    // A service made from the command line has no http section: the defaults, no routes.
    const http = config.http ?? { ...POOL_DEFAULTS.http, routes: [] };
    http.routes.forEach((r, i) => {
      if (r.pool && !this.pools.has(r.pool)) this.pools.set(r.pool, new OriginPool(r.pool, { ...poolOptions, kind: "http", owner: `service ${config.name} route ${i + 1} (${r.host ?? ""}${r.path})` }));
    });
    if (config.pool && !this.pools.has(config.pool)) this.pools.set(config.pool, new OriginPool(config.pool, { ...poolOptions, kind: "http", owner: `service ${config.name}` }));
    let router: HttpRouter<OriginPool>;
    try {
      router = new HttpRouter(http.routes, config.pool, (p) => this.pools.get(p)!);
    } catch (cause) {
      throw new EdgeError(`service ${config.name}`, `bad route: ${(cause as Error).message}`, "config", { cause });
    }
    const origins = new OriginConnections();
    const active = new Set<{ sweep(now: number): void; abort(): void; drain(): void }>();
    this.ctx = { config, http, router, origins, clock, stats: this.stats, httpStats: this.httpStats, admission, proto: config.tls ? "https" : "http", active, draining: false };
    this.stopSweep = clock.onTick((now) => {
      for (const c of active) c.sweep(now);
      for (const p of this.pending) p.sweep(now);
      origins.sweep(now);
      if (this.closing && active.size === 0 && this.pending.size === 0) {
        origins.close();
        this.stopSweep();
      }
    });
  }

  /** Open the listeners (one per family the service's prefixes use). Undo on failure. */
  listen(plan: GroupPlan = NEW_GROUPS): ServiceSocket[] {
    for (const p of this.pools.values()) void p.start();
    const families = serviceFamilies(this.config);
    const tls = this.config.tls ? { tls: { cert: this.config.tls.cert, key: this.config.tls.key } } : {};
    try {
      return families.map((family) => {
        const listener = joinGroup(family, plan, (port) =>
          Bun.listen<Stage>({ hostname: LISTEN_ADDRESS[family], port, ...REUSE_PORT, allowHalfOpen: true, socket: { ...this.handlers(), binaryType: "uint8array" }, ...tls }),
        );
        this.listeners.push({ family, listener });
        return listenerSocket(family, listener, plan);
      });
    } catch (cause) {
      this.close();
      throw new EdgeError(`service ${this.config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
    }
  }

  private handlers() {
    const ctx = this.ctx;
    const acceptProxy = this.config.acceptProxy;
    // §2 of proxy-protocol.txt: at least 3 s for the header, to cover a TCP retransmit.
    const inbound = { timeoutMs: Math.max(3_000, this.config.connectTimeoutMs), stats: this.stats, admission: ctx.admission, pending: this.pending };
    const limit = this.sourceLimit;
    return {
      open(s: Socket<Stage>) {
        // Over the cap: this one was already queued in the kernel when steering stopped.
        if (!ctx.admission.admit()) return void s.terminate();
        const ends = acceptProxy.length || limit ? socketEnds(s) : undefined;
        if ((acceptProxy.length || limit) && !ends) {
          // The peer is already gone (Bun no longer knows its address).
          ctx.admission.leave();
          return void s.terminate();
        }
        const balancer = ends !== undefined && acceptProxy.length > 0 && mustSendHeader(acceptProxy, ends.client);
        // --- per-client limits (issue 15), admission stage: the peer is the client unless it is a trusted load balancer.
        if (limit && !balancer && !limit.admit(s, ends!.client)) {
          ctx.admission.leave();
          return void s.terminate();
        }
        if (acceptProxy.length) {
          if (balancer) {
            // A trusted load balancer: its PROXY header names the client (and the edge) first.
            s.data = new InboundHeader(s, ends!, inbound, ctx.clock.now, (e, rest) => {
              // --- per-client limits (issue 15): the client the header names (LOCAL, UNKNOWN: the balancer itself, not limited).
              if (limit && e !== ends && !limit.admit(s, e.client, true)) {
                ctx.admission.leave();
                return void s.terminate();
              }
              const c = new HttpConnection(s, ctx, e);
              s.data = c;
              if (rest.length) c.clientData(rest);
            });
            return;
          }
        }
        s.data = new HttpConnection(s, ctx);
      },
      data(s: Socket<Stage>, chunk: Uint8Array) {
        const d = s.data;
        if (d instanceof HttpConnection) d.clientData(chunk);
        else d?.fromClient(chunk);
      },
      drain(s: Socket<Stage>) {
        if (s.data instanceof HttpConnection) s.data.clientDrain();
      },
      end(s: Socket<Stage>) {
        const d = s.data;
        if (d instanceof HttpConnection) d.clientEnd();
        else d?.ended();
      },
      close(s: Socket<Stage>, error?: Error) {
        limit?.released(s);
        const d = s.data;
        if (d instanceof HttpConnection) d.clientClosed(error);
        else d?.closed("client", error);
      },
      error(s: Socket<Stage>, error: Error) {
        limit?.released(s);
        const d = s.data;
        if (d instanceof HttpConnection) d.clientClosed(error);
        else d?.closed("client", error);
      },
    };
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
    return `${s.connectionsTotal} connections, ${h.requests} requests (${classes}), origin errors: ${errors}`;
  }

  openCount(): number {
    return this.ctx.active.size + this.pending.size;
  }

  /** Stop accepting; with `abort`, reset every open connection too. Idempotent. */
  close(abort = false): void {
    this.closing = true;
    for (const { listener } of this.listeners.splice(0)) listener.stop(false);
    if (abort) for (const c of [...this.ctx.active, ...this.pending]) c.abort();
    else {
      // Draining: connections between requests close now (RFC 9112 §9.6: a client retries a
      // request it had not sent yet), the others after their response, which says so.
      this.ctx.draining = true;
      for (const c of [...this.ctx.active]) c.drain();
    }
    for (const p of this.pools.values()) p.close();
    if (this.ctx.active.size === 0 && this.pending.size === 0) {
      this.ctx.origins.close();
      this.stopSweep();
    }
  }
}
