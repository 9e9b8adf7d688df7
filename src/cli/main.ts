import { DEFAULTS } from "../config/service";
import { ConfigError, EdgeError, EnvironmentError } from "../errors";
import { dispatcherImage } from "../dispatcher/image";
import { describeBindings } from "../server/bindings";
import { Server } from "../server/server";
import { VERSION } from "../version";
import { startAdminServer } from "../admin/server";
import { loadConfig } from "../config/file";
import { serverBackend } from "../server/admin";
import { describeReload, reload } from "../server/reload";
import { parseArgs, USAGE } from "./args";
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
  say(`internal error: ${(e as Error)?.stack ?? e}`);
  return 1;
}

/** Run the CLI; resolves to the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === "reload") return reloadCommand(argv.slice(1));
  if ((CONTROL_COMMANDS as readonly string[]).includes(argv[0] ?? "")) {
    try {
      const { command, options } = parseControl(argv);
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
    command = parseArgs(argv);
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
  // Handlers go in before anything is created, so a signal at any point of
  // startup still ends in a full teardown and exit 0.
  let signal: string | undefined;
  let wake: (() => void) | undefined;
  const onSignal = (name: string) => {
    signal ??= name;
    wake?.();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  let server: Server;
  let admin: { address: string; close(): void } | undefined;
  const image = await dispatcherImage();
  const t0 = performance.now();
  try {
    const config = command.kind === "serve" ? command.config : { ...(await loadConfig(command.file)), bpffs: command.bpffs };
    server = await Server.start(config, image);
    try {
      await server.planes.started();
      admin = await startAdminServer(serverBackend(server), config.admin);
    } catch (e) {
      server.close();
      throw e;
    }
  } catch (e) {
    return report(e);
  }
  for (const line of describeBindings(server.config.services)) say(line);
  for (const [name, r] of server.running) for (const s of r.sockets) say(`service ${name}: ipv${s.family} socket ${s.address} (fd ${s.fd})`);
  say(`dispatcher ${server.report.createdPins ? "created and pinned at" : "joined at"} ${server.report.pinDir}`);
  say(`at most ${server.report.maxConnections} open connections${server.report.maxFlows ? ` and ${server.report.maxFlows} UDP flows` : ""}`);
  if (admin.address !== "off") say(`admin API on ${admin.address}`);
  if (server.report.skipped.length) {
    say(`left alone ${server.report.skipped.length} already-listening socket(s): ${server.report.skipped.join(", ")} (--take-over steers them too)`);
  }
  // SIGHUP re-reads the config file; a bad file changes nothing.
  process.on("SIGHUP", () => {
    reload(server).then(
      (r) => say(`reloaded ${server.config.source}: ${describeReload(r)}`),
      (e) => say(`reload rejected, nothing changed: ${(e as Error).message}`),
    );
  });
  say(`ready (setup ${(performance.now() - t0).toFixed(1)} ms)`);
  // Serving holds the event loop open itself: signal handlers do not count as
  // work for Bun, and with nothing else referenced (a UDP-only server's
  // sockets live in an unref'd worker) its loop spins at 100% of a core.
  const hold = setInterval(() => {}, 1 << 30);
  if (!signal) await new Promise<void>((resolve) => (wake = resolve));
  clearInterval(hold);
  try {
    for (const line of server.summary()) say(line);
  } catch (e) {
    say(`counters unavailable: ${(e as Error).message}`);
  }
  try {
    admin.close();
    server.close();
  } catch (e) {
    return report(e);
  }
  say(`${signal}: withdrew its services from the dispatcher and stopped`);
  return 0;
}

/** `edgeproxy reload [--admin PATH]`: ask the running serve, through its admin socket, to re-read its config. */
async function reloadCommand(args: readonly string[]): Promise<number> {
  let path: string = DEFAULTS.adminSocket;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--admin" && args[i + 1]) path = args[++i]!;
    else return report(new ConfigError(`reload ${args[i]}`, "usage: edgeproxy reload [--admin PATH]"));
  }
  let res: Response;
  try {
    res = await fetch("http://localhost/reload", { method: "POST", unix: path } as RequestInit);
  } catch (e) {
    return report(new EdgeError(`reload`, `no edgeproxy admin API answers on ${path} (${(e as { code?: string }).code ?? (e as Error).message}); is serve running with --admin or [admin]?`, "config"));
  }
  const body = (await res.json().catch(() => ({}))) as { error?: string; summary?: string };
  if (!res.ok) return report(new ConfigError("reload rejected, nothing changed", body.error ?? `HTTP ${res.status}`));
  await print(`reloaded${body.summary ? `: ${body.summary}` : ""}\n`);
  return 0;
}
