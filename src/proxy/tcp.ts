import type { Socket, TCPSocketListener } from "bun";
import { fstatSync } from "node:fs";
import type { Family } from "../config/address";
import { serviceFamilies, type ServiceConfig } from "../config/service";
import { EdgeError } from "../errors";
import type { OriginPool } from "../origin/pool";
import type { Admission } from "./admission";
import type { CoarseClock } from "./clock";
import { Relay } from "./relay";
import { responderHandlers } from "./responder";
import { LISTEN_ADDRESS, type DataPlaneService, type ServiceSocket } from "./service";
import { ServiceStats } from "./stats";

/** A tcp-mode service: one listener per address family, every steered connection relayed to the origin. */
export class TcpService implements DataPlaneService {
  readonly protocol = "tcp";
  readonly stats = new ServiceStats();
  private readonly active = new Set<Relay>();
  private readonly listeners: { family: Family; listener: TCPSocketListener<any> }[] = [];
  private readonly stopSweep: () => void;
  private closing = false;

  constructor(
    readonly config: ServiceConfig,
    private readonly clock: CoarseClock,
    private readonly admission: Admission,
    /** Absent for the built-in responder. Owned: started on listen, closed with the service. */
    readonly pool?: OriginPool,
  ) {
    this.stopSweep = clock.onTick((now) => {
      for (const r of this.active) r.sweep(now);
      if (this.closing && this.active.size === 0) this.stopSweep();
    });
  }

  /** Open the listeners (one per family the service's prefixes use). Undo on failure. */
  listen(): ServiceSocket[] {
    const families = serviceFamilies(this.config);
    try {
      const sockets = families.map((family) => {
        const listener = Bun.listen<any>({
          hostname: LISTEN_ADDRESS[family],
          port: 0,
          allowHalfOpen: true,
          socket: this.pool ? this.relayHandlers(this.pool) : responderHandlers(this.admission),
        });
        this.listeners.push({ family, listener });
        const fd = (listener as unknown as { fd: number }).fd;
        return { family, fd, inode: fstatSync(fd).ino, address: `${family === 6 ? `[${listener.hostname}]` : listener.hostname}:${listener.port}` };
      });
      void this.pool?.start();
      return sockets;
    } catch (cause) {
      this.close();
      throw new EdgeError(`service ${this.config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
    }
  }

  private relayHandlers(pool: OriginPool) {
    const admission = this.admission;
    const options = { connectTimeoutMs: this.config.connectTimeoutMs, idleTimeoutMs: this.config.idleTimeoutMs, clock: this.clock, stats: this.stats, admission };
    const active = this.active;
    return {
      open(s: Socket<Relay>) {
        // Over the cap: this one was already queued in the kernel when steering stopped.
        if (!admission.admit()) return void s.terminate();
        const relay = new Relay(s, options, active);
        s.data = relay;
        // The edge port is the accepted socket's local port (port-preserving and port-range origins need it).
        const pick = pool.pick(s.remoteAddress, s.localPort);
        if (!pick) {
          options.stats.originError("no_origin");
          return relay.abort();
        }
        relay.connect(pick);
      },
      data(s: Socket<Relay>, chunk: Buffer) {
        s.data?.fromClient(chunk);
      },
      drain(s: Socket<Relay>) {
        s.data?.drained("client");
      },
      end(s: Socket<Relay>) {
        s.data?.ended("client");
      },
      close(s: Socket<Relay>, error?: Error) {
        s.data?.closed("client", error);
      },
      error(s: Socket<Relay>, error: Error) {
        s.data?.closed("client", error);
      },
    };
  }

  report() {
    return { connections: this.stats.snapshot(), ...(this.pool ? { origins: this.pool.snapshot() } : {}) };
  }

  summary(): string {
    const s = this.stats;
    const errors = [...s.originErrors].map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
    return `${s.connectionsTotal} connections, ${s.bytesFromClients} bytes in, ${s.bytesFromOrigins} bytes out, origin errors: ${errors}`;
  }

  /**
   * Stop accepting. With `abort`, reset every relayed connection too;
   * without, they run on, still under their timeouts, and the sweep stops
   * with the last of them. Idempotent.
   */
  close(abort = false): void {
    this.closing = true;
    this.pool?.close();
    for (const { listener } of this.listeners.splice(0)) listener.stop(false);
    if (abort) for (const r of [...this.active]) r.abort();
    if (this.active.size === 0) this.stopSweep();
  }
}
