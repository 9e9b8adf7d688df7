import type { ServeConfig } from "../config/service";
import { Dispatcher } from "../dispatcher/dispatcher";
import type { Binding } from "../dispatcher/binding";
import { CoarseClock } from "../proxy/clock";
import { TcpService, type ServiceSocket } from "../proxy/tcp";
import { checkEnvironment } from "../system/environment";
import { listeners } from "../system/listeners";
import { holesForListeners, rejectLoops, serviceBindings } from "./bindings";

export interface StartReport {
  readonly sockets: { service: string; socket: ServiceSocket }[];
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
    readonly report: StartReport,
  ) {}

  static async start(config: ServeConfig, image: Uint8Array): Promise<Server> {
    checkEnvironment();
    const bindings = serviceBindings(config.services);
    await rejectLoops(config.services, bindings);

    const clock = new CoarseClock();
    const services: TcpService[] = [];
    let dispatcher: Dispatcher | undefined;
    try {
      dispatcher = Dispatcher.load(image);
      const sockets: StartReport["sockets"] = [];
      config.services.forEach((cfg, i) => {
        const svc = new TcpService(cfg, clock);
        services.push(svc);
        for (const socket of svc.listen()) {
          dispatcher!.setSocket(i + 1, "tcp", socket.family, socket.fd);
          sockets.push({ service: cfg.name, socket });
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
      return new Server(dispatcher, services, clock, { sockets, skipped, bindings: all });
    } catch (e) {
      for (const s of services) s.close(true);
      dispatcher?.close();
      clock.close();
      throw e;
    }
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
