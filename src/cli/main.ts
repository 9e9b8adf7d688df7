import { DEFAULTS } from "../config/service";
import { ConfigError, EdgeError, EnvironmentError, errorLine } from "../errors";
import { dispatcherImage } from "../dispatcher/image";
import { availableParallelism } from "node:os";
import type { ServeConfig } from "../config/service";
import { VERSION } from "../version";
import { loadConfig } from "../config/file";
import { serveInProcess } from "./serve";
import { checkEnvironment } from "../system/environment";
import { refuseSelfReach } from "../server/bindings";
import { Supervisor, WORKER_ADMIN_ENV, WORKER_ENV } from "./supervisor";
import { connectionShare } from "../server/server";
import { parseArgs, USAGE } from "./args";
import { parseCount, WORKER_BOUNDS } from "../config/numbers";
import { CONTROL_COMMANDS, CONTROL_USAGE, parseControl, runControl } from "./control";

const say = (line: string) => process.stderr.write(`edgeproxy: ${line}\n`);

/**
 * Write to stdout and wait until all of it is written: process.stdout.write
 * only queues, and the process.exit that follows main() drops whatever a slow
 * reader has not taken yet (seen: --json output cut at the 64 KiB pipe buffer).
 */
async function print(text: string): Promise<void> {
  await Bun.write(Bun.stdout, text);
}

/** Exit code for an error: 2 for the operator's input or the environment, 1 for runtime failures. */
function report(e: unknown): number {
  if (e instanceof ConfigError || e instanceof EnvironmentError || (e instanceof EdgeError && e.fault === "config")) {
    say(e.message);
    return 2;
  }
  if (e instanceof EdgeError) {
    say(e.message);
    return 1;
  }
  say(`internal error: ${errorLine(e)}`);
  return 1;
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
  if (args[0] === "reload") return reloadCommand(args.slice(1));
  if (args[0] === "upgrade") return upgradeCommand(args.slice(1));
  if (args[0] === "health") return healthCommand(args.slice(1));
  if ((CONTROL_COMMANDS as readonly string[]).includes(args[0] ?? "")) {
    try {
      const { command, options } = parseControl(args);
      const lines: string[] = [];
      const code = runControl(command, options, await dispatcherImage(), (line) => lines.push(`${line}\n`));
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
    await print(`${USAGE}\n\n${CONTROL_USAGE}\n`);
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
  } catch (e) {
    return report(e);
  }
  const argv = [...args];
  if (worker !== undefined) {
    const index = worker;
    const say = (line: string) => process.stderr.write(`edgeproxy: worker ${index}: ${line}\n`);
    return serveInProcess(config, image, { worker: index, workerAdmin: process.env[WORKER_ADMIN_ENV] || undefined, argv, say, report });
  }
  if ((config.workers ?? 1) <= 1) return serveInProcess(config, image, { argv, say, report });
  try {
    // Checked here too, so a missing privilege or a cap the workers cannot share is one line from the supervisor, not one per worker.
    connectionShare(config.maxConnections, config.workers ?? 1, 0);
    checkEnvironment();
    // And a config that reaches edgeproxy itself: one line here, not one per worker.
    await refuseSelfReach(config.admin, config.services);
    // Said once, by the process that starts the workers, once the config is known to start: more of them than CPUs only share the CPUs.
    const cpus = availableParallelism();
    if ((config.workers ?? 1) > cpus) say(`${config.workers} workers on ${cpus} CPU(s): workers will share CPUs (the default is one per CPU)`);
    return await new Supervisor(config, argv, say).run();
  } catch (e) {
    return report(e);
  }
}

/** A config file's settings, with --bpffs, --workers and --drain-timeout from the command line over the file's. */
async function fileConfig(command: { file: string; bpffs?: string; workers?: number; drainTimeoutMs?: number }): Promise<ServeConfig> {
  const file = await loadConfig(command.file);
  return {
    ...file,
    bpffs: command.bpffs,
    workers: command.workers ?? file.workers ?? defaultWorkers(),
    drainTimeoutMs: command.drainTimeoutMs ?? file.drainTimeoutMs,
  };
}

/** $EDGEPROXY_WORKERS, else one worker per CPU this process may run on. */
export function defaultWorkers(): number {
  const env = process.env.EDGEPROXY_WORKERS;
  if (env !== undefined && env !== "") return parseCount(env, "$EDGEPROXY_WORKERS", WORKER_BOUNDS);
  // More CPUs than workers may exist (a 512-CPU host): the default stays within the bound too.
  return Math.min(availableParallelism(), WORKER_BOUNDS.max!);
}

/**
 * The flags of a command that talks to a running serve through its admin
 * socket: `--admin PATH` (default DEFAULTS.adminSocket) and the command's own
 * `--name VALUE` flags. Throws ConfigError (exit 2) with the usage line.
 */
function adminFlags(command: string, args: readonly string[], own: readonly string[] = []): { path: string; flags: Map<string, string> } {
  const usage = `usage: edgeproxy ${command} [--admin PATH]${own.map((f) => ` [--${f} PATH]`).join("")}`;
  let path: string = DEFAULTS.adminSocket;
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const name = args[i]!.replace(/^--/, "");
    const value = args[i + 1];
    if (!args[i]!.startsWith("--") || value === undefined || !(name === "admin" || own.includes(name))) throw new ConfigError(`${command} ${args[i]}`, usage);
    if (name === "admin") path = value;
    else flags.set(name, value);
    i++;
  }
  return { path, flags };
}

/** Send `init` to `route` of the admin API on `path`; an unreachable API is an EdgeError of `fault`. */
async function askAdmin(command: string, path: string, route: string, init: RequestInit, fault: "config" | "internal"): Promise<Response> {
  try {
    return await fetch(`http://localhost${route}`, { ...init, unix: path } as RequestInit);
  } catch (e) {
    const hint = fault === "config" ? "; is serve running with --admin or [admin]?" : "";
    throw new EdgeError(command, `no edgeproxy admin API answers on ${path} (${(e as { code?: string }).code ?? (e as Error).message})${hint}`, fault);
  }
}

/** `edgeproxy reload [--admin PATH]`: ask the running serve, through its admin socket, to re-read its config. */
async function reloadCommand(args: readonly string[]): Promise<number> {
  try {
    const { path } = adminFlags("reload", args);
    const res = await askAdmin("reload", path, "/reload", { method: "POST" }, "config");
    const body = (await res.json().catch(() => ({}))) as { error?: string; summary?: string };
    if (!res.ok) return report(new ConfigError("reload rejected, nothing changed", body.error ?? `HTTP ${res.status}`));
    await print(`reloaded${body.summary ? `: ${body.summary}` : ""}\n`);
    return 0;
  } catch (e) {
    return report(e);
  }
}

/**
 * `edgeproxy health [--admin PATH]`: GET /healthz on the admin socket, exit 0
 * when it answers ok, else 1. For container health checks and Kubernetes exec
 * probes: the image has no curl, and a probe cannot reach a unix socket itself.
 */
async function healthCommand(args: readonly string[]): Promise<number> {
  try {
    const { path } = adminFlags("health", args);
    const res = await askAdmin("health", path, "/healthz", { signal: AbortSignal.timeout(2000) }, "internal");
    if (!res.ok) {
      // The reason (e.g. "steering lost: …") is one line of text/plain; bounded, a probe's output is a log line.
      const why = (await res.text().catch(() => "")).split("\n")[0]!.slice(0, 300);
      return report(new EdgeError("health", `admin API on ${path} answered HTTP ${res.status}${why ? `: ${why}` : ""}`, "internal"));
    }
    await print("ok\n");
    return 0;
  } catch (e) {
    return report(e);
  }
}

/** `edgeproxy upgrade [--admin PATH] [--binary PATH]`: ask the running edgeproxy to start its successor and drain. */
async function upgradeCommand(args: readonly string[]): Promise<number> {
  try {
    const { path, flags } = adminFlags("upgrade", args, ["binary"]);
    const binary = flags.get("binary");
    const res = await askAdmin("upgrade", path, "/upgrade", { method: "POST", body: JSON.stringify(binary ? { binary } : {}), headers: { "content-type": "application/json" } }, "config");
    const body = (await res.json().catch(() => ({}))) as { error?: string; summary?: string };
    // 400: the request was bad (exit 2); otherwise the new process failed (exit 1).
    if (!res.ok) return report(new EdgeError("upgrade failed, the running edgeproxy keeps serving", body.error ?? `HTTP ${res.status}`, res.status === 400 ? "config" : "internal"));
    await print(`upgraded: ${body.summary ?? ""}\n`);
    return 0;
  } catch (e) {
    return report(e);
  }
}
