import type { Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ServeConfig } from "../config/service";
import { startAdminServer, type AdminServer } from "../admin/server";
import { announceReady, childEnv, selfCommand, startSuccessor, untilReady, UPGRADE_ENV } from "./upgrade";
import { DRAIN_TIMEOUT_MS } from "./serve";
import { dropUnusedCapabilities, spawnWithCapabilities } from "../system/capabilities";
import { announceServing, announceStopping, announceSuccessor, logsOf, removePidFile } from "./supervision";
import { describeRestart, restartNeeded } from "../config/restart";
import { describeStartup, type StartupFacts } from "./startup";
import { INSTANCE_FROM_ENV } from "../server/instance";

/** Env var naming a worker's index; its presence makes a process a worker. */
export const WORKER_ENV = "EDGEPROXY_WORKER";
/** Env var naming a worker's private admin socket. */
export const WORKER_ADMIN_ENV = "EDGEPROXY_WORKER_ADMIN";

// A worker that dies sooner than this after starting is restarted after a
// growing pause (100 ms doubling to 5 s), so a crash loop costs little CPU.
const STABLE_MS = 10_000;
const MAX_BACKOFF_MS = 5_000;
const STOP_GRACE_MS = 10_000;

class WorkerStartError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

/** One worker process as the supervisor sees it. */
export interface WorkerState {
  readonly index: number;
  proc?: Subprocess;
  ready: boolean;
  restarts: number;
  startedAt: number;
  backoffMs: number;
  /** Its private admin socket (absent when the admin API is off). */
  readonly admin?: string;
  /** What it said it serves (with its IPC "ready"): said once for all workers. */
  startup?: StartupFacts;
  /** Why it could not start or stop (its IPC "failed"), said by the supervisor. */
  failure?: { line: string; code: number };
  /** Signals forwarded while it was starting (SIGHUP, SIGUSR1), sent once it says ready. */
  held?: Set<NodeJS.Signals>;
}

/**
 * The supervisor of `--workers N`: N worker processes (this binary again,
 * with the same arguments and EDGEPROXY_WORKER=i) serve every service
 * through shared SO_REUSEPORT groups; the supervisor holds no sockets of the
 * data plane. It restarts a worker that dies; SIGINT/SIGTERM stop them all,
 * SIGQUIT drains them, SIGHUP reloads them, SIGUSR2 (or POST /upgrade)
 * upgrades the whole set. Its admin API answers for all workers.
 */
export class Supervisor {
  readonly workers: WorkerState[];
  private stopping: "now" | "drain" | undefined;
  private readonly runtime: string | undefined;
  private upgrading: Promise<string> | undefined;
  private starting = true;
  private wakeStart: (() => void) | undefined;
  readonly startedAt = Date.now() / 1000;

  /** The pid of an upgrade's successor, once it serves. */
  successor: number | undefined;

  constructor(
    readonly config: ServeConfig,
    private readonly argv: readonly string[],
    readonly say: (line: string) => void,
    /** The config as a restart would read it now, for what a reload cannot apply (config/restart.ts); absent without --config. */
    private readonly reread?: () => Promise<ServeConfig>,
  ) {
    // Workers' private admin sockets: a directory of this supervisor's own (an upgrade's next supervisor has another).
    this.runtime = config.admin.kind === "off" ? undefined : mkdtempSync(join(tmpdir(), "edgeproxy-"));
    this.workers = Array.from({ length: config.workers ?? 1 }, (_, index) => ({
      index,
      ready: false,
      restarts: 0,
      startedAt: 0,
      backoffMs: 100,
      admin: this.runtime && join(this.runtime, `worker-${index}.sock`),
    }));
  }

  private spawn(w: WorkerState): void {
    w.ready = false;
    w.failure = undefined;
    // A new process reads the file afresh: what was held for the one before is done.
    w.held = undefined;
    w.startedAt = Date.now();
    // Our own worker: it gets what a start needs, nothing else we run does.
    const proc: Subprocess = spawnWithCapabilities(() => Bun.spawn([...selfCommand(), ...this.argv], {
      stdio: ["ignore", "inherit", "inherit"],
      // Only the supervisor talks to the service manager: a worker is never the unit's main process.
      // An upgrade's workers name the instance they replace (its leader, our predecessor).
      env: childEnv({ [WORKER_ENV]: String(w.index), ...(w.admin ? { [WORKER_ADMIN_ENV]: w.admin } : {}), [UPGRADE_ENV]: "", [INSTANCE_FROM_ENV]: process.env[UPGRADE_ENV] ?? "" }, ["NOTIFY_SOCKET"]),
      ipc: (message) => {
        if (w.proc !== proc) return;
        const m = message as { op?: string; startup?: StartupFacts; line?: unknown; code?: unknown; reason?: unknown; why?: unknown };
        if (m?.op === "ready") {
          w.ready = true;
          for (const signal of w.held ?? []) proc.kill(signal);
          w.held = undefined;
          w.startup = m.startup;
          // A restarted worker: its sockets and cap are those of the first start; one line says it is back.
          if (!this.starting) this.say(`worker ${w.index} (pid ${proc.pid}) serves again`);
          this.wakeStart?.();
        } else if (m?.op === "failed" && typeof m.line === "string") {
          w.failure = { line: m.line, code: typeof m.code === "number" ? m.code : 1 };
          // While starting, start() says the first failure once; later, each is this worker's own.
          if (!this.starting) this.say(`worker ${w.index}: ${m.line}`);
        } else if (m?.op === "leave" && typeof m.reason === "string") {
          // Another instance took this one over (--take-over): its workers watch the instance's
          // record (they keep CAP_BPF; this process keeps none) and the first to see it says so.
          this.leave(m.reason);
        } else if (m?.op === "lost") this.steeringLost(w, String(m.why ?? "unknown"));
      },
      onExit: (_p, code, signal): void => this.exited(w, proc, code, signal),
    }));
    w.proc = proc;
  }

  private exited(w: WorkerState, proc: Subprocess, code: number | null, signal: number | string | null): void {
    if (w.proc !== proc) return;
    w.ready = false;
    // While starting, a worker that exits fails the start (start() reports it) instead of looping.
    if (this.stopping || this.starting) return;
    const lived = Date.now() - w.startedAt;
    w.backoffMs = lived >= STABLE_MS ? 100 : Math.min(MAX_BACKOFF_MS, w.backoffMs * 2);
    const pause = lived >= STABLE_MS ? 0 : w.backoffMs;
    this.say(`worker ${w.index} (pid ${proc.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}; restarting it${pause ? ` in ${pause} ms` : ""}`);
    w.restarts++;
    setTimeout(() => {
      if (!this.stopping) this.spawn(w);
    }, pause);
  }

  /**
   * The instance's steering is gone (server/watchdog.ts): a worker said so and
   * drains. The whole instance stops (every worker drains) and run() exits 1:
   * a restarted worker would pin and steer anew behind `down --force`'s back.
   */
  lost: string | undefined;
  private steeringLost(w: WorkerState, why: string): void {
    if (this.lost) return;
    this.lost = why;
    this.say(`worker ${w.index} lost the steering (${why}): every worker drains, then exit 1`);
    void this.stop("drain");
  }

  /** Start every worker; resolves when all serve, rejects (after stopping them) if one exits first. */
  async start(): Promise<void> {
    for (const w of this.workers) this.spawn(w);
    const deadline = Date.now() + 60_000;
    while (!this.workers.every((w) => w.ready)) {
      const dead = this.workers.find((w) => w.proc && (w.proc.exitCode !== null || w.proc.signalCode !== null));
      if (dead || Date.now() > deadline) {
        this.stopping = "now";
        // Its "failed" message was sent before it exited; give it a moment to arrive.
        for (let i = 0; dead && !dead.failure && i < 25; i++) await Bun.sleep(20);
        await this.signalAll("SIGTERM");
        // Workers fail alike (the same config, the same kernel): the first one's reason is said once, with its exit code (whose fault).
        if (dead?.failure) throw new WorkerStartError(dead.failure.line, dead.failure.code);
        const how = dead && (dead.proc!.signalCode ? `was killed by ${dead.proc!.signalCode}` : `exited with code ${dead.proc!.exitCode}`);
        throw new WorkerStartError(dead ? `worker ${dead.index} ${how} while starting` : "workers were not ready within 60 s", dead?.proc?.exitCode || 1);
      }
      // Woken by a worker's "ready" at once (the poll only notices exits and the deadline).
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 20);
        this.wakeStart = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    this.wakeStart = undefined;
    this.starting = false;
  }

  /** Send a signal to every live worker and wait for them to exit (SIGKILL after a grace period). */
  private async signalAll(signal: NodeJS.Signals, graceMs = STOP_GRACE_MS): Promise<void> {
    const live = this.workers.map((w) => w.proc).filter((p): p is Subprocess => !!p && p.exitCode === null && p.signalCode === null);
    for (const p of live) p.kill(signal);
    const timer = setTimeout(() => {
      for (const p of live) if (p.exitCode === null) p.kill("SIGKILL");
    }, graceMs);
    await Promise.all(live.map((p) => p.exited));
    clearTimeout(timer);
  }

  /**
   * Send `signal` to every worker; one still starting gets it once it says ready: before its handlers
   * are in, SIGHUP's and SIGUSR1's default action would end it (a start that fails, or a restart).
   */
  forward(signal: NodeJS.Signals): void {
    for (const w of this.workers) {
      if (!w.proc || w.proc.exitCode !== null) continue;
      if (w.ready) w.proc.kill(signal);
      else (w.held ??= new Set()).add(signal);
    }
  }

  /** Start the next supervisor (and its workers) and, once it serves, drain ours. */
  upgrade(binary?: string): Promise<string> {
    this.upgrading ??= startSuccessor(this.argv, binary).then(
      (pid) => {
        this.successor = pid;
        // The successor answers on the admin path now: kept-alive clients must not go on reading ours.
        this.admin?.handOver?.();
        for (const line of announceSuccessor(pid)) this.say(line);
        void this.stop("drain");
        // Said here too, however the upgrade was asked: a terminal that started this process learns where its successor went.
        const line = `new edgeproxy pid ${pid} serves and logs to ${logsOf(pid)}; pid ${process.pid} and its workers drain (at most ${(this.config.drainTimeoutMs ?? DRAIN_TIMEOUT_MS) / 1000} s)`;
        this.say(line);
        return line;
      },
      (e) => {
        this.upgrading = undefined;
        throw e;
      },
    );
    return this.upgrading;
  }

  private admin: AdminServer | undefined;
  private stopped: Promise<void> | undefined;
  private wakeStopped: (() => void) | undefined;

  /** Stop every worker: at once (SIGTERM) or by draining (SIGQUIT). */
  stop(how: "now" | "drain"): Promise<void> {
    if (this.stopping) {
      // SIGTERM/SIGINT during a drain stop at once: the workers cut what is still open.
      if (this.stopping === "drain" && how === "now") {
        this.stopping = "now";
        this.say("stopping now: the draining workers cut their open connections");
        for (const w of this.workers) if (w.proc && w.proc.exitCode === null) w.proc.kill("SIGTERM");
      }
      return this.stopped!;
    }
    this.stopping = how;
    // An upgrade's old supervisor is no longer the unit's main process: STOPPING=1 from it would stop the unit.
    if (this.successor === undefined && !this.starting) for (const line of announceStopping()) this.say(line);
    const grace = how === "drain" ? (this.config.drainTimeoutMs ?? DRAIN_TIMEOUT_MS) + STOP_GRACE_MS : STOP_GRACE_MS;
    this.stopped = this.signalAll(how === "drain" ? "SIGQUIT" : "SIGTERM", grace).then(() => {
      if (this.runtime) rmSync(this.runtime, { recursive: true, force: true });
      this.wakeStopped?.();
    });
    return this.stopped;
  }

  /** What the file asks that a reload cannot apply: "" or "; not applied, ...". */
  async restartNotes(): Promise<string> {
    if (!this.reread) return "";
    return describeRestart(restartNeeded(this.config, await this.reread().catch(() => this.config)));
  }

  private leaving: string | undefined;

  /** Told to leave (a worker saw another instance take this one over): drain every worker, once serving. */
  private leave(reason: string): void {
    if (this.stopping || this.upgrading || this.leaving) return;
    this.leaving = reason;
    if (this.starting) return; // run() acts on it once the start is over.
    this.say(`${reason}: draining its workers`);
    void this.stop("drain");
  }

  /** Run until stopped. Resolves to the exit code. */
  async run(): Promise<number> {
    const say = this.say;
    const t0 = performance.now();
    let admin: AdminServer = { address: "off", close() {} };
    process.on("SIGINT", () => void this.stop("now"));
    process.on("SIGTERM", () => void this.stop("now"));
    process.on("SIGQUIT", () => void this.stop("drain"));
    process.on("SIGHUP", () => {
      this.forward("SIGHUP");
      void this.restartNotes().then((notes) => notes && say(`reload${notes}`));
    });
    // logrotate: the workers write the access logs; each reopens its own.
    process.on("SIGUSR1", () => this.forward("SIGUSR1"));
    process.on("SIGUSR2", () => {
      say("SIGUSR2: upgrading");
      this.upgrade().catch((e) => say(`upgrade failed: ${(e as Error).message}`));
    });
    const ready = untilReady(() => void this.stop("now"));
    try {
      await this.start();
    } catch (e) {
      if (!(e instanceof WorkerStartError)) throw e;
      say(e.message);
      return e.code;
    }
    // Evaluated here, once the workers serve (as serve's admin/api.ts): not on the way to the first steered connection.
    const { supervisorApp } = await import("./supervisor-admin");
    admin = await startAdminServer({} as never, this.config.admin, { replace: !!process.env[UPGRADE_ENV] || this.config.takeOver, app: supervisorApp(this) });
    this.admin = admin;
    for (const line of describeStartup(this.workers.flatMap((w) => (w.startup ? [w.startup] : [])))) say(line);
    if (admin.address !== "off") say(`admin API on ${admin.address}`);
    say(`${this.workers.length} workers: pids ${this.workers.map((w) => w.proc!.pid).join(", ")}`);
    for (const line of announceServing(this.config.pidFile)) say(line);
    // Serving: a supervisor touches no BPF object and no socket of the data plane.
    dropUnusedCapabilities("supervisor");
    say(`ready (setup ${(performance.now() - t0).toFixed(1)} ms)`);
    if (this.config.pidFile) process.on("exit", () => removePidFile(this.config.pidFile!));
    ready();
    announceReady();
    if (this.leaving) {
      say(`${this.leaving}: draining its workers`);
      void this.stop("drain");
    }
    const hold = setInterval(() => {}, 1 << 30);
    await new Promise<void>((resolve) => {
      this.wakeStopped = resolve;
      if (this.stopped) void this.stopped.then(resolve);
    });
    clearInterval(hold);
    // An upgrade's own request may still be being answered.
    await (admin.closeGracefully?.() ?? admin.close());
    say(`${this.stopping === "drain" ? "drained" : "stopped"} ${this.workers.length} workers`);
    return this.lost ? 1 : 0;
  }
}
