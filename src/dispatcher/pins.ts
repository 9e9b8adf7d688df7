import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, openSync } from "node:fs";
import { Fd } from "../system/fd";
import { join } from "node:path";
import { ConfigError, EdgeError, EnvironmentError } from "../errors";
import { BpfMap, objGet, objPin, withPinned } from "../ebpf/map";
import { linkUpdate, programInfo } from "../ebpf/object";
import { errno, errnoText, libc } from "../ebpf/libc";
import { checkPinAccess } from "../system/environment";
import { compareMaps, objectMapDefinitions } from "./compat";
import { Dispatcher, MAPS, type MapName, type ProgramTags } from "./dispatcher";
import { pinnedPrograms, recordedImage, recordImage, type PinnedPrograms } from "./identity";

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
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
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
  checkPinAccess(root, pinDir(bpffs));
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const lock = new Fd(openSync(root, "r"), `lock of ${root}`);
  try {
    if (libc.flock(lock.raw, LOCK_EX) !== 0) throw new EdgeError("lock pinned state", errnoText(errno()), "kernel");
    return fn();
  } finally {
    // Closing releases the lock too (flock(2)); unlocking first says so.
    libc.flock(lock.raw, LOCK_UN);
    lock.close();
  }
}

/**
 * Run fn holding the pin lock if it is free now, without waiting or making
 * anything (a periodic reader: the steering watchdog): "busy" when another
 * process holds it (it is changing the pins; the next look will see), "gone"
 * when <bpffs>/edgeproxy itself was removed; any other failure to open it is thrown.
 */
export function tryPinLock<T>(bpffs: string, fn: () => T): T | "busy" | "gone" {
  const root = join(bpffs, "edgeproxy");
  let lock: Fd;
  try {
    lock = new Fd(openSync(root, "r"), `lock of ${root}`);
  } catch (e) {
    // Only a path that is not there is gone: an open refused for this process's own lack (EMFILE) says nothing of the pins.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return "gone";
    throw e;
  }
  try {
    if (libc.flock(lock.raw, LOCK_EX | LOCK_NB) !== 0) {
      if (errno() === EWOULDBLOCK) return "busy";
      throw new EdgeError(`lock ${root}`, errnoText(errno()), "kernel");
    }
    try {
      return fn();
    } finally {
      libc.flock(lock.raw, LOCK_UN);
    }
  } finally {
    lock.close();
  }
}

// Per image: the embedded one, or an object given to upgrade-program.
const tags = new WeakMap<Uint8Array, ProgramTags>();

/** The tags the kernel gives the image's programs (loaded once, with tiny maps, never attached). */
function tagsOf(image: Uint8Array): ProgramTags {
  let t = tags.get(image);
  if (!t) {
    t = Dispatcher.programTags(image);
    tags.set(image, t);
  }
  return t;
}

/** The tag of the image's sk_lookup program: the dispatcher's version as status shows it. */
const tagOf = (image: Uint8Array): string => tagsOf(image).dispatch;

/**
 * Whether the pinned dispatcher is another version than the image although
 * its sk_lookup program has the image's tag: a map of the image not pinned
 * yet, or another ep_migrate or ep_source (a change to the reuseport
 * selection alone leaves ep_dispatch, and so its tag, as it was).
 */
function companionsDiffer(dir: string, image: Uint8Array): boolean {
  if (MAPS.some((m) => !existsSync(join(dir, m)))) return true;
  const t = tagsOf(image);
  if (t.migrate !== undefined && pinnedTag(join(dir, "migrate"), "ep_migrate") !== t.migrate) return true;
  return t.source !== undefined && (!existsSync(join(dir, "source")) || pinnedTag(join(dir, "source"), "ep_source") !== t.source);
}

function pinnedTag(path: string, what: string): string {
  return withPinned(path, `pinned program ${what}`, (fd) => programInfo(fd).tag);
}

/** The ids of a dispatcher's loaded programs, as identity.ts records them. */
function loadedPrograms(d: Dispatcher, tag: string): PinnedPrograms {
  return { dispatch: programInfo(d.program!.fd).id, migrate: programInfo(d.migrateFd!).id, source: d.sourceFd !== undefined ? programInfo(d.sourceFd).id : 0, tag };
}

/** A dispatcher opened from, or created as, pins. */
export interface Pinned {
  readonly dispatcher: Dispatcher;
  readonly dir: string;
  /** The pinned program's tag (after an upgrade on open, the new one's). */
  readonly tag: string;
  /** This edgeproxy's program's tag: differs from `tag` when a control command opened another version's dispatcher. */
  readonly binaryTag: string;
  readonly created: boolean;
  /** Set when opening upgraded the pinned program in place. */
  readonly upgraded?: ProgramUpgrade;
}

/** What upgradeProgram() did. */
export interface ProgramUpgrade {
  readonly from: string;
  readonly to: string;
  /** Maps the new program has that were not pinned: created and pinned. */
  readonly created: string[];
  /** The pinned program was this one already: nothing changed. */
  readonly unchanged: boolean;
}

function openMaps(dir: string): Record<MapName, BpfMap> {
  return Object.fromEntries(openSomeMaps(dir, MAPS)) as Record<MapName, BpfMap>;
}

/** The maps pinned in dir under these names; absent ones are left out when `optional`. */
function openSomeMaps(dir: string, names: Iterable<string>, optional = false): Map<string, BpfMap> {
  const maps = new Map<string, BpfMap>();
  try {
    for (const m of names) if (!optional || existsSync(join(dir, m))) maps.set(m, BpfMap.fromPin(join(dir, m), m));
    return maps;
  } catch (e) {
    for (const m of maps.values()) m.close();
    throw e;
  }
}

const definitions = (maps: Map<string, BpfMap>) => new Map([...maps].map(([name, m]) => [name, m.definition()]));

function openMigrate(dir: string): Fd {
  return objGet(join(dir, "migrate"), "open pinned program ep_migrate");
}

/** The pinned ep_source program; undefined when the pinned dispatcher predates it. */
function openSource(dir: string): Fd | undefined {
  return existsSync(join(dir, "source")) ? objGet(join(dir, "source"), "open pinned program ep_source") : undefined;
}

const pinnedDispatcher = (dir: string) => Dispatcher.fromMaps(openMaps(dir), openMigrate(dir), openSource(dir));

const DOWN_HINT = "'edgeproxy down' removes the pinned dispatcher and its steering, then serve or bind anew";

/**
 * Refuse a pinned dispatcher whose maps this edgeproxy cannot use (the
 * pinned program is another version's, so its maps may be too).
 */
function checkPinnedMaps(dir: string, image: Uint8Array): void {
  const pinned = openSomeMaps(dir, MAPS, true);
  try {
    const wanted = objectMapDefinitions(image);
    const { problems, unpinned } = compareMaps(definitions(pinned), wanted, MAPS, "this edgeproxy's program");
    for (const name of unpinned) if ((MAPS as readonly string[]).includes(name)) problems.push(`map ${name}: not pinned ('edgeproxy upgrade-program' adds it)`);
    if (problems.length) throw new ConfigError(`pinned dispatcher ${dir}`, `this edgeproxy cannot use its maps: ${problems.join("; ")}; ${DOWN_HINT}`);
  } finally {
    for (const m of pinned.values()) m.close();
  }
}

/**
 * Open the namespace's pinned dispatcher, or create, attach and pin one when
 * there is none and `create` is set. A pinned program that differs from this
 * edgeproxy's (by tag) is upgraded in place when `upgrade` is set (serve),
 * and otherwise used as it is (control commands): either way only when its
 * maps are compatible. Call under withPinLock.
 */
export function openPinned(bpffs: string, image: Uint8Array, create: boolean, upgrade = create): Pinned | undefined {
  const dir = pinDir(bpffs);
  if (existsSync(dir)) {
    const programs = pinnedPrograms(dir);
    // This edgeproxy's own programs, by the record beside them (identity.ts): no load needed to compare tags.
    if (MAPS.every((m) => existsSync(join(dir, m))) && recordedImage(dir, image, programs)) {
      return { dispatcher: pinnedDispatcher(dir), dir, tag: programs.tag, binaryTag: programs.tag, created: false };
    }
    const binaryTag = tagOf(image);
    let tag = programs.tag;
    let upgraded: ProgramUpgrade | undefined;
    if (tag !== binaryTag || companionsDiffer(dir, image)) {
      if (upgrade) {
        upgraded = upgradeProgram(bpffs, image);
        tag = upgraded.to;
      } else checkPinnedMaps(dir, image);
    } else if (upgrade) {
      // The same programs, found by their tags (pins made before the record, or by an edgeproxy without it): recorded, so the next start need not load them.
      recordImage(dir, image, programs);
    }
    return { dispatcher: pinnedDispatcher(dir), dir, tag, binaryTag, created: false, ...(upgraded ? { upgraded } : {}) };
  }
  if (!create) return undefined;

  const tmp = join(bpffs, "edgeproxy", `tmp_${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  const d = Dispatcher.load(image);
  let tag: string;
  try {
    tag = programInfo(d.program!.fd).tag;
    tags.set(image, { dispatch: tag, migrate: programInfo(d.migrateFd!).tag, ...(d.sourceFd !== undefined ? { source: programInfo(d.sourceFd).tag } : {}) });
    mkdirSync(tmp, { mode: 0o700 });
    d.apply([]);
    for (const m of MAPS) d.maps[m].pin(join(tmp, m));
    d.program!.pinAt(join(tmp, "prog"));
    objPin(d.migrateFd!, join(tmp, "migrate"), "pin program ep_migrate");
    objPin(d.sourceFd!, join(tmp, "source"), "pin program ep_source");
    recordImage(tmp, image, loadedPrograms(d, tag));
    // Attach last: until then nothing steers. The pinned link keeps it attached after we exit.
    d.attach().pin(join(tmp, "link"));
    renameSync(tmp, dir);
  } catch (e) {
    d.close();
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  d.close();
  return { dispatcher: pinnedDispatcher(dir), dir, tag, binaryTag: tag, created: true };
}

/**
 * Switch the namespace's pinned dispatcher to the program in `image`, keeping
 * its maps: the object is loaded over the pinned maps (so bindings, rules,
 * registered sockets, group ports and counters stay, being the same kernel
 * objects), maps it adds are created and pinned, the pinned link is switched
 * to the new program in one step (BPF_LINK_UPDATE), and the "prog" and
 * "migrate" pins are replaced. Refused, with nothing changed, when a pinned
 * map's definition differs from the new program's. Call under withPinLock.
 */
export function upgradeProgram(bpffs: string, image: Uint8Array): ProgramUpgrade {
  const dir = pinDir(bpffs);
  if (!existsSync(dir)) throw new ConfigError("upgrade-program", `edgeproxy is not loaded in this network namespace (${dir} does not exist)`);
  const oldProg = objGet(join(dir, "prog"), "open pinned program ep_dispatch");
  let pinned = new Map<string, BpfMap>();
  let d: Dispatcher | undefined;
  try {
    const from = programInfo(oldProg.raw).tag;
    // Checked before anything is loaded: reuse_fd itself would accept any pin.
    const wanted = objectMapDefinitions(image);
    pinned = openSomeMaps(dir, wanted.keys(), true);
    const { problems } = compareMaps(definitions(pinned), wanted, MAPS, "the new program");
    if (problems.length) throw new ConfigError(`upgrade ${dir}`, `refused, nothing changed: ${problems.join("; ")}; ${DOWN_HINT}`);
    const loaded = Dispatcher.loadOver(image, pinned);
    d = loaded.dispatcher;
    const to = programInfo(d.program!.fd).tag;
    const sameMigrate = pinnedTag(join(dir, "migrate"), "ep_migrate") === programInfo(d.migrateFd!).tag;
    const source = d.sourceFd;
    const sameSource = source === undefined || (existsSync(join(dir, "source")) && pinnedTag(join(dir, "source"), "ep_source") === programInfo(source).tag);
    if (to === from && sameMigrate && sameSource && !loaded.created.length) {
      recordImage(dir, image, pinnedPrograms(dir));
      return { from, to, created: [], unchanged: true };
    }
    switchOver(dir, d, loaded.created, oldProg.raw);
    // After the switch: a record written before would name programs that are not pinned yet.
    recordImage(dir, image, loadedPrograms(d, to));
    return { from, to, created: loaded.created.map((m) => m.name), unchanged: false };
  } finally {
    d?.close();
    for (const m of pinned.values()) m.close();
    oldProg.close();
  }
}

/**
 * Put a dispatcher loaded over the pinned maps in place. New maps are pinned
 * first (no pinned program uses them yet), then the link is switched: the
 * commit point. The program pins are made aside and renamed over the old
 * ones afterwards (bpffs renames replace in place, kernel/bpf/inode.c uses
 * simple_rename). A failure before the switch removes what was pinned; one
 * after it switches the link back to `oldProg`.
 */
function switchOver(dir: string, d: Dispatcher, created: BpfMap[], oldProg: number): void {
  const tmp = (name: string) => join(dir, `tmp_${process.pid}_${name}`);
  const placed: string[] = [];
  const link = objGet(join(dir, "link"), `open pinned link ${join(dir, "link")}`);
  let switched = false;
  try {
    for (const m of created) {
      rmSync(tmp(m.name), { force: true });
      m.pin(tmp(m.name));
      renameSync(tmp(m.name), join(dir, m.name));
      placed.push(join(dir, m.name));
    }
    const programs: [string, number][] = [["prog", d.program!.fd], ["migrate", d.migrateFd!]];
    // A program from before ep_source has none: the old pin stays (it counts in maps the program keeps).
    if (d.sourceFd !== undefined) programs.push(["source", d.sourceFd]);
    for (const [name, fd] of programs) {
      rmSync(tmp(name), { force: true });
      objPin(fd, tmp(name), `pin the new ${name} at ${tmp(name)}`);
      placed.push(tmp(name));
    }
    linkUpdate(link.raw, d.program!.fd, `switch ${join(dir, "link")} to the new program`);
    switched = true;
    // migrate and source first: if "prog" then failed, the link goes back to the program "prog" names.
    renameSync(tmp("migrate"), join(dir, "migrate"));
    if (d.sourceFd !== undefined) renameSync(tmp("source"), join(dir, "source"));
    renameSync(tmp("prog"), join(dir, "prog"));
  } catch (e) {
    if (switched) linkUpdate(link.raw, oldProg, `switch ${join(dir, "link")} back to the old program`);
    for (const p of placed) rmSync(p, { force: true });
    throw e;
  } finally {
    link.close();
  }
}

/** Remove every pin of the namespace: the link goes with its last reference, so steering stops. */
export function removePinned(bpffs: string): boolean {
  const dir = pinDir(bpffs);
  if (!existsSync(dir)) return false;
  rmSync(dir, { recursive: true, force: true });
  return true;
}
