import type { ServeConfig, ServiceConfig } from "../config/service";
import { ConfigError } from "../errors";
import type { StoredBinding, StoredRule } from "../dispatcher/abi";
import type { Dispatcher } from "../dispatcher/dispatcher";
import { bpffsPath, openPinned, removePinned, withPinLock } from "../dispatcher/pins";
import { Registry } from "../dispatcher/registry";
import { Admission, connectionCapacity, openFileLimit } from "../proxy/admission";
import { CoarseClock } from "../proxy/clock";
import { TcpService, type ServiceSocket } from "../proxy/tcp";
import { checkEnvironment } from "../system/environment";
import { rejectAdminInBindings, rejectLoops, serviceBindings } from "./bindings";

/** A service this process runs: its registry id, data plane and listening sockets. */
export interface RunningService {
  readonly id: number;
  readonly svc: TcpService;
  readonly sockets: ServiceSocket[];
}

const inodesOf = (running: Map<string, RunningService>) => new Set([...running.values()].flatMap((r) => r.sockets.map((s) => s.inode)));

/** What startup found and did, for its log lines. */
export interface StartReport {
  readonly maxConnections: number;
  /** Listeners left alone because they were there first. */
  readonly skipped: string[];
  /** Where the dispatcher is pinned, and whether this start created it. */
  readonly pinDir: string;
  readonly createdPins: boolean;
}

/** A service's configured bindings and rules as the registry stores them. */
export function storedState(cfg: ServiceConfig, id: number): { bindings: StoredBinding[]; rules: StoredRule[] } {
  return {
    bindings: cfg.bindings.flatMap((b) => b.prefixes.flatMap((prefix) => b.ports.map((r) => ({ service: id, protocol: b.protocol, prefix, lo: r.lo, hi: r.hi })))),
    rules: [
      ...cfg.access.allow.map((prefix) => ({ service: id, prefix, verdict: "allow" as const })),
      ...cfg.access.deny.map((prefix) => ({ service: id, prefix, verdict: "deny" as const })),
    ],
  };
}

/**
 * A running edgeproxy: its services in the namespace's pinned dispatcher
 * (created and attached if there was none), their listeners and the data
 * plane. Every change holds the pin lock, and a failed start undoes its own
 * changes.
 */
export class Server {
  private closed = false;
  readonly startedAt = Date.now() / 1000;

  private constructor(
    readonly dispatcher: Dispatcher,
    readonly registry: Registry,
    /** Services this process runs, by name. */
    readonly running: Map<string, RunningService>,
    readonly clock: CoarseClock,
    readonly admission: Admission,
    readonly bpffs: string,
    public config: ServeConfig,
    readonly report: StartReport,
  ) {}

  static async start(config: ServeConfig, image: Uint8Array): Promise<Server> {
    checkEnvironment();
    const bindings = serviceBindings(config.services);
    await rejectLoops(config.services, bindings);
    rejectAdminInBindings(config.admin, bindings);
    const nofile = openFileLimit();
    const capacity = connectionCapacity(nofile);
    const maxConnections = config.maxConnections ?? capacity;
    if (maxConnections > capacity || capacity < 1) {
      throw new ConfigError(
        "--max-connections",
        `${maxConnections} connections need ${2 * maxConnections} file descriptors plus a reserve, but the open-file limit is ${nofile}; raise it (ulimit -n) or lower --max-connections`,
      );
    }
    const bpffs = bpffsPath(config.bpffs);
    return withPinLock(bpffs, () => {
      const pinned = openPinned(bpffs, image, true)!;
      const registry = new Registry(pinned.dispatcher);
      const running = new Map<string, RunningService>();
      // At the cap, stop steering: the kernel refuses new connections (SK_DROP,
      // counted as missing_socket) instead of queueing them for an accept()
      // that would fail with EMFILE. It acts on the sockets running now, which
      // a reload may have replaced since startup.
      const admission = new Admission(maxConnections, (accepting) => {
        for (const { id, sockets: own } of running.values()) {
          for (const socket of own) {
            try {
              if (accepting) pinned.dispatcher.setSocket(id, "tcp", socket.family, socket.fd);
              else pinned.dispatcher.removeSocket(id, "tcp", socket.family);
            } catch (e) {
              process.stderr.write(`edgeproxy: ${accepting ? "resume" : "pause"} steering: ${(e as Error).message}\n`);
            }
          }
        }
        process.stderr.write(`edgeproxy: ${accepting ? "below" : "at"} --max-connections ${maxConnections}: ${accepting ? "accepting again" : "refusing new connections"}\n`);
      });
      const clock = new CoarseClock();
      const before = registry.snapshot(config.services.map((s) => s.name));
      try {
        for (const cfg of config.services) {
          const entry = registry.ensure(cfg.name, config.takeOver);
          const state = storedState(cfg, entry.id);
          registry.setBindings(entry.id, state.bindings);
          registry.setRules(entry.id, state.rules);
          const svc = new TcpService(cfg, clock, admission);
          const own = svc.listen();
          running.set(cfg.name, { id: entry.id, svc, sockets: own });
          for (const socket of own) registry.setSocket(entry.id, "tcp", socket.family, socket.fd, { pid: process.pid, fd: socket.fd });
        }
        const { skipped } = registry.commit(inodesOf(running));
        return new Server(pinned.dispatcher, registry, running, clock, admission, bpffs, config, {
          skipped,
          maxConnections,
          pinDir: pinned.dir,
          createdPins: pinned.created,
        });
      } catch (e) {
        for (const { svc } of running.values()) svc.close(true);
        clock.close();
        try {
          // Put back what was there before this start.
          registry.restore(before);
          if (pinned.created) removePinned(bpffs);
          else registry.commit();
        } finally {
          pinned.dispatcher.close();
        }
        throw e;
      }
    });
  }

  /** Listening sockets of every running service: ours, not someone else's already-listening ones. */
  ownInodes(): Set<number> {
    return inodesOf(this.running);
  }

  /** One line per service: the kernel's counters and the data plane's. */
  summary(): string[] {
    return [...this.running.values()].map(({ id, svc }) => {
      const k = this.dispatcher.counters(id);
      const s = svc.stats;
      const errors = [...s.originErrors].map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
      return (
        `service ${svc.config.name}: ${k.lookups} lookups, ${k.steered} steered, ${k.missingSocket} refused without a socket, ${k.denied} denied, ` +
        `${k.assignError} assign errors; ${s.connectionsTotal} connections, ${s.bytesFromClients} bytes in, ${s.bytesFromOrigins} bytes out, ` +
        `origin errors: ${errors}`
      );
    });
  }

  /**
   * Withdraw this process's services from the pinned dispatcher and stop
   * them. When no service is left, the pins go too, which detaches the
   * program and frees every map. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      withPinLock(this.bpffs, () => {
        for (const { id } of this.running.values()) this.registry.remove(id);
        if (this.registry.services().length === 0) removePinned(this.bpffs);
        else this.registry.commit();
      });
    } finally {
      this.dispatcher.close();
      for (const { svc } of this.running.values()) svc.close(true);
      this.clock.close();
    }
  }
}
