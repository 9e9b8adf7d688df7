import type { ServeConfig } from "../config/service";
import { startAdminServer, type AdminServer } from "../admin/server";
import { serverBackend } from "../server/admin";
import { describeReload, reload } from "../server/reload";
import { Server } from "../server/server";
import { describeStartup, startupFacts } from "./startup";
import { announceReady, startSuccessor, untilReady, UPGRADE_ENV } from "./upgrade";

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
  // A worker whose supervisor is gone drains and leaves: nothing would restart or stop it.
  if (!leader) process.on("disconnect", () => onSignal("supervisor gone", "drain"));
  const ready = leader ? untilReady(() => onSignal("the upgrading process went away first", "now")) : () => {};

  let server: Server;
  let admin: AdminServer;
  let upgrading: Promise<string> | undefined;
  const upgrade = (binary?: string): Promise<string> => {
    upgrading ??= startSuccessor(role.argv, binary).then(
      (pid) => {
        onSignal(`upgrade to pid ${pid}`, "drain");
        return `new edgeproxy pid ${pid} serves; pid ${process.pid} drains (at most ${drainMs / 1000} s)`;
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
      const backend = { ...serverBackend(server), ...(leader ? { upgrade } : {}) };
      const adminConfig = role.workerAdmin ? { kind: "unix" as const, path: role.workerAdmin } : leader ? config.admin : { kind: "off" as const };
      admin = await startAdminServer(backend, adminConfig, { replace: leader && !!process.env[UPGRADE_ENV] });
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
  // SIGHUP re-reads the config file; a bad file changes nothing.
  process.on("SIGHUP", () => {
    reload(server).then(
      (r) => say(`reloaded ${server.config.source}: ${describeReload(r)}`),
      (e) => say(`reload rejected, nothing changed: ${(e as Error).message}`),
    );
  });
  if (leader) {
    process.on("SIGUSR2", () => {
      say("SIGUSR2: upgrading");
      upgrade().then(say, (e) => say(`upgrade failed: ${(e as Error).message}`));
    });
  }
  if (leader) say(`ready (setup ${(performance.now() - t0).toFixed(1)} ms)`);
  ready();
  announceReady(leader ? {} : { startup: facts, setupMs: performance.now() - t0 });
  // Serving holds the event loop open itself: signal handlers do not count as
  // work for Bun, and with nothing else referenced (a UDP-only server's
  // sockets live in an unref'd worker) its loop spins at 100% of a core.
  const hold = setInterval(() => {}, 1 << 30);
  if (!stop) await new Promise<void>((resolve) => (wake = resolve));
  clearInterval(hold);
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
