import { accessSync, constants, readFileSync, readlinkSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { ptr } from "bun:ffi";
import { errno, errnoText, libc } from "../system/libc";
import { Fd } from "../system/fd";
import { ConfigError } from "../errors";

/*
 * What a service manager sees of a serve: a pid file (--pid-file) and
 * sd_notify(3) messages on $NOTIFY_SOCKET. Both name the process that
 * serves, so systemd (Type=notify, NotifyAccess=all, PIDFile=) follows an
 * in-place upgrade: the successor writes its own pid and says READY=1 and
 * MAINPID=<itself>; the old process says MAINPID=<successor> before it
 * drains, and never STOPPING=1 then (that would stop the unit).
 */

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
// struct sockaddr_un: sa_family_t (2 bytes) + sun_path[108].
const SUN_PATH = 108;

/**
 * Send one sd_notify message ("READY=1\nMAINPID=123") to $NOTIFY_SOCKET, a
 * unix datagram socket: a path, or "@name" for the abstract namespace
 * (sd_notify(3)). Bun has no unix datagram client (node:dgram is UDP only),
 * so it is socket(2) and sendto(2) through libc. Returns undefined when sent
 * or when no manager listens ($NOTIFY_SOCKET unset), else why it failed.
 */
export function sdNotify(state: string, socket = process.env.NOTIFY_SOCKET): string | undefined {
  if (!socket) return undefined;
  if (!socket.startsWith("/") && !socket.startsWith("@")) return `$NOTIFY_SOCKET "${socket}" is not a unix socket path or @name (vsock is not supported)`;
  const name = Buffer.from(socket);
  if (name.length >= SUN_PATH) return `$NOTIFY_SOCKET is longer than ${SUN_PATH - 1} bytes`;
  const addr = new Uint8Array(2 + SUN_PATH);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, 2);
  const abstract = socket.startsWith("@");
  // An abstract name starts with a NUL and has no terminating one: its length is exact.
  if (abstract) addr[2] = 0;
  const length = 2 + name.length + (abstract ? 0 : 1);
  const rc = libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (rc < 0) return `socket(AF_UNIX, SOCK_DGRAM): ${errnoText(errno())}`;
  const fd = new Fd(rc, "sd_notify socket");
  try {
    const message = Buffer.from(state);
    const sent = libc.sendto(fd.raw, ptr(message), message.length, MSG_NOSIGNAL, ptr(addr), length);
    if (Number(sent) < 0) return `sendto ${socket}: ${errnoText(errno())}`;
    return undefined;
  } finally {
    fd.close();
  }
}

/** Check at start, before anything is changed, that the pid file can be written: its directory exists and is writable. */
export function checkPidFile(path: string): void {
  const dir = dirname(path);
  try {
    if (!statSync(dir).isDirectory()) throw new ConfigError("--pid-file", `${dir} is not a directory`);
    accessSync(dir, constants.W_OK);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError("--pid-file", `cannot write in ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/**
 * A pid file that names the leader of another live instance is that instance's: writing ours over it
 * would have its service manager follow (and, once we exit, lose) the wrong process. Refused before
 * anything changes. An upgrade's successor and a --take-over rewrite it on purpose (not checked then);
 * a pid file naming no live leader (a crash, a reused pid) is taken.
 */
export function refuseOthersPidFile(path: string, instance: string, live: readonly { name: string; pid: number; pidns: bigint; live: boolean }[], pidns: bigint): void {
  const pid = pidInFile(path);
  if (pid === undefined) return;
  const owner = live.find((i) => i.live && i.name !== instance && i.pid === pid && i.pidns === pidns);
  if (owner) throw new ConfigError("--pid-file", `${path} names pid ${pid}, the leader of live instance ${owner.name}: each instance needs a pid file of its own (nothing changed)`);
}

/** Write `pid` to `path` atomically (a reader never sees a partial file): a temporary file, then rename(2). */
export function writePidFile(path: string, pid = process.pid): void {
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, `${pid}\n`, { mode: 0o644 });
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw new ConfigError("--pid-file", `cannot write ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Remove the pid file at exit, unless it names another process by now (an upgrade's successor). */
export function removePidFile(path: string, pid = process.pid): void {
  try {
    if (pidInFile(path) === pid) unlinkSync(path);
  } catch {
    // Gone already: nothing of ours to remove.
  }
}

/**
 * The pid a pid file names; undefined when it is missing, unreadable or not a regular file: a FIFO's
 * read would wait for a writer (a start, or an exit, that never ends) and a device's (/dev/zero) never ends.
 */
function pidInFile(path: string): number | undefined {
  try {
    if (!statSync(path).isFile()) return undefined;
    const pid = Number(readFileSync(path, "utf8").trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The leader is serving: write the pid file, tell the service manager. Returns lines to say (failures), none when all went well. */
export function announceServing(pidFile: string | undefined): string[] {
  const said: string[] = [];
  if (pidFile) {
    try {
      writePidFile(pidFile);
    } catch (e) {
      said.push((e as Error).message);
    }
  }
  const failed = sdNotify(`READY=1\nMAINPID=${process.pid}\nSTATUS=serving`);
  if (failed) said.push(`sd_notify READY=1: ${failed}`);
  return said;
}

/** An upgrade's successor `pid` serves now: the service manager follows it. */
export function announceSuccessor(pid: number): string[] {
  const failed = sdNotify(`MAINPID=${pid}\nSTATUS=upgraded: pid ${pid} serves, pid ${process.pid} drains`);
  return failed ? [`sd_notify MAINPID=${pid}: ${failed}`] : [];
}

/** The leader starts to stop (not by an upgrade): tell the service manager. */
export function announceStopping(): string[] {
  const failed = sdNotify("STOPPING=1");
  return failed ? [`sd_notify STOPPING=1: ${failed}`] : [];
}

/**
 * Where process `pid` writes its log lines (its stderr), in words for an
 * operator: a terminal, the journal's socket, a pipe, a file.
 */
export function logsOf(pid: number): string {
  let target: string;
  try {
    target = readlinkSync(`/proc/${pid}/fd/2`);
  } catch {
    // /proc/PID/fd needs ptrace read access (proc(5)): a process that dropped its capabilities
    // cannot look into a successor that holds more. The successor inherited our stderr.
    try {
      target = readlinkSync("/proc/self/fd/2");
    } catch {
      return "its stderr (unknown)";
    }
  }
  if (/^\/dev\/(pts\/|tty)/.test(target)) return `the terminal ${target}, where Ctrl-C no longer stops it once this process has exited`;
  if (target === "/dev/null") return "nowhere (its stderr is /dev/null)";
  // Inherited: the same stderr as the process asked (under systemd, the journal's socket).
  if (target.startsWith("socket:") || target.startsWith("pipe:")) return `pid ${process.pid}'s stderr (${target})`;
  return target;
}
