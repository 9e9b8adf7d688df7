import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, openSync, closeSync } from "node:fs";
import { join } from "node:path";
import { EdgeError, EnvironmentError } from "../errors";
import { BpfMap, objGet, objPin, programInfo } from "../ebpf/libbpf";
import { errno, errnoText, libc } from "../ebpf/libc";
import { Dispatcher, MAPS, type MapName } from "./dispatcher";

/*
 * Pinned state: program, link and maps under <bpffs>/edgeproxy/<netns inode>/,
 * so steering outlives the process and any invocation can inspect or change
 * it (as cloudflare/tubular does). Created aside under a temporary name and
 * renamed into place, so a reader sees all of it or none. Every change holds
 * an exclusive flock on <bpffs>/edgeproxy. bpffs reserves names with dots
 * (kernel/bpf/inode.c), hence "tmp_<pid>".
 */

const LOCK_EX = 2;
const LOCK_UN = 8;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MS_NOEXEC = 8;

/** Where bpffs is: --bpffs, $EDGEPROXY_BPFFS or /sys/fs/bpf. */
export function bpffsPath(flag?: string): string {
  return flag || process.env.EDGEPROXY_BPFFS || "/sys/fs/bpf";
}

function isBpffs(path: string): boolean {
  const mounts = readFileSync("/proc/self/mounts", "utf8");
  return mounts.split("\n").some((l) => {
    const [, at, type] = l.split(" ");
    return type === "bpf" && at === path;
  });
}

/** Mount bpffs at `path` when nothing is mounted there (mode 0700: pins are not world-readable). */
export function ensureBpffs(path: string): void {
  if (isBpffs(path)) return;
  if (!existsSync(path)) throw new EnvironmentError("bpffs", `${path} does not exist; mount bpffs there: mount -t bpf bpf ${path}`);
  const rc = libc.mount(Buffer.from("bpf\0"), Buffer.from(`${path}\0`), Buffer.from("bpf\0"), MS_NOSUID | MS_NODEV | MS_NOEXEC, Buffer.from("mode=0700\0"));
  if (rc !== 0) throw new EnvironmentError("bpffs", `${path} is not a bpf filesystem and mounting one failed (${errnoText(errno())}): mount -t bpf bpf ${path}`);
}

/** The calling process's network namespace inode. */
export function netnsInode(): number {
  return statSync("/proc/self/ns/net").ino;
}

/** <bpffs>/edgeproxy/<netns inode> */
export function pinDir(bpffs: string): string {
  return join(bpffs, "edgeproxy", String(netnsInode()));
}

/**
 * Run fn holding the exclusive lock that serializes every change of pinned
 * state. flock blocks the thread; critical sections are a few map writes.
 */
export function withPinLock<T>(bpffs: string, fn: () => T): T {
  ensureBpffs(bpffs);
  const root = join(bpffs, "edgeproxy");
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const fd = openSync(root, "r");
  try {
    if (libc.flock(fd, LOCK_EX) !== 0) throw new EdgeError("lock pinned state", errnoText(errno()), "kernel");
    return fn();
  } finally {
    libc.flock(fd, LOCK_UN);
    closeSync(fd);
  }
}

let embeddedTag: string | undefined;

/** The tag the kernel gives the embedded program (loaded once, never attached). */
function tagOf(image: Uint8Array): string {
  if (!embeddedTag) {
    const d = Dispatcher.load(image);
    try {
      embeddedTag = programInfo(d.program!.fd).tag;
    } finally {
      d.close();
    }
  }
  return embeddedTag;
}

/** A dispatcher opened from, or created as, pins. */
export interface Pinned {
  readonly dispatcher: Dispatcher;
  readonly dir: string;
  readonly tag: string;
  readonly created: boolean;
}

function openMaps(dir: string): Record<MapName, BpfMap> {
  const maps: Partial<Record<MapName, BpfMap>> = {};
  try {
    for (const m of MAPS) maps[m] = BpfMap.fromPin(join(dir, m), m);
    return maps as Record<MapName, BpfMap>;
  } catch (e) {
    for (const m of Object.values(maps)) m?.close();
    throw e;
  }
}

function openMigrate(dir: string): number {
  return objGet(join(dir, "migrate"), "open pinned program ep_migrate");
}

/**
 * Open the namespace's pinned dispatcher, or create, attach and pin one when
 * there is none and `create` is set. A pinned program that differs from this
 * edgeproxy's (by tag) is refused, never silently reused. Call under withPinLock.
 */
export function openPinned(bpffs: string, image: Uint8Array, create: boolean): Pinned | undefined {
  const dir = pinDir(bpffs);
  if (existsSync(dir)) {
    const want = tagOf(image);
    const fd = objGet(join(dir, "prog"), "open pinned program");
    let tag: string;
    try {
      tag = programInfo(fd).tag;
    } finally {
      libc.close(fd);
    }
    if (tag !== want) {
      throw new EdgeError(
        "pinned dispatcher",
        `${dir} runs program tag ${tag}, but this edgeproxy's program has tag ${want}: not reusing it; 'edgeproxy down' removes it (and its steering)`,
        "kernel",
      );
    }
    return { dispatcher: Dispatcher.fromMaps(openMaps(dir), openMigrate(dir)), dir, tag, created: false };
  }
  if (!create) return undefined;

  const tmp = join(bpffs, "edgeproxy", `tmp_${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  const d = Dispatcher.load(image);
  let tag: string;
  try {
    tag = embeddedTag ??= programInfo(d.program!.fd).tag;
    mkdirSync(tmp, { mode: 0o700 });
    d.apply([]);
    for (const m of MAPS) d.maps[m].pin(join(tmp, m));
    d.program!.pinAt(join(tmp, "prog"));
    objPin(d.migrateFd!, join(tmp, "migrate"), "pin program ep_migrate");
    // Attach last: until then nothing steers. The pinned link keeps it attached after we exit.
    d.attach().pin(join(tmp, "link"));
    renameSync(tmp, dir);
  } catch (e) {
    d.close();
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  d.close();
  return { dispatcher: Dispatcher.fromMaps(openMaps(dir), openMigrate(dir)), dir, tag, created: true };
}

/** Remove every pin of the namespace: the link goes with its last reference, so steering stops. */
export function removePinned(bpffs: string): boolean {
  const dir = pinDir(bpffs);
  if (!existsSync(dir)) return false;
  rmSync(dir, { recursive: true, force: true });
  return true;
}
