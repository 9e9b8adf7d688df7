import type { Subprocess } from "bun";
import { copyFileSync, chmodSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ROOT = join(import.meta.dir, "../..");
export const MAIN = join(ROOT, "src/main.ts");
/** The engine a plain tcp service with origins gets (engine = "auto"): epoll, unless the suite runs with $EDGEPROXY_ENGINE=bun. */
export const DEFAULT_ENGINE: "epoll" | "bun" = process.env.EDGEPROXY_ENGINE === "bun" ? "bun" : "epoll";

/** An edgeproxy process started by a test (in the test's namespace). */
export class EdgeproxyProcess {
  stderr = "";
  private constructor(readonly proc: Subprocess<"ignore", "pipe", "pipe">) {}

  /** Start edgeproxy from source (or `command`, e.g. the compiled binary) and wait for "ready". */
  static async start(args: string[], env: Record<string, string> = {}, command = [process.execPath, MAIN]): Promise<EdgeproxyProcess> {
    const proc = Bun.spawn([...command, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
    const ep = new EdgeproxyProcess(proc);
    const reader = proc.stderr.getReader();
    const decoder = new TextDecoder();
    const deadline = Date.now() + 15_000;
    // Read until "ready" or exit; keep reading in the background afterwards.
    while (!ep.stderr.includes("edgeproxy: ready")) {
      const timeout = new Promise<{ done: true; value: undefined }>((r) => setTimeout(() => r({ done: true, value: undefined }), Math.max(0, deadline - Date.now())));
      const { done, value } = await Promise.race([reader.read(), timeout]);
      if (value) ep.stderr += decoder.decode(value);
      if (done) {
        proc.kill("SIGKILL");
        throw new Error(`edgeproxy ${args.join(" ")} did not become ready (exit ${await proc.exited}):\n${ep.stderr}`);
      }
    }
    void (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (value) ep.stderr += decoder.decode(value);
        if (done) return;
      }
    })();
    return ep;
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** SIGTERM and wait; the exit code. */
  async stop(signal: "SIGTERM" | "SIGINT" = "SIGTERM"): Promise<number> {
    if (this.proc.exitCode === null) this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    const code = await this.proc.exited;
    clearTimeout(timer);
    return code;
  }

  rssKiB(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, "utf8");
    return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  }
}

/**
 * SIGSTOP `pid` and wait until every thread of it is stopped (the signal takes effect asynchronously),
 * at most 2 s: what arrives meanwhile is all there at its next read (SIGCONT resumes it).
 */
export async function sigstop(pid: number): Promise<void> {
  process.kill(pid, "SIGSTOP");
  const state = (tid: string) => /\) (\w)/.exec(readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8"))?.[1];
  for (let i = 0; i < 100; i++) {
    if (readdirSync(`/proc/${pid}/task`).every((t) => state(t) === "T")) return;
    await Bun.sleep(20);
  }
  throw new Error(`process ${pid} did not stop`);
}

/** Run edgeproxy to completion (for flag errors); never lets it serve for long. */
export async function runEdgeproxy(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([process.execPath, MAIN, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env } });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/**
 * Build ./edgeproxy as `bun run build` does (about a second) and copy it into
 * a new empty directory, so nothing from the source tree can be used by it.
 */
export function builtBinary(): { dir: string; binary: string } {
  const build = Bun.spawnSync([process.execPath, "build/build.ts"], { cwd: ROOT, stderr: "pipe", stdout: "pipe" });
  if (build.exitCode !== 0) throw new Error(`build failed:\n${build.stderr}`);
  const dir = mkdtempSync(join(tmpdir(), "ep-bin-"));
  const binary = join(dir, "edgeproxy");
  copyFileSync(join(ROOT, "edgeproxy"), binary);
  chmodSync(binary, 0o755);
  return { dir, binary };
}

/**
 * SIGSTOP `pid` and wait until every thread of it is stopped (state T in
 * /proc/PID/task/TID/stat, proc(5)). kill(2) only queues the signal: the
 * thread that takes it starts the group stop when it next runs, and until
 * then the others run on. With the engine the listeners belong to the data
 * plane's thread, not the one the signal wakes, so on a loaded machine it
 * went on accepting newcomers for a few ms after kill() returned; the kill
 * then reset those instead of leaving them queued to migrate.
 */
export async function stopAll(pid: number): Promise<void> {
  process.kill(pid, "SIGSTOP");
  // A thread that exits between the listing and its read is gone, not running.
  const state = (t: string) => {
    try {
      return readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8").replace(/^.*\) /, "")[0];
    } catch {
      return "T";
    }
  };
  const states = () => readdirSync(`/proc/${pid}/task`).map(state);
  const deadline = Date.now() + 5000;
  while (states().some((s) => s !== "T")) {
    if (Date.now() > deadline) throw new Error(`pid ${pid} not stopped in 5 s: thread states ${states().join("")}`);
    await Bun.sleep(1);
  }
}
