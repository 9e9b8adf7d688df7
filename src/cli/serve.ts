import type { ServeConfig } from "../config/service";
import { startAdminServer, type AdminServer } from "../admin/server";
import { describeBindings } from "../server/bindings";
import { serverBackend } from "../server/admin";
import { describeReload, reload } from "../server/reload";
import { Server } from "../server/server";
import { dropUnusedCapabilities } from "../system/capabilities";
import { announceReady, startSuccessor, untilReady, UPGRADE_ENV } from "./upgrade";
import { announceServing, announceStopping, announceSuccessor, logsOf, removePidFile } from "./supervision";
import { describeRestart, restartNeeded } from "../config/restart";
import { VERSION } from "../version";
import { reopenAccessLogs } from "../log/access";
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
    signal ??= name;
    stop ??= how;
    wake?.();
  };
  process.on("SIGINT", () => onSignal("SIGINT", "now"));
  process.on("SIGTERM", () => onSignal("SIGTERM", "now"));
  process.on("SIGQUIT", () => onSignal("SIGQUIT", "drain"));
  // logrotate's postrotate: reopen the access logs (SIGUSR1's default action would end the process).
  process.on("SIGUSR1", reopenAccessLogs);
  // A worker whose supervisor is gone drains and leaves: nothing would restart or stop it.
  if (!leader) process.on("disconnect", () => onSignal("supervisor gone", "drain"));
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
    server = await Server.start(config, image, role.worker ?? 0);
    try {
      await server.planes.started();
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
      const backend = { ...base, ...(leader ? leaderOnly : {}) };
      const adminConfig = role.workerAdmin ? { kind: "unix" as const, path: role.workerAdmin } : leader ? config.admin : { kind: "off" as const };
      admin = await startAdminServer(backend, adminConfig, { replace: leader && !!process.env[UPGRADE_ENV] });
      // Started: keep only what serving still uses (src/system/capabilities.ts).
      dropUnusedCapabilities(leader ? "serve" : "worker");
    } catch (e) {
      server.close();
      throw e;
    }
  } catch (e) {
    return role.report(e);
  }
  for (const line of describeBindings(server.config.services)) say(line);
  for (const [name, r] of server.running) for (const s of r.sockets) say(`service ${name}: ipv${s.family} socket ${s.address} (fd ${s.fd})`);
  say(`dispatcher ${server.report.createdPins ? "created and pinned at" : "joined at"} ${server.report.pinDir}`);
  const upgraded = server.report.programUpgrade;
  if (upgraded) say(`dispatcher program upgraded from tag ${upgraded.from} to ${upgraded.to} (maps kept${upgraded.created.length ? `; created ${upgraded.created.join(", ")}` : ""})`);
  say(`at most ${server.report.maxConnections} open connections${server.report.maxFlows ? ` and ${server.report.maxFlows} UDP flows` : ""}`);
  if (admin.address !== "off" && leader) say(`admin API on ${admin.address}`);
  if (server.report.skipped.length) {
    say(`left alone ${server.report.skipped.length} already-listening socket(s): ${server.report.skipped.join(", ")} (--take-over steers them too)`);
  }
  // SIGHUP re-reads the config file; a bad file changes nothing.
  process.on("SIGHUP", () => {
    reload(server).then(
      async (r) => say(`reloaded ${server.config.source}: ${describeReload(r)}${await restartNotes()}`),
      (e) => say(`reload rejected, nothing changed: ${(e as Error).message}`),
    );
  });
  if (leader) {
    process.on("SIGUSR2", () => {
      say("SIGUSR2: upgrading");
      upgrade().catch((e) => say(`upgrade failed: ${(e as Error).message}`));
    });
  }
  // The kernel's refusals in the access logs: one process per instance (the counters are shared).
  if ((role.worker ?? 0) === 0) kernelRefusals(server);
  if (leader) for (const line of announceServing(config.pidFile)) say(line);
  say(`ready (setup ${(performance.now() - t0).toFixed(1)} ms)`);
  ready();
  announceReady();
  // Serving holds the event loop open itself: signal handlers do not count as
  // work for Bun, and with nothing else referenced (a UDP-only server's
  // sockets live in an unref'd worker) its loop spins at 100% of a core.
  const hold = setInterval(() => {}, 1 << 30);
  if (!stop) await new Promise<void>((resolve) => (wake = resolve));
  clearInterval(hold);
  // An upgrade's old process is no longer the unit's main process: STOPPING=1 from it would stop the unit.
  if (leader && successor === undefined) for (const line of announceStopping()) say(line);
  if (leader && config.pidFile) process.on("exit", () => removePidFile(config.pidFile!));
  try {
    for (const line of server.summary()) say(line);
  } catch (e) {
    say(`counters unavailable: ${(e as Error).message}`);
  }
  try {
    if (stop === "drain") {
      say(`${signal}: draining: no new connections; open ones may finish within ${drainMs / 1000} s`);
      const cut = await server.drain(drainMs);
      // An upgrade's own request is still being answered here.
      await (admin.closeGracefully?.() ?? admin.close());
      say(`${signal}: drained${cut ? `; cut ${cut} connection(s) still open at the drain timeout` : ""}; stopped`);
      return 0;
    }
    admin.close();
    server.close();
  } catch (e) {
    return role.report(e);
  }
  say(`${signal}: withdrew its services from the dispatcher and stopped`);
  return 0;
}
