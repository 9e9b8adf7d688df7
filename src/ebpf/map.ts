import type { Pointer } from "bun:ffi";
import { existsSync, rmSync } from "node:fs";
import { EdgeError } from "../errors";
import { Fd } from "../system/fd";
import { check, cstr, KernelError, libbpf, takeLibbpfLog } from "./libbpf";
import { errno } from "./libc";

/*
 * BPF maps (BpfMap) and what works on any object by its fd or its pin:
 * opening, pinning, creating the control plane's own maps, reading a map's
 * definition. Programs, objects and links: src/ebpf/object.ts.
 */

/** What a map of a loaded object asks of its object: that it is still open. */
export interface MapOwner {
  assertOpen(what: string): void;
}

/**
 * A BPF map: either inside a loaded BpfObject (the object owns the fd) or
 * opened from a bpffs pin (this owns the fd; close() releases it).
 */
export class BpfMap {
  private readonly ownedFd: Fd | undefined;

  constructor(
    readonly name: string,
    private readonly source: { owner: MapOwner; handle: Pointer } | { fd: Fd },
  ) {
    if ("fd" in source) this.ownedFd = source.fd;
  }

  /** Open a pinned map. */
  static fromPin(path: string, name: string): BpfMap {
    return new BpfMap(name, { fd: objGet(path, `open pinned map ${name}`) });
  }

  get fd(): number {
    if ("owner" in this.source) {
      this.source.owner.assertOpen(`map ${this.name}`);
      return libbpf().bpf_map__fd(this.source.handle);
    }
    return this.ownedFd!.raw;
  }

  update(key: Uint8Array, value: Uint8Array, flags = 0): void {
    check(`update map ${this.name}`, libbpf().bpf_map_update_elem(this.fd, key, value, flags));
  }

  /**
   * Write `count` entries in one bpf(BPF_MAP_UPDATE_BATCH) call: `keys` and
   * `values` hold them back to back. The kernel implements it for array and
   * hash maps (kernel/bpf/syscall.c, generic_map_update_batch; not for LPM
   * tries). On failure the kernel reports how many went in; the error names that.
   */
  updateBatch(keys: Uint8Array, values: Uint8Array, count: number): void {
    if (count === 0) return;
    const n = new Uint32Array([count]);
    const rc = libbpf().bpf_map_update_batch(this.fd, keys, values, n, null);
    if (rc < 0) throw new KernelError(`update map ${this.name} (batch of ${count}, ${n[0]} written)`, rc, takeLibbpfLog());
  }

  /** The value, or undefined when the key is absent. */
  lookup(key: Uint8Array, value: Uint8Array): Uint8Array | undefined {
    const rc = libbpf().bpf_map_lookup_elem(this.fd, key, value);
    if (rc === -2 /* ENOENT */) return undefined;
    check(`lookup map ${this.name}`, rc);
    return value;
  }

  /** True when the key was there. */
  delete(key: Uint8Array): boolean {
    const rc = libbpf().bpf_map_delete_elem(this.fd, key);
    if (rc === -2 /* ENOENT */) return false;
    check(`delete from map ${this.name}`, rc);
    return true;
  }

  /** Every key, copied; keySize bytes each. */
  keys(keySize: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    let prev: Uint8Array | null = null;
    for (;;) {
      const next = new Uint8Array(keySize);
      const rc = libbpf().bpf_map_get_next_key(this.fd, prev, next);
      if (rc === -2 /* ENOENT: no more keys */) return out;
      check(`iterate map ${this.name}`, rc);
      out.push(next);
      prev = next;
    }
  }

  /**
   * The definition: of a pinned map, the kernel's (bpf_obj_get_info_by_fd);
   * of an object's map, what the object declares (after reuseFd(), the reused map's).
   */
  definition(): MapDefinition {
    if (!("owner" in this.source)) return mapInfo(this.fd, `read info of map ${this.name}`);
    this.source.owner.assertOpen(`map ${this.name}`);
    const h = this.source.handle;
    const lib = libbpf();
    return { type: lib.bpf_map__type(h), keySize: lib.bpf_map__key_size(h), valueSize: lib.bpf_map__value_size(h), maxEntries: lib.bpf_map__max_entries(h), flags: lib.bpf_map__map_flags(h) };
  }

  /**
   * Make this map of an unloaded object use the map open at fd instead of
   * creating its own (libbpf dups fd; the caller keeps its copy). libbpf then
   * takes the definition from the kernel's, so check compatibility first.
   */
  reuseFd(fd: number): void {
    if (!("owner" in this.source)) throw new EdgeError(`map ${this.name}`, "only a map of an unloaded object can reuse another's fd", "internal");
    this.source.owner.assertOpen(`map ${this.name}`);
    check(`reuse pinned map for ${this.name}`, libbpf().bpf_map__reuse_fd(this.source.handle, fd));
  }

  setMaxEntries(n: number): void {
    if (!("owner" in this.source)) throw new EdgeError(`map ${this.name}`, "cannot resize a pinned map", "internal");
    check(`resize map ${this.name}`, libbpf().bpf_map__set_max_entries(this.source.handle, n));
  }

  pin(path: string): void {
    check(`pin map ${this.name} at ${path}`, libbpf().bpf_obj_pin(this.fd, cstr(path)));
  }

  /** Release an fd opened from a pin; maps of an object close with it. Idempotent. */
  close(): void {
    this.ownedFd?.close();
  }
}

/** bpf_obj_get: an fd for a pinned object; the caller owns it. */
export function objGet(path: string, where: string): Fd {
  const fd = libbpf().bpf_obj_get(cstr(path));
  if (fd < 0) throw new KernelError(where, fd === -1 ? -errno() : fd, takeLibbpfLog());
  return new Fd(fd, where);
}

/** Open the object pinned at `path`, read it through `fn`, close it: for a look at a pin (its info), not a descriptor to keep. */
export function withPinned<T>(path: string, what: string, fn: (fd: number) => T): T {
  const fd = objGet(path, `open ${what}`);
  try {
    return fn(fd.raw);
  } finally {
    fd.close();
  }
}

/**
 * bpf_map_create: a map of no program, for the control plane's own records
 * (BPF_MAP_TYPE_HASH = 1). The returned map owns its fd.
 */
export function createMap(type: number, name: string, keySize: number, valueSize: number, maxEntries: number): BpfMap {
  const fd = libbpf().bpf_map_create(type, cstr(name), keySize, valueSize, maxEntries, null);
  if (fd < 0) throw new KernelError(`create map ${name}`, fd === -1 ? -errno() : fd, takeLibbpfLog());
  return new BpfMap(name, { fd: new Fd(fd, `map ${name}`) });
}

/**
 * The control plane's record map pinned at `path`, or one created
 * (createMap) and pinned there when none is. `fits`: whether a pinned map is
 * one this code made; one that is not (another shape) is unpinned and
 * replaced. The caller owns the returned map.
 */
export function pinnedOrCreated(path: string, name: string, type: number, keySize: number, valueSize: number, maxEntries: number, fits?: (m: BpfMap) => boolean): BpfMap {
  if (existsSync(path)) {
    const pinned = BpfMap.fromPin(path, name);
    let ours: boolean;
    try {
      ours = !fits || fits(pinned);
    } catch (e) {
      pinned.close();
      throw e;
    }
    if (ours) return pinned;
    pinned.close();
    rmSync(path);
  }
  const map = createMap(type, name, keySize, valueSize, maxEntries);
  try {
    map.pin(path);
    return map;
  } catch (e) {
    map.close();
    throw e;
  }
}

/** bpf_obj_pin: pin the object open at fd. */
export function objPin(fd: number, path: string, where: string): void {
  check(where, libbpf().bpf_obj_pin(fd, cstr(path)));
}

/** What a map is, as far as a program using it and its pins are concerned. */
export interface MapDefinition {
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
}

/**
 * struct bpf_map_info of the map open at fd (include/uapi/linux/bpf.h): type,
 * id, key_size, value_size, max_entries, map_flags, all u32, from offset 0.
 * The buffer is larger than the struct: the kernel accepts that when the
 * excess is zero (bpf_check_uarg_tail_zero) and fills what it knows.
 */
export function mapInfo(fd: number, where = "read map info"): MapDefinition & { id: number } {
  const info = new Uint8Array(256);
  const len = new Uint32Array([info.length]);
  check(where, libbpf().bpf_obj_get_info_by_fd(fd, info, len));
  const v = new DataView(info.buffer);
  const u = (i: number) => v.getUint32(i * 4, true);
  return { type: u(0), id: u(1), keySize: u(2), valueSize: u(3), maxEntries: u(4), flags: u(5) };
}
