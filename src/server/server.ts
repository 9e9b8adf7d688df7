import type { ServeConfig } from "../config/service";
import { Dispatcher } from "../dispatcher/dispatcher";
import type { Binding } from "../dispatcher/binding";
import { ConfigError } from "../errors";
import { Admission, connectionCapacity, openFileLimit } from "../proxy/admission";
import { CoarseClock } from "../proxy/clock";
import { TcpService, type ServiceSocket } from "../proxy/tcp";
import { checkEnvironment } from "../system/environment";
import { listeners } from "../system/listeners";
import { holesForListeners, rejectLoops, serviceBindings } from "./bindings";

export interface StartReport {
  readonly sockets: { service: string; id: number; socket: ServiceSocket }[];
  readonly maxConnections: number;
  /** Listeners left alone because they were there first. */
  readonly skipped: string[];
  readonly bindings: Binding[];
}

/**
 * A running edgeproxy: the dispatcher, its link and every service. Built
 * aside and attached last, so a failure at any step leaves nothing behind.
 */
export class Server {
  private closed = false;

  private constructor(
    readonly dispatcher: Dispatcher,
    readonly services: TcpService[],
    private readonly clock: CoarseClock,
    readonly admission: Admission,
    readonly report: StartReport,
  ) {}

  static async start(config: ServeConfig, image: Uint8Array): Promise<Server> {
    checkEnvironment();
    const bindings = serviceBindings(config.services);
    await rejectLoops(config.services, bindings);
    const nofile = openFileLimit();
    const capacity = connectionCapacity(nofile);
    const maxConnections = config.maxConnections ?? capacity;
    if (maxConnections > capacity || capacity < 1) {
      throw new ConfigError(
        "--max-connections",
        `${maxConnections} connections need ${2 * maxConnections} file descriptors plus a reserve, but the open-file limit is ${nofile}; raise it (ulimit -n) or lower --max-connections`,
      );
    }

    const sockets: StartReport["sockets"] = [];
    let dispatcher: Dispatcher | undefined;
    // At the cap, stop steering: the kernel refuses new connections (SK_DROP,
    // counted as missing_socket) instead of queueing them for an accept() that
    // would fail with EMFILE.
    const admission = new Admission(maxConnections, (accepting) => {
      for (const { id, socket } of sockets) {
        try {
          if (accepting) dispatcher?.setSocket(id, "tcp", socket.family, socket.fd);
          else dispatcher?.removeSocket(id, "tcp", socket.family);
        } catch (e) {
          process.stderr.write(`edgeproxy: ${accepting ? "resume" : "pause"} steering: ${(e as Error).message}\n`);
        }
      }
      process.stderr.write(`edgeproxy: ${accepting ? "below" : "at"} --max-connections ${maxConnections}: ${accepting ? "accepting again" : "refusing new connections"}\n`);
    });
    const clock = new CoarseClock();
    const services: TcpService[] = [];
    try {
      dispatcher = Dispatcher.load(image);
      config.services.forEach((cfg, i) => {
        const svc = new TcpService(cfg, clock, admission);
        services.push(svc);
        for (const socket of svc.listen()) {
          dispatcher!.setSocket(i + 1, "tcp", socket.family, socket.fd);
          sockets.push({ service: cfg.name, id: i + 1, socket });
        }
      });
      let skipped: string[] = [];
      let all = bindings;
      if (!config.takeOver) {
        const ours = new Set(sockets.map((s) => s.socket.inode));
        const theirs = listeners("tcp").filter((l) => !ours.has(l.inode));
        const h = holesForListeners(bindings, theirs);
        all = [...bindings, ...h.holes];
        skipped = h.skipped;
      }
      dispatcher.apply(all);
      dispatcher.attach();
      return new Server(dispatcher, services, clock, admission, { sockets, skipped, bindings: all, maxConnections });
    } catch (e) {
      for (const s of services) s.close(true);
      dispatcher?.close();
      clock.close();
      throw e;
    }
  }

  /** One line per service: the kernel's counters and the data plane's. */
  summary(): string[] {
    return this.services.map((svc, i) => {
      const k = this.dispatcher.counters(i + 1);
      const s = svc.stats;
      const errors = [...s.originErrors].map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
      return (
        `service ${svc.config.name}: ${k.lookups} lookups, ${k.steered} steered, ${k.missingSocket} refused without a socket, ` +
        `${k.assignError} assign errors; ${s.connectionsTotal} connections, ${s.bytesFromClients} bytes in, ${s.bytesFromOrigins} bytes out, ` +
        `origin errors: ${errors}`
      );
    });
  }

  /** Detach and free every kernel object, stop the services. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dispatcher.close();
    for (const s of this.services) s.close(true);
    this.clock.close();
  }
}
