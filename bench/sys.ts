// Process and /proc helpers for the benchmark: bounded child processes,
// CPU time, memory and listening-socket accounting.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A script's flags by `parse`; a bad one: its message and `usage` on stderr, exit 2 (never a stack trace). */
export function cliOptions<O>(name: string, usage: string, parse: (argv: string[]) => O, argv = process.argv.slice(2)): O {
  try {
    return parse(argv);
  } catch (e) {
    console.error(`${name}: ${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
}

/** Exit 2 with one line unless running as root; `why`: what the script does that needs it. */
export function requireRoot(name: string, why: string): void {
  if (process.getuid?.() === 0) return;
  console.error(`${name}: run as root (${why})`);
  process.exit(2);
}

/** Run a command to completion (bounded); returns stdout+stderr text and exit code. */
export function run(cmd: string[], timeoutMs = 60_000): { code: number; out: string } {
  const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  return { code: p.exitCode ?? -1, out: p.stdout.toString() + p.stderr.toString() };
}

/** Run a command and fail the benchmark if it does not succeed. */
export function must(cmd: string[], timeoutMs = 60_000): string {
  const r = run(cmd, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd.join(" ")} failed (exit ${r.code}): ${r.out.trim()}`);
  return r.out;
}

export const which = (name: string) => run(["sh", "-c", `command -v ${name}`]).code === 0;

/** Children still running, so an interrupted benchmark can stop exactly what it started. */
const live = new Set<Child>();

/** SIGKILL every child process this benchmark started that is still running. */
export function killAll(): void {
  for (const c of live) if (!c.exited) c.proc.kill("SIGKILL");
}

/**
 * Run `fn` with a scratch directory of its own, then stop every child and
 * remove the directory. The edgeproxies it starts keep their admin sockets
 * and pins in it (EDGEPROXY_RUN_DIR): the default /run/edgeproxy is shared
 * with the host (a unix socket path crosses network namespaces), so one
 * serving there would refuse to start ours, or be talked to by our CLI.
 */
export async function inScratch<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    process.env.EDGEPROXY_RUN_DIR = join(dir, "run");
    mkdirSync(process.env.EDGEPROXY_RUN_DIR);
    return await fn(dir);
  } finally {
    killAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A child process we started. stdout and stderr are collected so callers can
 * wait for a line (a "ready" message, a JSON result) with a deadline.
 */
export class Child {
  readonly proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  text = "";
  private wakers: (() => void)[] = [];

  constructor(
    readonly name: string,
    readonly cmd: string[],
    opts: { cwd?: string } = {},
  ) {
    // env: Bun.spawn otherwise passes the environment the process started with, not what the runner set since (EDGEPROXY_RUN_DIR).
    this.proc = Bun.spawn(cmd, { cwd: opts.cwd, env: process.env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    live.add(this);
    void this.proc.exited.then(() => live.delete(this));
    void this.collect(this.proc.stdout);
    void this.collect(this.proc.stderr);
  }

  get pid(): number {
    return this.proc.pid;
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  private async collect(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      this.text += dec.decode(chunk, { stream: true });
      for (const w of this.wakers.splice(0)) w();
    }
  }

  /** Resolve with the first match of `re` in the output; throw on exit or timeout. */
  async waitFor(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = this.text.match(re);
      if (m) return m;
      if (this.exited) throw new Error(`${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}) before ${re}: ${this.text.trim()}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${this.name}: no ${re} within ${timeoutMs} ms: ${this.text.trim()}`);
      // Wake on new output, and poll at least every 50 ms to notice an exit.
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 50));
        this.wakers.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 5000): Promise<{ code: number | null; signal: string | null; forced: boolean }> {
    if (!this.exited) this.proc.kill("SIGTERM");
    const done = await Promise.race([this.proc.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done) {
      this.proc.kill("SIGKILL");
      await Promise.race([this.proc.exited, sleep(2000)]);
    }
    return { code: this.proc.exitCode, signal: this.proc.signalCode === null ? null : String(this.proc.signalCode), forced: !done };
  }
}

export const CLK_TCK = Number(run(["getconf", "CLK_TCK"]).out.trim()) || 100;

function statFields(pid: number): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    // comm (field 2) may contain spaces; fields after the last ')' start at field 3 (state).
    return s.slice(s.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** `pid` and all its descendants (e.g. an nginx master and its workers). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const ppid = Number(statFields(Number(e))?.[1]);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid)!.push(Number(e));
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/**
 * CPU time (utime+stime, in microseconds) of the processes: /proc/<pid>/stat
 * already sums every thread of a process, including threads that have exited.
 */
export function cpuMicros(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const f = statFields(pid);
    if (f) ticks += Number(f[11]) + Number(f[12]); // fields 14 and 15
  }
  return (ticks * 1e6) / CLK_TCK;
}

export function rssKiB(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return m ? Number(m[1]) : 0;
}

/**
 * Slab + Percpu from /proc/meminfo, in KiB: where sockets, files and inodes
 * live (large BPF maps are vmalloc'd instead: see bpfMemlock). Machine-wide,
 * so other activity on the host adds noise.
 */
export function kernelKiB(): number {
  const text = readFileSync("/proc/meminfo", "utf8");
  const get = (k: string) => Number(text.match(new RegExp(`^${k}:\\s+(\\d+) kB`, "m"))?.[1] ?? 0);
  return get("Slab") + get("Percpu");
}

/** Socket inodes of this network namespace's TCP sockets in LISTEN state (/proc/net/tcp{,6}, st 0A). */
export function listenInodes(): Set<number> {
  const out = new Set<number>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue; // no IPv6
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[3] === "0A") out.add(Number(f[9]));
    }
  }
  return out;
}

/** How many of the namespace's listening sockets the processes hold open. */
export function listeningSocketsOf(pids: readonly number[]): number {
  const listening = listenInodes();
  const seen = new Set<number>();
  for (const pid of pids) {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
        if (m && listening.has(Number(m[1]))) seen.add(Number(m[1]));
      } catch {
        // fd closed meanwhile
      }
    }
  }
  return seen.size;
}

/**
 * Kernel memory the process's BPF maps and programs are charged for: the
 * "memlock" line of /proc/<pid>/fdinfo for each map/prog fd, counted once per
 * map_id/prog_id.
 */
export function bpfMemlock(pid: number): { maps: number; progs: number; bytes: number } {
  const seen = new Set<string>();
  let bytes = 0;
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    let info = "";
    try {
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8");
    } catch {
      continue;
    }
    const id = info.match(/^(map_id|prog_id):\s+(\d+)/m);
    const memlock = info.match(/^memlock:\s+(\d+)/m);
    if (!id || !memlock || seen.has(`${id[1]}${id[2]}`)) continue;
    seen.add(`${id[1]}${id[2]}`);
    bytes += Number(memlock[1]);
  }
  const ids = [...seen];
  return { maps: ids.filter((i) => i.startsWith("map")).length, progs: ids.filter((i) => i.startsWith("prog")).length, bytes };
}

/** Open a TCP connection; with `probe`, send it and wait for any reply. Never throws. */
export function tcpCheck(host: string, port: number, timeoutMs: number, probe?: string): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (ok: boolean, s?: { end(): void }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s?.end();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          if (probe === undefined) done(true, s);
          else s.write(probe);
        },
        data(s) {
          done(true, s);
        },
        close() {
          done(false);
        },
        error() {
          done(false);
        },
        connectError() {
          done(false);
        },
      },
    }).catch(() => done(false));
  });
}

/** HTTP/1.0 GET over a raw socket; resolves to the status code (0 on failure). */
export function httpStatus(host: string, port: number, timeoutMs = 2000): Promise<number> {
  return new Promise((resolve) => {
    let buf = "";
    const timer = setTimeout(() => resolve(0), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          s.write(`GET / HTTP/1.0\r\nHost: ${host}\r\n\r\n`);
        },
        data(_s, chunk) {
          buf += chunk.toString();
        },
        close() {
          clearTimeout(timer);
          resolve(Number(buf.match(/^HTTP\/1\.[01] (\d{3})/)?.[1] ?? 0));
        },
        error() {},
        connectError() {
          clearTimeout(timer);
          resolve(0);
        },
      },
    }).catch(() => resolve(0));
  });
}

/** Poll until a TCP connect to host:port succeeds; resolves to the time it did (performance.now()) or throws. */
export async function waitConnectable(host: string, port: number, timeoutMs: number, everyMs = 1): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await tcpCheck(host, port, 500)) return performance.now();
    await sleep(everyMs);
  }
  throw new Error(`nothing accepted connections on ${host}:${port} within ${timeoutMs} ms`);
}

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
};
