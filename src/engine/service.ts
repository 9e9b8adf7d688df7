// A tcp-mode service on the engine (engine = "epoll"): its listeners are
// made here (listeners.ts), then handed to the data plane's thread, whose loop
// accepts and relays (engine.ts, pair.ts). Health checks, ejection and DNS
// stay on this thread with the pool; the engine gets each change.
import type { Family } from "../config/address";
import type { ServiceConfig } from "../config/service";
import { EdgeError } from "../errors";
import type { OriginPool } from "../origin/pool";
import type { Admission } from "../proxy/admission";
import { NEW_GROUPS, type GroupPlan } from "../proxy/group";
import type { DataPlaneService, ServiceSocket } from "../proxy/service";
import type { UdpPlane } from "../proxy/udp/plane";
import { serviceLog } from "../log/access";
import type { Fd } from "../system/fd";
import { openEngineListeners } from "./listeners";
import { ORIGIN_ERRORS, readTcpRow, SOURCE_RATE_AT, T, TCP_ROW } from "./stats";
import type { SourceLimit } from "../proxy/sourcelimit";

export class EngineTcpService implements DataPlaneService {
  readonly protocol = "tcp";
  private readonly row = new Float64Array(new SharedArrayBuffer(TCP_ROW * 8));
  private slot = -1;
  private unsubscribe = () => {};

  constructor(
    readonly config: ServiceConfig,
    private readonly plane: UdpPlane,
    private readonly admission: Admission,
    /** Owned: started on listen, closed with the service. */
    readonly pool: OriginPool,
    /** Per-client limits; source_connections is counted on the engine's thread. */
    private readonly limit?: SourceLimit,
  ) {}

  /** What the per-client limit refused at accept (the program refuses the rest in the kernel). */
  get sourceLimit(): { refused: { connections: number; rate: number } } | undefined {
    return this.limit ? { refused: { connections: this.row[T.sourceRefused]!, rate: this.row[SOURCE_RATE_AT]! } } : undefined;
  }

  listen(plan: GroupPlan = NEW_GROUPS): ServiceSocket[] {
    const opened: { fd: Fd; family: Family }[] = [];
    try {
      const sockets = openEngineListeners(this.config, plan, opened);
      const pool = this.pool;
      const cfg = this.config;
      // The access log's writer is opened here (this thread writes the lines the engine makes).
      const logOn = cfg.accessLog !== undefined && serviceLog(cfg.name, cfg.accessLog) !== undefined;
      this.admission.recheck();
      this.plane.onAdmission = () => this.admission.steeredForEngine();
      this.slot = this.plane.addTcp(
        {
          name: cfg.name,
          listeners: opened,
          row: this.row.buffer as SharedArrayBuffer,
          origins: { balance: pool.config.balance, edgeRange: pool.edgeRange, endpoints: pool.endpoints() },
          needClient: pool.config.balance === "hash",
          needEdge: pool.followsEdgePort,
          connectTimeoutMs: cfg.connectTimeoutMs,
          idleTimeoutMs: cfg.idleTimeoutMs,
          eject: pool.config.eject,
          acceptProxy: cfg.acceptProxy,
          proxyHeaderMs: cfg.deadlines.proxyHeaderMs,
          proxyProtocol: cfg.proxyProtocol,
          ...(logOn ? { accessLog: cfg.accessLog } : {}),
          admission: this.admission.share(),
          ...(this.limit?.counting() ? { sourceLimit: this.limit.counting()! } : {}),
        },
        {
          report: (key, port, failure) => {
            const m = pool.member(key, port);
            if (failure) m?.failed(failure);
            else m?.succeeded();
          },
          counts: (active, panics) => {
            for (const [key, n] of active) pool.setActive(key, n);
            for (const [key, n] of panics) pool.panics(key, n);
          },
        },
      );
      const slot = this.slot;
      this.unsubscribe = pool.onChange(() => this.plane.setTcpOrigins(slot, pool.endpoints()));
      void pool.start();
      return sockets;
    } catch (cause) {
      for (const { fd } of opened) fd.close();
      throw new EdgeError(`service ${this.config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
    }
  }

  openCount(): number {
    return this.row[T.active]!;
  }

  /**
   * Close the listeners (the kernel moves their queues to the group's other
   * members: ep_migrate); with `abort` reset the open connections too, else
   * they run until done or idle. close(true) after close(false) is a drain's
   * deadline: it cuts what is still open, as Bun's path does.
   */
  close(abort = false): void {
    this.unsubscribe();
    this.pool.close();
    if (this.slot < 0 || (this.retired && !abort)) return;
    this.retired = true;
    this.plane.retireTcp(this.slot, abort);
    if (abort) this.slot = -1;
  }

  private retired = false;

  report() {
    return { connections: readTcpRow(this.row), origins: this.pool.snapshot() };
  }

  summary(): string {
    const s = this.report().connections;
    const errors = ORIGIN_ERRORS.filter((k) => s.originErrors[k]).map((k) => `${k} ${s.originErrors[k]}`).join(", ") || "none";
    // As Bun's path words it (src/proxy/tcp.ts), then what only the engine counts.
    const list = (m: Readonly<Record<string, number>>, what: string) => (Object.keys(m).length ? `, ${what}: ${Object.entries(m).map(([reason, n]) => `${reason} ${n}`).join(", ")}` : "");
    return `${s.total} connections, ${s.bytesFromClients} bytes in, ${s.bytesFromOrigins} bytes out, origin errors: ${errors}${list(s.proxyHeaderErrors, "PROXY header errors")}${list(s.deadlinesExpired, "deadlines expired")}, refused at the cap: ${this.row[T.capRefused]} (engine epoll)`;
  }
}
