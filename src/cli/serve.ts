import { rmdirSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import type { ServeConfig } from "../config/service";
import { startAdminServer, type AdminServer } from "../admin/server";
import { claimOf } from "../server/instance";
import { serverBackend } from "../server/admin";
import { describeReload, reload } from "../server/reload";
import { Server } from "../server/server";
import { dropUnusedCapabilities } from "../system/capabilities";
import { describeStartup, startupFacts } from "./startup";
import { announceReady, startSuccessor, tellSupervisor, untilReady, UPGRADE_ENV } from "./upgrade";
import { announceServing, announceStopping, announceSuccessor, logsOf, removePidFile } from "./supervision";
import { describeRestart, restartNeeded } from "../config/restart";
import { VERSION } from "../version";
import { ConfigError } from "../errors";
import { SteeringWatchdog } from "../server/watchdog";
import { reopenAccessLogs } from "../log/access";
import { startPhase } from "../system/starttrace";
import { kernelRefusals } from "../server/refusals";

/** Default --drain-timeout. */
export const DRAIN_TIMEOUT_MS = 30_000;

/** Who this serving process is: the only one (leader), or worker `worker` of a supervisor. */
export interface ServeRole {
  readonly worker?: number;
  /** A worker's private admin socket, which its supervisor queries. */
  readonly workerAdmin?: string;
  /** The arguments to start a successor with (a leader's own). */
  readonly argv: readonly string[];
  readonly say: (line: string) => void;
  readonly report: (e: unknown) => number;
  /** The config as a restart would read it now (file and command line), for what a reload cannot apply; absent without --config. */
  readonly reread?: () => Promise<ServeConfig>;
}

/**
 * Serve `config` in this process until a signal: SIGINT/SIGTERM stop at once
 * (connections are cut), SIGQUIT drains (stop accepting, finish open
 * connections within the drain timeout), SIGHUP reloads the file. A leader
 * also upgrades on SIGUSR2 or POST /upgrade: it starts its successor, waits
 * until that serves, then drains. Resolves to the exit code.
 */
export async function serveInProcess(config: ServeConfig, image: Uint8Array, role: ServeRole): Promise<number> {
  const { say } = role;
  const leader = role.worker === undefined;
  const drainMs = config.drainTimeoutMs ?? DRAIN_TIMEOUT_MS;
  // Handlers go in before anything is created, so a signal at any point of
  // startup still ends in a full teardown and exit 0.
  let stop: "now" | "drain" | undefined;
  let signal: string | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (name: string, how: "now" | "drain") => {
    // SIGTERM/SIGINT during a drain stop at once, as they would have before it: what is open is cut.
    if (stop === "drain" && how === "now" && !hurried) {
      hurried = true;
      say(`${name} while draining (${signal}): cutting the open connections now`);
      hurry?.();
    }
    signal ??= name;
    stop ??= how;
    wake?.();
  };
  let hurried = false;
  let hurry: (() => void) | undefined;
  process.on("SIGINT", () => onSignal("SIGINT", "now"));
  process.on("SIGTERM", () => onSignal("SIGTERM", "now"));
  process.on("SIGQUIT", () => onSignal("SIGQUIT", "drain"));
  // logrotate's postrotate: reopen the access logs (SIGUSR1's default action would end the process).
  process.on("SIGUSR1", reopenAccessLogs);
  // A reload (SIGHUP: `systemctl reload` just after a start) or upgrade (SIGUSR2) asked while starting is
  // held until ready, then done: the signals' default action would end the process half-started, its
  // dispatcher pinned and its service registered with no socket (a crash, not a refusal).
  let serving = false;
  const held = new Set<"SIGHUP" | "SIGUSR2">();
  const onReload = () =>
    reload(server).then(
      async (r) => say(`reloaded ${server.config.source}: ${describeReload(r)}${await restartNotes()}`),
      (e) => say(`reload rejected, nothing changed: ${(e as Error).message}`),
    );
  const onUpgrade = () => {
    say("SIGUSR2: upgrading");
    upgrade().catch((e) => say(`upgrade failed: ${(e as Error).message}`));
  };
  process.on("SIGHUP", () => {
    if (stop) say(`SIGHUP: not reloaded, this process is stopping (${signal})`);
    else if (serving) void onReload();
    else held.add("SIGHUP");
  });
  if (leader) process.on("SIGUSR2", () => (serving ? onUpgrade() : held.add("SIGUSR2")));
  // A worker whose supervisor is gone (killed: a crash, not a stop) keeps
  // serving, so its ports stay steered to its instance's sockets and never
  // reach another socket; it drains and exits once a newer instance's
  // sockets join its slots (the watchdog), or on SIGTERM/SIGQUIT.
  let orphaned = false;
  let watchdog: SteeringWatchdog | undefined;
  if (!leader) {
    process.on("disconnect", () => {
      if (stop) return;
      orphaned = true;
      watchdog?.watchForSuccessor();
      say(`supervisor gone: keeps serving its ports until a new instance takes them over (then drains and exits), or SIGTERM/SIGQUIT`);
    });
  }
  const ready = leader ? untilReady(() => onSignal("the upgrading process went away first", "now")) : () => {};

  let server: Server;
  let admin: AdminServer;
  // What the file asks that a reload cannot apply (the leader's to say; a supervisor says it for its workers).
  const restartNotes = async () => (leader && role.reread ? describeRestart(restartNeeded(config, await role.reread().catch(() => config))) : "");
  let upgrading: Promise<string> | undefined;
  let successor: number | undefined;
  const upgrade = (binary?: string): Promise<string> => {
    upgrading ??= startSuccessor(role.argv, binary).then(
      (pid) => {
        // The successor answers on the admin path now: kept-alive clients must not go on reading ours.
        admin?.handOver?.();
        successor = pid;
        for (const line of announceSuccessor(pid)) say(line);
        onSignal(`upgrade to pid ${pid}`, "drain");
        // Said here too, however the upgrade was asked: a terminal that started this process learns where its successor went.
        const line = `new edgeproxy pid ${pid} serves and logs to ${logsOf(pid)}; pid ${process.pid} drains (at most ${drainMs / 1000} s)`;
        say(line);
        return line;
      },
      (e) => {
        upgrading = undefined;
        throw e;
      },
    );
    return upgrading;
  };
  const t0 = performance.now();
  try {
    server = await Server.start(config, image, role.worker ?? 0, claimOf(config, !leader));
    try {
      await server.planes.started();
      startPhase("data planes started");
      watchdog = steeringWatchdog(server, role, (how) => onSignal(how, "drain"), () => orphaned, () => !!upgrading);
      const dog = watchdog;
      const base = serverBackend(server);
      const started = Date.now() / 1000;
      const leaderOnly = {
        upgrade,
        identity: () => ({ instance: config.instance, pid: process.pid, ...(config.source ? { source: config.source } : {}), workers: 1, version: VERSION, startedAt: started }),
        drain: () => {
          onSignal("POST /drain", "drain");
          return `pid ${process.pid} takes no new connections; open ones may finish within ${drainMs / 1000} s, then it exits`;
        },
        reload: async () => `${(await base.reload()) ?? ""}${await restartNotes()}`,
      };
      // /healthz and /status tell whether this process's traffic is steered to it, checked when asked.
      // A stopping process withdraws its services as it goes: a binding or reload it took now would be
      // undone by its own withdrawal (a 201 for a change that does not last), so none is taken.
      const stopping = () => {
        if (stop) throw new ConfigError("admin", `pid ${process.pid} is ${stop === "drain" ? "draining" : "stopping"} (${signal}): nothing changed`);
      };
      const changes = {
        addBinding: (...a: Parameters<typeof base.addBinding>) => (stopping(), base.addBinding(...a)),
        removeBinding: (...a: Parameters<typeof base.removeBinding>) => (stopping(), base.removeBinding(...a)),
      };
      const reloads = { reload: async () => (stopping(), (leader ? leaderOnly : base).reload()) };
      const backend = { ...base, ...(leader ? leaderOnly : {}), ...changes, ...reloads, health: () => dog.health(), status: () => ({ ...base.status(), steering: dog.health() ?? "ok" }) };
      const adminConfig = role.workerAdmin ? { kind: "unix" as const, path: role.workerAdmin } : leader ? config.admin : { kind: "off" as const };
      admin = await startAdminServer(backend, adminConfig, { replace: leader && (!!process.env[UPGRADE_ENV] || config.takeOver) });
      // Started: keep only what serving still uses (src/system/capabilities.ts).
      startPhase("admin API started");
      dropUnusedCapabilities(leader ? "serve" : "worker");
    } catch (e) {
      server.close();
      throw e;
    }
  } catch (e) {
    return role.report(e);
  }
  // A worker's startup is said once for the instance, by its supervisor (with every worker's facts).
  const facts = startupFacts(server);
  if (leader) {
    for (const line of describeStartup([facts])) say(line);
    if (admin.address !== "off") say(`admin API on ${admin.address}`);
  }
  // The kernel's refusals in the access logs: one process per instance (the counters are shared).
  if ((role.worker ?? 0) === 0) kernelRefusals(server);
  if (leader) {
    for (const line of announceServing(config.pidFile)) say(line);
    say(`ready (setup ${(performance.now() - t0).toFixed(1)} ms)`);
  }
  startPhase("ready");
  ready();
  // SIGHUP re-reads the config file (a bad file changes nothing); SIGUSR2 upgrades. Held ones now.
  serving = true;
  if (!stop && held.has("SIGHUP")) {
    say("SIGHUP while starting: reloading now");
    void onReload();
  }
  if (!stop && held.has("SIGUSR2")) onUpgrade();
  announceReady(leader ? {} : { startup: facts, setupMs: performance.now() - t0 });
  watchdog!.start();
  if (orphaned) watchdog!.watchForSuccessor();
  // Serving holds the event loop open itself: signal handlers do not count as
  // work for Bun, and with nothing else referenced (a UDP-only server's
  // sockets live in an unref'd worker) its loop spins at 100% of a core.
  const hold = setInterval(() => {}, 1 << 30);
  if (!stop) await new Promise<void>((resolve) => (wake = resolve));
  clearInterval(hold);
  // An upgrade's old process is no longer the unit's main process: STOPPING=1 from it would stop the unit.
  if (leader && successor === undefined) for (const line of announceStopping()) say(line);
  if (leader && config.pidFile) process.on("exit", () => removePidFile(config.pidFile!));
  // A loss found from here on is our own withdrawal.
  const lost = watchdog!.lost;
  watchdog!.stop();
  // The data plane's thread posts some counters a little late (http on the engine): the summary waits for them (bounded).
  await server.planes.sync();
  try {
    for (const line of server.summary()) say(line);
  } catch (e) {
    say(`counters unavailable: ${(e as Error).message}`);
  }
  try {
    if (stop === "drain") {
      say(`${signal}: draining: no new connections; open ones may finish within ${drainMs / 1000} s`);
      hurry = () => server.hurry();
      if (hurried) hurry();
      const cut = await server.drain(drainMs);
      // An upgrade's own request is still being answered here.
      await (admin.closeGracefully?.() ?? admin.close());
      say(`${signal}: drained${cut ? `; cut ${cut} connection(s) still open ${hurried ? "when told to stop now" : "at the drain timeout"}` : ""}; stopped`);
      if (orphaned) removeWorkerAdmin(role.workerAdmin);
      return lost ? 1 : 0;
    }
    admin.close();
    server.close();
  } catch (e) {
    return role.report(e);
  }
  say(`${signal}: withdrew its services from the dispatcher and stopped`);
  if (orphaned) removeWorkerAdmin(role.workerAdmin);
  return lost ? 1 : 0;
}

/**
 * The instance's steering watchdog (server/watchdog.ts): on a loss, one line,
 * the supervisor told (it stops the instance, exit 1), and this process
 * drains; an orphaned worker drains when a newer instance joins its slots.
 * When another instance takes this one over (--take-over; its record says
 * so), a single serve drains, and a worker tells its supervisor, which
 * drains every worker (workers read the record: they keep CAP_BPF, the
 * supervisor none); not while our own upgrade hands the record over.
 */
function steeringWatchdog(server: Server, role: ServeRole, drain: (why: string) => void, orphaned: () => boolean, upgrading: () => boolean): SteeringWatchdog {
  // role.say names the worker.
  return new SteeringWatchdog(server, {
    lost: (why) => {
      role.say(`steering lost: ${why}; new connections to its ports are refused: draining, then exit 1 (a restart steers anew)`);
      tellSupervisor({ op: "lost", why });
      drain("steering lost");
    },
    replaced: () => {
      if (orphaned()) drain("a new instance took over its ports");
    },
    leave: (reason) => {
      if (upgrading()) return false;
      // An orphaned worker (its supervisor gone) says it as the replacement it is.
      if (orphaned()) drain("a new instance took over its ports");
      else if (role.worker === undefined || !tellSupervisor({ op: "leave", reason })) drain(reason);
      return true;
    },
  });
}

/** An orphaned worker's private admin socket, and the supervisor's directory of them once empty (nobody else removes it). */
function removeWorkerAdmin(path: string | undefined): void {
  if (!path) return;
  rmSync(path, { force: true });
  try {
    rmdirSync(dirname(path));
  } catch {
    // A sibling worker's socket is still there: the last one out removes the directory.
  }
}

