import { join } from "node:path";
import { ConfigError, EdgeError, EnvironmentError, errorLine } from "../errors";
import { dispatcherImage } from "../dispatcher/image";
import { availableParallelism } from "node:os";
import type { ServeConfig } from "../config/service";
import { VERSION } from "../version";
import { loadConfig } from "../config/file";
import { serveInProcess } from "./serve";
import { checkAccessLogs } from "../log/access";
import { checkEnvironment, checkPinAccess, permissionProblem } from "../system/environment";
import { bpffsPath, pinDir } from "../dispatcher/pins";
import { holdAmbientCapabilities } from "../system/capabilities";
import { refuseSelfReach } from "../server/bindings";
import { ControlPlane } from "../dispatcher/controlplane";
import { pidnsInode } from "../dispatcher/instances";
import { claimOf, wantedOf } from "../server/instance";
import { Supervisor, WORKER_ADMIN_ENV, WORKER_ENV } from "./supervisor";
import { connectionShare } from "../server/server";
import { parseArgs, type ServeOverrides } from "./args";
import { statusView } from "./instances";
import { checkPidFile, refuseOthersPidFile } from "./supervision";
import { checkAdminFree } from "../admin/server";
import { tellSupervisor, UPGRADE_ENV } from "./upgrade";
import { INSTANCE_COMMANDS, parseInstanceCommand, runInstanceCommand, type InstanceCommand } from "./instance-commands";
import { parseCount, WORKER_BOUNDS } from "../config/numbers";
import { CONTROL_COMMANDS, parseControl, runControl } from "./control";
import { LIVE_COMMANDS, parseLive, runLive, type LiveCommand } from "./live";
import { COMMANDS, commandHelp, manPage, overview, wantsHelp } from "./help";
import { completion } from "./completion";
import { startPhase } from "../system/starttrace";

const say = (line: string) => process.stderr.write(`edgeproxy: ${line}\n`);

/**
 * Write to stdout and wait until all of it is written: process.stdout.write
 * only queues, and the process.exit that follows main() drops whatever a slow
 * reader has not taken yet (seen: --json output cut at the 64 KiB pipe buffer).
 */
async function print(text: string): Promise<void> {
  await Bun.write(Bun.stdout, text);
}

/** An error's one line and exit code: 2 for the operator's input or the environment, 1 for runtime failures. */
function explain(e: unknown): { line: string; code: number } {
  e = permissionProblem(e) ?? e;
  if (e instanceof ConfigError || e instanceof EnvironmentError || (e instanceof EdgeError && e.fault === "config")) return { line: e.message, code: 2 };
  if (e instanceof EdgeError) return { line: e.message, code: 1 };
  return { line: `internal error: ${errorLine(e)}`, code: 1 };
}

/** Say an error's line; its exit code. */
function report(e: unknown): number {
  const { line, code } = explain(e);
  say(line);
  return code;
}

/**
 * A worker's report of an error that ends its start: sent to its supervisor,
 * which says it once for all workers (they usually fail alike), and said here
 * only when there is no supervisor to tell.
 */
function workerReport(e: unknown): number {
  const { line, code } = explain(e);
  // A worker whose supervisor is gone (it drains on "disconnect") says it itself.
  if (!tellSupervisor({ op: "failed", line, code })) say(line);
  return code;
}

/**
 * The process's entry: main() with nothing escaping as a stack trace. A
 * throw main() does not catch, or one from a callback later (an uncaught
 * exception, an unhandled rejection), is one line and exit 1, as Bun would
 * have exited, so a supervisor still restarts a worker that hit a bug.
 */
export async function run(args: readonly string[]): Promise<number> {
  const crash = (e: unknown) => {
    say(`internal error: ${errorLine(e)}`);
    process.exit(1);
  };
  process.on("uncaughtException", crash);
  process.on("unhandledRejection", crash);
  try {
    return await main(args);
  } catch (e) {
    return report(e);
  }
}

/** Run the CLI; resolves to the process exit code. */
export async function main(args: readonly string[]): Promise<number> {
  // Help before any parsing: `COMMAND --help` is help whatever else is on the line.
  try {
    const help = helpText(args);
    if (help !== undefined) {
      await print(help);
      return 0;
    }
  } catch (e) {
    return report(e);
  }
  if ((INSTANCE_COMMANDS as readonly string[]).includes(args[0] ?? "")) {
    try {
      const command = args[0] as InstanceCommand;
      return await runInstanceCommand(command, parseInstanceCommand(command, args.slice(1)), print);
    } catch (e) {
      return report(e);
    }
  }
  if ((LIVE_COMMANDS as readonly string[]).includes(args[0] ?? "")) {
    try {
      const command = args[0] as LiveCommand;
      return await runLive(command, parseLive(command, args.slice(1)), print);
    } catch (e) {
      return report(e);
    }
  }
  if ((CONTROL_COMMANDS as readonly string[]).includes(args[0] ?? "")) {
    try {
      const { command, options } = parseControl(args);
      const view = command.kind === "status" ? await statusView(options.instance) : undefined;
      const lines: string[] = [];
      const code = runControl(command, options, await dispatcherImage(), (line) => lines.push(`${line}\n`), view);
      await print(lines.join(""));
      return code;
    } catch (e) {
      return report(e);
    }
  }
  let command;
  try {
    command = parseArgs(args);
    if (command.kind === "serve") command = { ...command, config: { ...command.config, workers: command.config.workers ?? defaultWorkers() } };
  } catch (e) {
    return report(e);
  }
  if (command.kind === "help") {
    await print(overview());
    return 0;
  }
  if (command.kind === "version") {
    await print(`edgeproxy ${VERSION}\n`);
    return 0;
  }
  let config: ServeConfig;
  let worker: number | undefined;
  let image: Uint8Array;
  try {
    config = command.kind === "serve" ? command.config : await fileConfig(command);
    // Set by our supervisor only, but checked as any input is.
    const index = process.env[WORKER_ENV];
    worker = index === undefined || index === "" ? undefined : parseCount(index, `$${WORKER_ENV}`, { min: 0, max: WORKER_BOUNDS.max! - 1 });
    image = await dispatcherImage();
    startPhase("config parsed, BPF image read");
  } catch (e) {
    return report(e);
  }
  const argv = [...args];
  try {
    // Whatever this process may exec besides its own workers and successor gets no capability.
    holdAmbientCapabilities();
  } catch (e) {
    return report(e);
  }
  if (worker !== undefined) {
    const index = worker;
    const say = (line: string) => process.stderr.write(`edgeproxy: worker ${index}: ${line}\n`);
    return serveInProcess(config, image, { worker: index, workerAdmin: process.env[WORKER_ADMIN_ENV] || undefined, argv, say, report: workerReport });
  }
  // A running serve's re-read (what a reload cannot apply): a FIFO is refused there, as reload() refuses it.
  const reread = command.kind === "serve-file" ? () => fileConfig(command, true) : undefined;
  try {
    // Privileges first: without them nothing below can be read, and the missing ones are what to fix.
    checkEnvironment();
    const bpffs = bpffsPath(config.bpffs);
    checkPinAccess(join(bpffs, "edgeproxy"), pinDir(bpffs));
    // Before anything changes: a pid file we could not write, a live instance in the way (not the one an
    // upgrade replaces, nor with --take-over), or an admin socket another serve answers on, is one line and exit 2.
    if (config.pidFile) checkPidFile(config.pidFile);
    if (config.pidFile && !config.takeOver && !process.env[UPGRADE_ENV]) {
      // Pins it cannot read here are for the start itself to say (as refuseConflict leaves them).
      const live = (() => {
        try {
          return ControlPlane.live(bpffs, image);
        } catch {
          return [];
        }
      })();
      refuseOthersPidFile(config.pidFile, config.instance, live, pidnsInode());
    }
    if (!config.takeOver) ControlPlane.refuseConflict(bpffs, image, claimOf(config, false), wantedOf(config.services));
    checkAccessLogs(config.services.map((s) => s.accessLog));
    if (!process.env[UPGRADE_ENV]) await checkAdminFree(config.admin, { takeOver: config.takeOver });
    startPhase("environment, pins, pid file, access logs and admin socket checked");
  } catch (e) {
    return report(e);
  }
  if ((config.workers ?? 1) <= 1) return serveInProcess(config, image, { argv, say, report, reread });
  try {
    // Checked here too, so a cap the workers cannot share is one line from the supervisor, not one per worker.
    connectionShare(config.maxConnections, config.workers ?? 1, 0);
    // And a config that reaches edgeproxy itself: one line here, not one per worker.
    await refuseSelfReach(config.admin, config.services);
    // Said once, by the process that starts the workers, once the config is known to start: more of them than CPUs only share the CPUs.
    const cpus = availableParallelism();
    if ((config.workers ?? 1) > cpus) say(`${config.workers} workers on ${cpus} CPU(s): workers will share CPUs (the default is one per CPU)`);
    return await new Supervisor(config, argv, say, reread).run();
  } catch (e) {
    return report(e);
  }
}

/** What `edgeproxy help ...`, `man`, `completion SHELL` and `COMMAND --help` print; undefined for any other command line. */
function helpText(args: readonly string[]): string | undefined {
  const [first, ...rest] = args;
  if (first !== undefined && COMMANDS.some((c) => c.name === first) && wantsHelp(rest)) return commandHelp(first);
  if (first === "help") {
    if (rest.length > 1) throw new ConfigError("help", "usage: edgeproxy help [COMMAND]");
    return rest[0] === undefined ? overview() : commandHelp(rest[0]);
  }
  if (first === "man") {
    if (rest.length) throw new ConfigError("man", "usage: edgeproxy man (takes no arguments)");
    return manPage();
  }
  if (first === "completion") {
    if (rest.length !== 1) throw new ConfigError("completion", "usage: edgeproxy completion bash|zsh");
    return completion(rest[0]);
  }
  if (first === "version" && !rest.length) return `edgeproxy ${VERSION}\n`;
  return undefined;
}

/** A config file's settings, with the command line's (ServeOverrides) over the file's. */
export async function fileConfig(command: { file: string; overrides: ServeOverrides }, reread = false): Promise<ServeConfig> {
  const o = command.overrides;
  const file = await loadConfig(command.file, { instance: o.instance, reread });
  return {
    ...file,
    bpffs: o.bpffs,
    admin: o.admin ?? file.admin,
    workers: o.workers ?? file.workers ?? defaultWorkers(),
    drainTimeoutMs: o.drainTimeoutMs ?? file.drainTimeoutMs,
    ...(o.pidFile ? { pidFile: o.pidFile } : {}),
    takeOver: file.takeOver || !!o.takeOver,
  };
}

/** $EDGEPROXY_WORKERS, else one worker per CPU this process may run on. */
export function defaultWorkers(): number {
  const env = process.env.EDGEPROXY_WORKERS;
  if (env !== undefined && env !== "") return parseCount(env, "$EDGEPROXY_WORKERS", WORKER_BOUNDS);
  // More CPUs than workers may exist (a 512-CPU host): the default stays within the bound too.
  return Math.min(availableParallelism(), WORKER_BOUNDS.max!);
}
