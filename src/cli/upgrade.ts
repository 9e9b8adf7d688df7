import { ConfigError, EdgeError } from "../errors";
import { spawnWithCapabilities } from "../system/capabilities";

/** Env var that tells a process it was started by an upgrade (it takes the admin socket over). */
export const UPGRADE_ENV = "EDGEPROXY_UPGRADE";
/** How long a new process may take to serve before the upgrade is given up (the old one keeps serving). */
const READY_TIMEOUT_MS = 60_000;

/** The command that runs this edgeproxy again: the compiled binary, or bun with the entry script. */
export function selfCommand(binary?: string): string[] {
  if (binary) return [binary];
  // A compiled binary's entry lives in Bun's embedded filesystem.
  const compiled = Bun.main.startsWith("/$bunfs/") || Bun.main.startsWith("B:/~BUN/");
  return compiled ? [process.execPath] : [process.execPath, Bun.main];
}

/** Environment for a child edgeproxy: ours, without the IPC channel Bun gave us (the child gets its own) and without `drop`. */
export function childEnv(extra: Record<string, string>, drop: readonly string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("NODE_CHANNEL") && !drop.includes(k)) env[k] = v;
  return { ...env, ...extra };
}

/**
 * Start the next edgeproxy with this one's arguments and wait until it says
 * it serves (an IPC "ready" once its workers are up and registered). Rejects
 * if it exits or takes too long first; the caller keeps serving then.
 */
export async function startSuccessor(argv: readonly string[], binary?: string): Promise<number> {
  const cmd = [...selfCommand(binary), ...argv];
  let child: ReturnType<typeof Bun.spawn>;
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  try {
    // Our own successor: it gets what a start needs.
    child = spawnWithCapabilities(() => Bun.spawn(cmd, {
      stdio: ["ignore", "inherit", "inherit"],
      env: childEnv({ [UPGRADE_ENV]: String(process.pid) }),
      ipc(message) {
        if ((message as { op?: string })?.op === "ready") ready();
      },
    }));
  } catch (e) {
    throw new ConfigError("upgrade", `cannot start ${cmd[0]}: ${(e as Error).message}`);
  }
  let timer: Timer | undefined;
  const outcome = await Promise.race([
    readyP.then(() => "ready" as const),
    child.exited.then((code) => `exited with code ${code} before it was ready` as const),
    new Promise<string>((r) => (timer = setTimeout(() => r(`was not ready within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    if (child.exitCode === null) child.kill("SIGTERM");
    throw new EdgeError("upgrade", `the new edgeproxy (${cmd.join(" ")}, pid ${child.pid}) ${outcome}; this one keeps serving`, "internal");
  }
  // It outlives us: nothing of ours may keep it, or our exit, waiting.
  child.unref();
  child.disconnect?.();
  return child.pid;
}

/**
 * In a process an upgrade started: if the process that started it goes away
 * (it gave up waiting, or was stopped) before this one is ready, call
 * `giveUp`: nobody would stop this one otherwise. Returns what to call once
 * ready, before announceReady(), from when the old process may leave.
 */
export function untilReady(giveUp: () => void): () => void {
  if (!process.env[UPGRADE_ENV]) return () => {};
  process.on("disconnect", giveUp);
  return () => process.off("disconnect", giveUp);
}

/** Tell the process that started us (an upgrade's old process, or our supervisor) that we serve now. */
export function announceReady(extra: Record<string, unknown> = {}): void {
  // A worker whose supervisor died while it started has nobody to tell (and Bun's send would throw).
  if ((process.env[UPGRADE_ENV] || process.env.EDGEPROXY_WORKER !== undefined) && process.connected) process.send?.({ ...extra, op: "ready", pid: process.pid });
}

/**
 * A worker's message to its supervisor ({op: "failed" | "leave" | ...}):
 * false when there is no supervisor to tell (not a worker, or it is gone),
 * and the worker acts on its own.
 */
export function tellSupervisor(message: Record<string, unknown>): boolean {
  if (process.env.EDGEPROXY_WORKER === undefined || !process.send || !process.connected) return false;
  try {
    return process.send({ ...message, pid: process.pid });
  } catch {
    return false;
  }
}
