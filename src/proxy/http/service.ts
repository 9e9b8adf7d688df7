import type { Socket, TCPSocketListener } from "bun";
import { fstatSync } from "node:fs";
import type { Family } from "../../config/address";
import { POOL_DEFAULTS, poolsOf, type PoolConfig } from "../../config/pool";
import { serviceFamilies, type ServiceConfig } from "../../config/service";
import { EdgeError } from "../../errors";
import { OriginPool } from "../../origin/pool";
import type { Admission } from "../admission";
import type { CoarseClock } from "../clock";
import { LISTEN_ADDRESS, type DataPlaneService, type ServiceSocket } from "../service";
import { ServiceStats } from "../stats";
import { HttpConnection } from "./conn";
import type { HttpContext } from "./context";
import { OriginConnections } from "./origins";
import { HttpRouter } from "./router";
import { HttpStats } from "./stats";

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

  constructor(
    readonly config: ServiceConfig,
    clock: CoarseClock,
    admission: Admission,
    resolved?: ReadonlyMap<string, readonly Uint8Array[]>,
  ) {
    // A service made from the command line has no http section: the defaults, no routes.
    const http = config.http ?? { ...POOL_DEFAULTS.http, routes: [] };
    const ranges = config.bindings.flatMap((b) => b.ports);
    for (const p of poolsOf({ pool: config.pool, http })) {
      if (!this.pools.has(p)) this.pools.set(p, new OriginPool(p, { resolved, ...(ranges.length === 1 ? { edgeRange: ranges[0] } : {}) }));
    }
    let router: HttpRouter;
    try {
      router = new HttpRouter(http.routes, config.pool);
    } catch (cause) {
      throw new EdgeError(`service ${config.name}`, `bad route: ${(cause as Error).message}`, "config", { cause });
    }
    const origins = new OriginConnections();
    const active = new Set<{ sweep(now: number): void; abort(): void }>();
    this.ctx = { config, http, router, pools: this.pools, origins, clock, stats: this.stats, httpStats: this.httpStats, admission, proto: config.tls ? "https" : "http", active };
    this.stopSweep = clock.onTick((now) => {
      for (const c of active) c.sweep(now);
      origins.sweep(now);
      if (this.closing && active.size === 0) {
        origins.close();
        this.stopSweep();
      }
    });
  }

  /** Open the listeners (one per family the service's prefixes use). Undo on failure. */
  listen(): ServiceSocket[] {
    for (const p of this.pools.values()) void p.start();
    const families = serviceFamilies(this.config);
    const tls = this.config.tls ? { tls: { cert: this.config.tls.cert, key: this.config.tls.key } } : {};
    try {
      return families.map((family) => {
        const listener = Bun.listen<HttpConnection>({ hostname: LISTEN_ADDRESS[family], port: 0, allowHalfOpen: true, socket: { ...this.handlers(), binaryType: "uint8array" }, ...tls });
        this.listeners.push({ family, listener });
        const fd = (listener as unknown as { fd: number }).fd;
        return { family, fd, inode: fstatSync(fd).ino, address: `${family === 6 ? `[${listener.hostname}]` : listener.hostname}:${listener.port}` };
      });
    } catch (cause) {
      this.close();
      throw new EdgeError(`service ${this.config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
    }
  }

  private handlers() {
    const ctx = this.ctx;
    return {
      open(s: Socket<HttpConnection>) {
        // Over the cap: this one was already queued in the kernel when steering stopped.
        if (!ctx.admission.admit()) return void s.terminate();
        s.data = new HttpConnection(s, ctx);
      },
      data(s: Socket<HttpConnection>, chunk: Uint8Array) {
        s.data?.clientData(chunk);
      },
      drain(s: Socket<HttpConnection>) {
        s.data?.clientDrain();
      },
      end(s: Socket<HttpConnection>) {
        s.data?.clientEnd();
      },
      close(s: Socket<HttpConnection>, error?: Error) {
        s.data?.clientClosed(error);
      },
      error(s: Socket<HttpConnection>, error: Error) {
        s.data?.clientClosed(error);
      },
    };
  }

  report() {
    return { connections: this.stats.snapshot(), http: this.httpStats.snapshot(this.ctx.origins.opened, this.ctx.origins.reused) };
  }

  summary(): string {
    const s = this.stats;
    const h = this.httpStats;
    const classes = [1, 2, 3, 4, 5].map((c) => `${c}xx ${h.byClass[c]}`).join(", ");
    const errors = [...s.originErrors].map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
    return `${s.connectionsTotal} connections, ${h.requests} requests (${classes}), origin errors: ${errors}`;
  }

  /** Stop accepting; with `abort`, reset every open connection too. Idempotent. */
  close(abort = false): void {
    this.closing = true;
    for (const { listener } of this.listeners.splice(0)) listener.stop(false);
    if (abort) for (const c of [...this.ctx.active]) c.abort();
    for (const p of this.pools.values()) p.close();
    if (this.ctx.active.size === 0) {
      this.ctx.origins.close();
      this.stopSweep();
    }
  }
}
