import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { BpfMap, pinnedOrCreated } from "../ebpf/map";
import { EP_MAX_SERVICES } from "./abi";

/*
 * Instances: every serve is one, named (--instance, `instance =`), and owns
 * the services it runs. Its owner record and the services' owners live in two
 * maps of their own pinned beside the dispatcher's (no program reads them,
 * so the dispatcher's program and map definitions stay as they are): a
 * record is there exactly as long as the pins, and any invocation in the
 * namespace sees it, whatever its PID namespace.
 *
 * ep_instances: name[64] -> struct (little endian, RECORD_SIZE bytes)
 *   0 u32 pid          the instance's leader (its supervisor, or the one process), as it sees itself
 *   4 u32 flags        TOLD_TO_LEAVE: another instance took its bindings over (--take-over)
 *   8 u64 pidns        inode of the leader's PID namespace
 *  16 u64 start        the leader's start time (clock ticks since boot, /proc/PID/stat field 22)
 *  24 u32 byPid        who took over (for the leaver's log)
 *  32 char by[64]      ... and its instance name
 *  96 char config[256] the config file, if any
 * 352 char admin[160]  the admin socket or address, if any
 * ep_svc_owners: service id u32 -> instance name[64]; services without an
 * entry belong to no instance (made by `bind --create` or `register`).
 */

export const INSTANCES_PIN = "ep_instances";
export const OWNERS_PIN = "ep_svc_owners";
const NAME_SIZE = 64;
const RECORD_SIZE = 512;
const MAX_INSTANCES = 256;
const BPF_MAP_TYPE_HASH = 1;
export const TOLD_TO_LEAVE = 1;

/** Who an instance's leader is: enough to tell it from any other process, in any PID namespace. */
export interface Leader {
  readonly pid: number;
  readonly pidns: bigint;
  /** 0n when this process cannot read it (a /proc of another PID namespace). */
  readonly start: bigint;
}

export interface InstanceRecord extends Leader {
  readonly name: string;
  readonly flags: number;
  readonly byPid: number;
  readonly by: string;
  readonly config: string;
  readonly admin: string;
}

const text = (b: Uint8Array, at: number, size: number) => {
  const s = b.subarray(at, at + size);
  const end = s.indexOf(0);
  return new TextDecoder().decode(end < 0 ? s : s.subarray(0, end));
};
const put = (b: Uint8Array, at: number, size: number, s: string) => {
  const bytes = new TextEncoder().encode(s).subarray(0, size - 1);
  b.set(bytes, at);
};

export function encodeName(name: string): Uint8Array {
  const b = new Uint8Array(NAME_SIZE);
  put(b, 0, NAME_SIZE, name);
  return b;
}

export function encodeRecord(r: InstanceRecord): Uint8Array {
  const b = new Uint8Array(RECORD_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, r.pid, true);
  v.setUint32(4, r.flags, true);
  v.setBigUint64(8, r.pidns, true);
  v.setBigUint64(16, r.start, true);
  v.setUint32(24, r.byPid, true);
  put(b, 32, 64, r.by);
  put(b, 96, 256, r.config);
  put(b, 352, 160, r.admin);
  return b;
}

export function decodeRecord(name: string, b: Uint8Array): InstanceRecord {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    name,
    pid: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    pidns: v.getBigUint64(8, true),
    start: v.getBigUint64(16, true),
    byPid: v.getUint32(24, true),
    by: text(b, 32, 64),
    config: text(b, 96, 256),
    admin: text(b, 352, 160),
  };
}

/** The two record maps of a pin directory. */
export class InstanceMaps {
  private constructor(
    readonly records: BpfMap,
    readonly owners: BpfMap,
  ) {}

  /**
   * Open the pinned record maps, creating and pinning them when absent (pins
   * made by an edgeproxy that had none): call under the pin lock.
   */
  static open(dir: string): InstanceMaps {
    const records = openOrCreate(dir, INSTANCES_PIN, NAME_SIZE, RECORD_SIZE, MAX_INSTANCES);
    try {
      return new InstanceMaps(records, openOrCreate(dir, OWNERS_PIN, 4, NAME_SIZE, EP_MAX_SERVICES));
    } catch (e) {
      records.close();
      throw e;
    }
  }

  /** Open them only if pinned (read-only users: no lock needed, nothing is created). */
  static openIfPinned(dir: string): InstanceMaps | undefined {
    if (!existsSync(join(dir, INSTANCES_PIN)) || !existsSync(join(dir, OWNERS_PIN))) return undefined;
    const records = BpfMap.fromPin(join(dir, INSTANCES_PIN), INSTANCES_PIN);
    try {
      return new InstanceMaps(records, BpfMap.fromPin(join(dir, OWNERS_PIN), OWNERS_PIN));
    } catch (e) {
      records.close();
      throw e;
    }
  }

  all(): InstanceRecord[] {
    const out: InstanceRecord[] = [];
    for (const key of this.records.keys(NAME_SIZE)) {
      const v = this.records.lookup(key, new Uint8Array(RECORD_SIZE));
      if (v) out.push(decodeRecord(text(key, 0, NAME_SIZE), v));
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): InstanceRecord | undefined {
    const v = this.records.lookup(encodeName(name), new Uint8Array(RECORD_SIZE));
    return v && decodeRecord(name, v);
  }

  put(r: InstanceRecord): void {
    this.records.update(encodeName(r.name), encodeRecord(r));
  }

  remove(name: string): void {
    this.records.delete(encodeName(name));
  }

  /** The instance that owns service `id`, if any. */
  ownerOf(id: number): string | undefined {
    const v = this.owners.lookup(u32(id), new Uint8Array(NAME_SIZE));
    return v && text(v, 0, NAME_SIZE);
  }

  setOwner(id: number, instance: string | undefined): void {
    if (instance === undefined) this.owners.delete(u32(id));
    else this.owners.update(u32(id), encodeName(instance));
  }

  /** Every owned service id with its owner. */
  ownership(): Map<number, string> {
    const out = new Map<number, string>();
    for (const key of this.owners.keys(4)) {
      const id = new DataView(key.buffer).getUint32(0, true);
      const name = this.ownerOf(id);
      if (name !== undefined) out.set(id, name);
    }
    return out;
  }

  close(): void {
    this.records.close();
    this.owners.close();
  }
}

const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);

function openOrCreate(dir: string, name: string, keySize: number, valueSize: number, maxEntries: number): BpfMap {
  return pinnedOrCreated(join(dir, name), name, BPF_MAP_TYPE_HASH, keySize, valueSize, maxEntries);
}

/** The inode of this process's PID namespace. */
export function pidnsInode(): bigint {
  return BigInt(statSync("/proc/self/ns/pid").ino);
}

/**
 * A process's start time (clock ticks after boot, proc(5) /proc/PID/stat
 * field 22): with its pid it names the process, a reused pid has another.
 * undefined when there is no such process in this /proc.
 */
export function startTime(pid: number): bigint | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses: the fields after it follow the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const v = fields[22 - 3];
  return v === undefined ? undefined : BigInt(v);
}

/** Is this /proc the one of our PID namespace (a container's remount, or the host's seen from the host)? */
function procIsOurs(): boolean {
  try {
    return readFileSync("/proc/self/stat", "utf8").split(" ", 1)[0] === String(process.pid);
  } catch {
    return false;
  }
}

/** This process's identity, or (a worker) its supervisor's: the instance's leader. */
export function leaderOf(pid: number): Leader {
  return { pid, pidns: pidnsInode(), start: (procIsOurs() && startTime(pid)) || 0n };
}

/**
 * Is the record's leader alive? true or false when this process can tell (same
 * PID namespace and a /proc of it); undefined when it cannot (another PID
 * namespace: a container sharing the bpffs), and the caller decides from the
 * instance's registered sockets instead.
 */
export function leaderAlive(r: Leader): boolean | undefined {
  if (r.pidns !== pidnsInode() || !procIsOurs() || r.start === 0n) return undefined;
  return startTime(r.pid) === r.start;
}

export const sameLeader = (a: Leader, b: Leader): boolean => a.pid === b.pid && a.pidns === b.pidns && a.start === b.start;
