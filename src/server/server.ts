import type { ServeConfig, ServiceConfig } from "../config/service";
import { ConfigError } from "../errors";
import type { StoredBinding, StoredRule } from "../dispatcher/abi";
import type { Dispatcher } from "../dispatcher/dispatcher";
import { bpffsPath, type ProgramUpgrade } from "../dispatcher/pins";
import { ControlPlane, type InstanceClaim } from "../dispatcher/controlplane";
import { claimOf, wantedOf } from "./instance";
import type { Registry } from "../dispatcher/registry";
import { Admission, connectionCapacity, FD_RESERVE, openFileLimit } from "../proxy/admission";
import { CoarseClock } from "../proxy/clock";
import type { DataPlaneService, ServiceSocket } from "../proxy/service";
import { checkEnvironment } from "../system/environment";
import { refuseSelfReach, serviceBindings } from "./bindings";
import { cookiesOf, groupPlan, memberOf, registerMembers, withdrawMembers } from "./members";
import { DataPlanes } from "./services";
import { SourceLimiting } from "./sourcelimits";
import { CapSteering } from "./steering";
import { EP_REUSE_MAX_MEMBERS } from "../dispatcher/abi";
import { startPhase } from "../system/starttrace";

/** A service this process runs: its registry id, data plane and listening sockets. */
export interface RunningService {
  readonly id: number;
  readonly svc: DataPlaneService;
  readonly sockets: ServiceSocket[];
}

const inodesOf = (running: Map<string, RunningService>) => new Set([...running.values()].flatMap((r) => r.sockets.map((s) => s.inode)));

/** What startup found and did, for its log lines. */
export interface StartReport {
  readonly maxConnections: number;
  readonly maxFlows: number;
  /** Listeners left alone because they were there first. */
  readonly skipped: string[];
  /** Live instances this start took over (--take-over): told to leave, by name and pid. */
  readonly told: string[];
  /** Where the dispatcher is pinned, and whether this start created it. */
  readonly pinDir: string;
  readonly createdPins: boolean;
  /** Joining upgraded the pinned program in place (serve does when its program differs). */
  readonly programUpgrade?: ProgramUpgrade;
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
    /** The owner of the pinned state: every change of it goes through here. */
    readonly plane: ControlPlane,
    /** The instance this process serves for. */
    readonly claim: InstanceClaim,
    /** Services this process runs, by name. */
    readonly running: Map<string, RunningService>,
    readonly planes: DataPlanes,
    readonly bpffs: string,
    public config: ServeConfig,
    /** This process's member entry in every slot (see members.ts). */
    readonly member: number,
    /** This worker's place in its TCP groups' member selection (steering.ts). */
    readonly steering: CapSteering,
    readonly report: StartReport,
    /** Per-client limits: published for the program, counted at accept. */
    readonly sourceLimiting: SourceLimiting,
  ) {}

  /**
   * Start serving `config`. `worker` is this process's worker index: its
   * sockets register as member memberOf(worker) of each slot, so workers and
   * the next process of an upgrade share each service's reuseport group.
   */
  static async start(config: ServeConfig, image: Uint8Array, worker = 0, claim: InstanceClaim = claimOf(config, false)): Promise<Server> {
    const member = memberOf(worker);
    checkEnvironment();
    const bindings = serviceBindings(config.services);
    const origins = await refuseSelfReach(config.admin, config.services, bindings);
    const workers = config.workers ?? 1;
    const { maxConnections, maxFlows } = fdBudget({ ...config, maxConnections: connectionShare(config.maxConnections, workers, worker) });
    const bpffs = bpffsPath(config.bpffs);
    const wanted = wantedOf(config.services);
    startPhase("server checks done");
    return ControlPlane.with(bpffs, image, { create: true }, (plane) => {
      startPhase(plane.pinned.created ? "dispatcher loaded (verifier), pinned and attached" : "pinned dispatcher opened");
      // Checked before anything is written: a refused start leaves every live instance as it was.
      const conflict = config.takeOver ? undefined : plane.conflictLocked(claim, wanted);
      if (conflict) throw new ConfigError(`instance ${claim.name}`, `refused, nothing changed: ${conflict.line}`);
      const registry = plane.registry;
      const running = new Map<string, RunningService>();
      // At its cap this worker leaves its TCP groups' member selection, so the
      // kernel gives newcomers to a worker with room; with none left it refuses
      // them itself (SK_DROP in ep_migrate, kernel_drops_total{reason="full"})
      // instead of queueing them for an accept() that would fail with EMFILE.
      // It acts on the sockets running now, which a reload may have replaced.
      const steering = new CapSteering(plane.dispatcher.selection, worker, workers, () => running.values(), (line) => process.stderr.write(`edgeproxy: ${line}\n`));
      const cap =
        workers === 1
          ? `--max-connections ${maxConnections}`
          : `${maxConnections} open connections (worker ${worker}'s ${config.maxConnections === undefined ? "open-file limit" : `share of --max-connections ${config.maxConnections}`})`;
      const admission = new Admission(maxConnections, (accepting) => {
        steering.change(accepting);
        const what = workers > 1 ? (accepting ? "taking new connections again" : "new connections go to the workers with room") : accepting ? "accepting again" : "refusing new connections";
        process.stderr.write(`edgeproxy: ${accepting ? "below" : "at"} ${cap}: ${what}\n`);
      }, (first) => steering.soft(first));
      const planes = new DataPlanes(new CoarseClock(), admission, maxFlows);
      const sourceLimiting = new SourceLimiting(plane.dispatcher, (fn) => plane.locked(fn));
      try {
        const { told, skipped } = plane.transactionLocked(config.services.map((s) => s.name), () => inodesOf(running), () => {
          const told = plane.joinLocked(claim, wanted, config.takeOver);
          steering.prune();
          for (const cfg of config.services) {
            const entry = registry.ensure(cfg.name, config.takeOver);
            plane.ownLocked(claim.name, entry.id);
            const state = storedState(cfg, entry.id);
            registry.setBindings(entry.id, state.bindings);
            registry.setRules(entry.id, state.rules);
            sourceLimiting.publish(cfg, entry.id);
            const svc = planes.create(cfg, origins, sourceLimiting.limiter(cfg, entry.id));
            const own = svc.listen(groupPlan(registry, entry.id, svc.protocol, plane.dispatcher.migrateFd));
            running.set(cfg.name, { id: entry.id, svc, sockets: own });
            registerMembers(registry, entry.id, svc.protocol, own, member, steering);
            startPhase(`service ${cfg.name}: listening and registered (steered from here)`);
          }
          return { told };
        });
        steering.start();
        return new Server(plane, claim, running, planes, bpffs, config, member, steering, {
          skipped,
          told,
          maxConnections,
          maxFlows,
          pinDir: plane.pinned.dir,
          createdPins: plane.pinned.created,
          ...(plane.pinned.upgraded ? { programUpgrade: plane.pinned.upgraded } : {}),
        }, sourceLimiting);
      } catch (e) {
        for (const { svc } of running.values()) svc.close(true);
        planes.close();
        sourceLimiting.close();
        throw e;
      }
    })!;
  }

  get dispatcher(): Dispatcher {
    return this.plane.dispatcher;
  }

  get registry(): Registry {
    return this.plane.registry;
  }

  /** Listening sockets of every running service: ours, not someone else's already-listening ones. */
  ownInodes(): Set<number> {
    return inodesOf(this.running);
  }

  /** One line per service: the kernel's counters and the data plane's. */
  summary(): string[] {
    return [...this.running.values()].map(({ id, svc }) => {
      const k = this.dispatcher.counters(id);
      const l = this.dispatcher.limitCounters(id);
      return (
        `service ${svc.config.name}: ${k.lookups} lookups, ${k.steered} steered, ${k.missingSocket} refused without a socket, ${k.denied} denied, ${l.connections + l.rate} limited, ` +
        `${k.assignError} assign errors; ${svc.summary()}`
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
      this.withdraw();
    } finally {
      for (const { svc } of this.running.values()) svc.close(true);
      this.planes.close();
      // After the services: their last releases still count in this slot.
      this.sourceLimiting.close();
      this.plane.close();
    }
  }

  /**
   * Take this process's sockets out of the dispatcher. A service that another
   * process still serves (another worker, or the process that replaces this
   * one in an upgrade) keeps its bindings; the others are removed, and the
   * pins with the last one.
   */
  private withdraw(): void {
    this.steering.stop();
    this.plane.locked(() => {
      for (const { svc, sockets } of this.running.values()) if (svc.protocol === "tcp") this.steering.withdraw(sockets);
      const emptied = [...this.running.values()].filter(({ id, sockets }) => !withdrawMembers(this.registry, id, cookiesOf(sockets))).map((r) => r.id);
      this.plane.leaveLocked(this.claim, emptied, new Set());
    });
  }

  private hurried = false;

  /** A drain under way ends now (SIGTERM/SIGINT while draining): what is still open is cut. */
  hurry(): void {
    this.hurried = true;
  }

  /**
   * Stop accepting and let open connections finish: the listeners close
   * first, so they leave their reuseport groups and the kernel moves what
   * they had queued to the members that remain (the migrate program); then
   * wait until nothing is open or `timeoutMs` passes, and end the rest.
   * Resolves to the number of connections and flows that had to be cut.
   */
  async drain(timeoutMs: number): Promise<number> {
    if (this.closed) return 0;
    // No offer after this: a connection closing below the resume mark must not re-offer a closed listener.
    this.steering.stop();
    for (const { svc } of this.running.values()) svc.close(false);
    this.withdraw();
    this.closed = true;
    const open = () => [...this.running.values()].reduce((n, { svc }) => n + svc.openCount(), 0);
    const deadline = Date.now() + timeoutMs;
    while (open() > 0 && Date.now() < deadline && !this.hurried) await Bun.sleep(Math.min(100, Math.max(1, deadline - Date.now())));
    const cut = open();
    for (const { svc } of this.running.values()) svc.close(true);
    this.planes.close();
    this.sourceLimiting.close();
    this.plane.close();
    return cut;
  }
}

/**
 * This worker's part of --max-connections (`max_connections`), which is the
 * instance's: with W workers each admits max / W (the first max % W one
 * more), so together they admit exactly `max`, and the member selection
 * (steering.ts) gives a newcomer to whichever worker has room: an operator's
 * figure holds for the instance, not W times over, and nothing is reset
 * while any worker has room. Without a figure each worker's cap is what its
 * own open-file limit allows (a per-process resource), so the instance's is
 * W times that. Throws when a worker would get no connection at all.
 */
export function connectionShare(max: number | undefined, workers: number, worker: number): number | undefined {
  if (workers > EP_REUSE_MAX_MEMBERS) throw new ConfigError("--workers", `${workers} workers: at most ${EP_REUSE_MAX_MEMBERS}`);
  if (max === undefined) return undefined;
  if (max < workers) throw new ConfigError("--max-connections", `${max} connections cannot be shared by ${workers} workers: give each at least one, or run fewer workers`);
  return Math.floor(max / workers) + (worker < max % workers ? 1 : 0);
}

/**
 * Split the open-file limit between TCP connections and UDP flows (two
 * descriptors each). Defaults: half each when the config uses both; all of
 * it to TCP when there is no UDP service; 95% to UDP flows when there is no
 * TCP service (the rest lets a reload add one). A given figure takes its
 * share first; the other kind gets the rest.
 */
export function fdBudget(config: ServeConfig, nofile = openFileLimit()): { maxConnections: number; maxFlows: number } {
  const capacity = connectionCapacity(nofile);
  const udp = config.services.some((s) => s.mode === "udp");
  const tcp = config.services.some((s) => s.mode !== "udp");
  const flowShare = !udp ? 0 : tcp ? Math.floor(capacity / 2) : capacity - Math.max(1, Math.floor(capacity / 20));
  const maxFlows = config.maxFlows ?? (config.maxConnections === undefined ? flowShare : Math.max(0, capacity - config.maxConnections));
  const maxConnections = config.maxConnections ?? Math.max(0, capacity - maxFlows);
  const fail = (where: string, what: string) =>
    new ConfigError(where, `${what}, but the open-file limit is ${nofile} (two descriptors each, ${FD_RESERVE} kept in reserve); raise it (ulimit -n) or lower --max-connections / --max-flows`);
  if (maxConnections + maxFlows > capacity) {
    throw fail(config.maxConnections === undefined ? "--max-flows" : "--max-connections", `${maxConnections} connections and ${maxFlows} UDP flows need ${2 * (maxConnections + maxFlows) + FD_RESERVE} file descriptors`);
  }
  if (tcp && maxConnections < 1) throw fail("--max-flows", `${maxFlows} UDP flows leave no descriptors for the TCP services' connections`);
  if (udp && maxFlows < 1) throw fail("--max-connections", `${maxConnections} connections leave no descriptors for the UDP services' flows`);
  return { maxConnections, maxFlows };
}
