import { closeSync } from "node:fs";
import type { AccessLogConfig } from "../config/service";
import { accessLogStats, LogFile, openLog } from "./file";
import { RingReader } from "./ring";

/*
 * The access logs' files of this process by path (one LogFile each,
 * src/log/file.ts, shared by every service that names it): opened at a
 * service's first use, the data plane thread's rings attached to them,
 * their counters read, reopened on SIGUSR1, and let go once no service of
 * the running config names them (retainAccessLogs).
 */

const files = new Map<string, LogFile>();
let exitHook = false;

export function fileFor(config: AccessLogConfig): LogFile {
  let f = files.get(config.path);
  if (!f) {
    f = new LogFile(config.path, config.bufferBytes);
    files.set(config.path, f);
    if (!exitHook) {
      exitHook = true;
      process.on("exit", () => {
        for (const f of files.values()) f.drainSync();
      });
    }
  }
  return f;
}

/** Check every access log of a config can be opened for appending (before anything starts): a ConfigError if not. */
export function checkAccessLogs(configs: readonly (AccessLogConfig | undefined)[]): void {
  for (const c of configs) if (c && c.path !== "-") closeSync(openLog(c.path));
}

/**
 * The data plane thread's ring of lines for `config`'s file (src/log/ring.ts),
 * read with this process's own lines for it from now on. The file is opened
 * here if no service of this process has opened it yet.
 */
export function attachRing(config: AccessLogConfig, memory: SharedArrayBuffer): void {
  let f: LogFile;
  try {
    f = fileFor(config);
  } catch (e) {
    // Opened at start (checkAccessLogs); gone since: the thread's lines for it are dropped. Its ring is kept (bounded,
    // one per path) only to count them: what it holds and what the writer drops once it is full (accessLogCounts).
    process.stderr.write(`edgeproxy: ${(e as Error).message}; its lines from the data plane thread are dropped and counted\n`);
    unwritable.push(new RingReader(memory));
    return;
  }
  f.attach(new RingReader(memory));
}

/** Rings whose file could not be opened (attachRing): never read, their lines counted as dropped. */
const unwritable: RingReader[] = [];

/** A ring of `path` is half full, or got a line while its reader slept: write it now. */
export function nudgeRing(path: string): void {
  files.get(path)?.poll();
}

/** The process's counters, the data plane thread's lines counted up to now (a read of /metrics or status). */
export function accessLogCounts(): typeof accessLogStats {
  for (const f of files.values()) f.countRings();
  for (const r of unwritable) {
    const c = r.counts();
    accessLogStats.dropped += c.lines + c.dropped;
    accessLogStats.sampledOut += c.sampledOut;
  }
  return { ...accessLogStats };
}

/** How long a log file no service names any more waits, idle, before its descriptor is closed. */
const UNNAMED_IDLE_MS = 60_000;
let sweeper: Timer | undefined;

/**
 * After a reload (and at start): `paths` are the access logs the running
 * config names. Every other file of this process is let go once idle
 * (LogFile.closeIfIdle, checked every few seconds until none is left open).
 */
export function retainAccessLogs(paths: Iterable<string>, idleMs = UNNAMED_IDLE_MS): void {
  const named = new Set(paths);
  const now = Date.now();
  for (const f of files.values()) {
    if (named.has(f.path)) f.unnamedSince = 0;
    else if (f.unnamedSince === 0) f.unnamedSince = now;
  }
  unnamedIdleMs = idleMs;
  if (!sweeper && sweepAccessLogs()) {
    sweeper = setInterval(() => {
      if (!sweepAccessLogs()) {
        clearInterval(sweeper);
        sweeper = undefined;
      }
    }, Math.min(idleMs, 5_000) || 1);
    sweeper.unref();
  }
}
let unnamedIdleMs = UNNAMED_IDLE_MS;

/** Close the idle unnamed files; true while an unnamed file is still open (the sweep goes on). */
export function sweepAccessLogs(now = Date.now()): boolean {
  let open = false;
  for (const f of files.values()) if (f.unnamedSince !== 0 && !f.closeIfIdle(now, unnamedIdleMs)) open = true;
  return open;
}

/** SIGUSR1: reopen every log file of this process. */
export function reopenAccessLogs(): void {
  for (const f of files.values()) f.reopen();
}
