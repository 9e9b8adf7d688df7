// An http-mode service on the engine (engine = "epoll"): plain HTTP/1.1 on
// raw descriptors on the data plane's thread (http.ts), the same HTTP code as
// Bun's path (src/proxy/http/conn.ts, exchange.ts) over EngineSocket. This
// thread keeps what the tcp engine's service keeps (service.ts): the pools
// (one per distinct pool of the routes, as HttpService makes them: health
// checks, DNS, ejection; the engine gets each change), the access log's
// file, and the counters the engine posts, for /metrics and the status.
import type { Family } from "../config/address";
import { POOL_DEFAULTS, type PoolConfig } from "../config/pool";
import type { ServiceConfig } from "../config/service";
import { EdgeError } from "../errors";
import { serviceLog } from "../log/access";
import { OriginPool, type PoolOptions } from "../origin/pool";
import type { Admission } from "../proxy/admission";
import { NEW_GROUPS, type GroupPlan } from "../proxy/group";
import { HttpStats } from "../proxy/http/stats";
import type { DataPlaneService, ServiceSocket } from "../proxy/service";
import { ServiceStats } from "../proxy/stats";
import type { UdpPlane } from "../proxy/udp/plane";
import type { Fd } from "../system/fd";
import type { SourceLimit } from "../proxy/sourcelimit";
import type { HttpEngineReport } from "./http";
import { openEngineListeners } from "./listeners";

export class EngineHttpService implements DataPlaneService {
  readonly protocol = "tcp";
  private readonly pools: OriginPool[] = [];
  private readonly configs: PoolConfig[] = [];
  private last: HttpEngineReport;
  private slot = -1;
  private unsubscribe: (() => void)[] = [];
  private retired = false;

  constructor(
    readonly config: ServiceConfig,
    private readonly plane: UdpPlane,
    private readonly admission: Admission,
    /** Edge range and start-time addresses for the pools (kind and owner are set here). */
    poolOptions: Pick<PoolOptions, "edgeRange" | "resolved"> = {},
    /** Per-client limits; source_connections is counted on the engine's thread. */
    private readonly limit?: SourceLimit,
  ) {
    const http = config.http ?? { ...POOL_DEFAULTS.http, routes: [] };
    const add = (p: PoolConfig, owner: string) => {
      if (this.configs.includes(p)) return;
      this.configs.push(p);
      this.pools.push(new OriginPool(p, { ...poolOptions, kind: "http", owner }));
    };
    http.routes.forEach((r, i) => r.pool && add(r.pool, `service ${config.name} route ${i + 1} (${r.host ?? ""}${r.path})`));
    if (config.pool) add(config.pool, `service ${config.name}`);
    this.last = { connections: new ServiceStats().snapshot(), http: new HttpStats().snapshot(0, 0), pools: [], sourceRefused: { connections: 0, rate: 0 }, gone: false };
  }

  /** What the per-client limit refused at accept (the program refuses the rest in the kernel), as the engine last posted. */
  get sourceLimit(): { refused: { connections: number; rate: number } } | undefined {
    return this.limit ? { refused: { ...this.last.sourceRefused } } : undefined;
  }

  listen(plan: GroupPlan = NEW_GROUPS): ServiceSocket[] {
    const opened: { fd: Fd; family: Family }[] = [];
    try {
      const sockets = openEngineListeners(this.config, plan, opened);
      const cfg = this.config;
      // The access log's writer is opened here (this thread writes the lines the engine makes).
      const log = cfg.accessLog !== undefined && serviceLog(cfg.name, cfg.accessLog) !== undefined;
      this.admission.recheck();
      this.plane.onAdmission = () => this.admission.steeredForEngine();
      this.slot = this.plane.addHttp(
        {
          name: cfg.name,
          listeners: opened,
          config: cfg,
          pools: this.pools.map((p, i) => ({ config: this.configs[i]!, followsEdgePort: p.followsEdgePort, origins: { balance: p.config.balance, edgeRange: p.edgeRange, endpoints: p.endpoints() } })),
          admission: this.admission.share(),
          log,
          ...(this.limit?.counting() ? { sourceLimit: this.limit.counting()! } : {}),
        },
        {
          report: (key, port, failure) => {
            for (const pool of this.pools) {
              const m = pool.member(key, port);
              if (!m) continue;
              if (failure) m.failed(failure);
              else m.succeeded();
            }
          },
          counters: (r) => {
            this.last = r;
            r.pools.forEach((counts, i) => {
              const pool = this.pools[i];
              if (!pool) return;
              for (const [key, n] of counts.active) pool.setActive(key, n);
              for (const [key, n] of counts.panics) pool.panics(key, n);
            });
          },
        },
      );
      const slot = this.slot;
      this.pools.forEach((pool, i) => {
        this.unsubscribe.push(pool.onChange(() => this.plane.setHttpOrigins(slot, i, pool.endpoints())));
        void pool.start();
      });
      return sockets;
    } catch (cause) {
      for (const { fd } of opened) fd.close();
      throw new EdgeError(`service ${this.config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
    }
  }

  /** As the engine last posted (it posts when its loop yields, at most a sweep interval late). */
  openCount(): number {
    return this.last.gone ? 0 : this.last.connections.active;
  }

  /**
   * Close the listeners; with `abort` reset the open connections, else
   * connections between requests close now and the others after their
   * response (a drain, as HttpService's). close(true) after close(false) is
   * the drain's deadline.
   */
  close(abort = false): void {
    for (const u of this.unsubscribe.splice(0)) u();
    for (const p of this.pools) p.close();
    if (this.slot < 0 || (this.retired && !abort)) return;
    this.retired = true;
    this.plane.retireHttp(this.slot, abort);
  }

  report() {
    const origins = this.pools.flatMap((p) => p.snapshot());
    return { connections: this.last.connections, http: this.last.http, ...(origins.length ? { origins } : {}) };
  }

  summary(): string {
    const s = this.last.connections;
    const h = this.last.http;
    const classes = [1, 2, 3, 4, 5].map((c) => `${c}xx ${h.responses[`${c}xx`] ?? 0}`).join(", ");
    const errors = Object.entries(s.originErrors).map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
    const expired = Object.entries(s.deadlinesExpired);
    return `${s.total} connections, ${h.requests} requests (${classes}), origin errors: ${errors}${expired.length ? `, deadlines expired: ${expired.map(([r, n]) => `${r} ${n}`).join(", ")}` : ""} (engine epoll)`;
  }
}
