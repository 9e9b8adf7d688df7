import { dlopen, JSCallback, FFIType, ptr, type Pointer } from "bun:ffi";
import { existsSync, rmSync } from "node:fs";
import { EdgeError, EnvironmentError } from "../errors";
import { errno, errnoText, libc } from "./libc";
import { libbpfSymbols } from "./symbols";
import { Fd } from "../system/fd";

/** A libbpf or bpf(2) call failed. Carries the errno and libbpf's (or the verifier's) log. */
export class KernelError extends EdgeError {
  readonly errno: number;
  readonly log: string;

  constructor(where: string, code: number, log = "") {
    const text = errnoText(code);
    super(where, log ? `${text}\n${log.trimEnd()}` : text, "kernel");
    this.errno = Math.abs(code);
    this.log = log;
  }
}

type Libbpf = ReturnType<typeof dlopen<typeof libbpfSymbols>>["symbols"];

let symbols: Libbpf | undefined;
// libbpf's own messages, kept instead of printed so errors can carry them.
const recentLog: string[] = [];
const logBuffer = new Uint8Array(4096);
let printCallback: JSCallback | undefined;

/** libbpf.so.1 (or $EDGEPROXY_LIBBPF), opened on first use; throws EnvironmentError when it is missing. */
export function libbpf(): Libbpf {
  if (symbols) return symbols;
  const path = process.env.EDGEPROXY_LIBBPF || "libbpf.so.1";
  try {
    symbols = dlopen(path, libbpfSymbols).symbols;
  } catch {
    throw new EnvironmentError("load libbpf", `${path} not found: install libbpf 1.x (Debian: apt-get install libbpf1)`);
  }
  // libbpf_print_fn_t is (level, const char *fmt, va_list ap); va_list reaches
  // us as a pointer on x86_64 and aarch64, so vsnprintf can format it.
  printCallback = new JSCallback(
    (level: number, format: Pointer, args: Pointer) => {
      // LIBBPF_WARN 0, LIBBPF_INFO 1, LIBBPF_DEBUG 2: debug lines are noise in an error report.
      if (level >= 2) return 0;
      const n = libc.vsnprintf(logBuffer, logBuffer.length, format, args);
      if (n <= 0) return 0;
      recentLog.push(new TextDecoder().decode(logBuffer.subarray(0, Math.min(n, logBuffer.length - 1))).trimEnd());
      if (recentLog.length > 50) recentLog.shift();
      return 0;
    },
    { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  );
  symbols.libbpf_set_print(printCallback);
  return symbols;
}

/** libbpf's messages since the last call, for error reports. */
export function takeLibbpfLog(): string {
  const text = recentLog.join("\n");
  recentLog.length = 0;
  return text;
}

function check(where: string, rc: number): void {
  if (rc < 0) throw new KernelError(where, rc, takeLibbpfLog());
}

function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

/**
 * A BPF map: either inside a loaded BpfObject (the object owns the fd) or
 * opened from a bpffs pin (this owns the fd; close() releases it).
 */
export class BpfMap {
  private readonly ownedFd: Fd | undefined;

  constructor(
    readonly name: string,
    private readonly source: { owner: BpfObject; handle: Pointer } | { fd: Fd },
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
    if (!fits || fits(pinned)) return pinned;
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

/**
 * Switch a BPF link to another program (BPF_LINK_UPDATE). For a netns link
 * (sk_lookup) the kernel swaps the program in the namespace's run array under
 * its mutex (kernel/bpf/net_namespace.c, bpf_netns_link_update_prog), so each
 * lookup runs either the old program or the new one; the new one must be of
 * the link's program and attach type.
 */
export function linkUpdate(linkFd: number, progFd: number, where = "update link"): void {
  check(where, libbpf().bpf_link_update(linkFd, progFd, null));
}

/** A program's kernel id and tag (struct bpf_prog_info: type u32, id u32, tag[8]). */
export function programInfo(fd: number): { id: number; tag: string } {
  const info = new Uint8Array(256);
  const len = new Uint32Array([info.length]);
  check("read program info", libbpf().bpf_obj_get_info_by_fd(fd, info, len));
  const v = new DataView(info.buffer);
  return { id: v.getUint32(4, true), tag: Buffer.from(info.subarray(8, 16)).toString("hex") };
}

/**
 * A link's kernel id, program id and, for a netns link, the namespace it is
 * attached to (struct bpf_link_info: type, id, prog_id u32, then a union
 * aligned to 8 whose netns member is netns_ino, attach_type u32). A netns
 * link detached by hand (BPF_LINK_DETACH) reports netns_ino 0
 * (kernel/bpf/net_namespace.c, bpf_netns_link_fill_info).
 */
export function linkInfo(fd: number): { type: number; id: number; progId: number; netnsIno: number; attachType: number } {
  const info = new Uint8Array(256);
  const len = new Uint32Array([info.length]);
  check("read link info", libbpf().bpf_obj_get_info_by_fd(fd, info, len));
  const v = new DataView(info.buffer);
  return { type: v.getUint32(0, true), id: v.getUint32(4, true), progId: v.getUint32(8, true), netnsIno: v.getUint32(16, true), attachType: v.getUint32(20, true) };
}

/** A BPF link (here: sk_lookup attached to a network namespace). Owns the link; close() detaches. */
export class BpfLink {
  private handle: Pointer | null;

  constructor(handle: Pointer) {
    this.handle = handle;
  }

  get fd(): number {
    if (!this.handle) throw new EdgeError("link", "used after close", "internal");
    return libbpf().bpf_link__fd(this.handle);
  }

  pin(path: string): void {
    objPin(this.fd, path, `pin link at ${path}`);
  }

  /** Detach (unless pinned: then the pin keeps it attached). Idempotent. */
  close(): void {
    if (!this.handle) return;
    const h = this.handle;
    this.handle = null;
    libbpf().bpf_link__destroy(h);
  }
}

/*
 * struct bpf_test_run_opts of libbpf 1.x (bpf.h): sz, data_in, data_out,
 * data_size_in/out, ctx_in, ctx_out, ctx_size_in/out, retval, repeat,
 * duration, flags, cpu, batch_size: 80 bytes on 64-bit (libbpf.test.ts).
 */
export const TEST_RUN_OPTS_SIZE = 80;

/**
 * One program's BPF_PROG_TEST_RUN with its buffers made once, for a program
 * user space runs often (BPF_PROG_TYPE_SYSCALL: the kernel runs it on `ctx`
 * and copies `ctx` back, net/bpf/test_run.c bpf_prog_test_run_syscall).
 * Each run is then one FFI call and one bpf(2) syscall. The options hold
 * ctx's address, so ctx has an ArrayBuffer of its own: JSC may move the
 * storage of a small typed array that has none. Does not own the fd.
 */
export class PreparedTestRun {
  readonly ctx: Uint8Array;
  private readonly opts: Uint8Array;
  private readonly view: DataView;

  constructor(
    private readonly progFd: number,
    ctxSize: number,
    private readonly what: string,
  ) {
    this.ctx = new Uint8Array(new ArrayBuffer(ctxSize));
    this.opts = new Uint8Array(new ArrayBuffer(TEST_RUN_OPTS_SIZE));
    this.view = new DataView(this.opts.buffer);
    this.view.setBigUint64(0, BigInt(TEST_RUN_OPTS_SIZE), true); // sz
    this.view.setBigUint64(32, BigInt(ptr(this.ctx)), true); // ctx_in
    this.view.setUint32(48, ctxSize, true); // ctx_size_in
  }

  /** Run once on ctx as it is now; the program's return value. */
  run(): number {
    const rc = libbpf().bpf_prog_test_run_opts(this.progFd, this.opts);
    if (rc < 0) throw new KernelError(`run program ${this.what}`, rc, takeLibbpfLog());
    return this.view.getUint32(56, true); // retval
  }
}

/** A program inside a BpfObject; valid while its object is open. */
export class BpfProgram {
  // Kept referenced while libbpf may write into it (during load).
  private logBuf: Uint8Array | undefined;

  constructor(
    readonly name: string,
    private readonly owner: BpfObject,
    private readonly handle: Pointer,
  ) {}

  get fd(): number {
    this.owner.assertOpen(`program ${this.name}`);
    return libbpf().bpf_program__fd(this.handle);
  }

  /** The verifier's log level for the next load (kernel's BPF_LOG_LEVEL1 1, LEVEL2 2, BPF_LOG_STATS 4: "processed N insns", "verification time"). */
  setLogLevel(level: number): void {
    check(`set the log level of program ${this.name}`, libbpf().bpf_program__set_log_level(this.handle, level));
  }

  /** With log level 0 libbpf asks the verifier for a log only when a load fails. */
  captureVerifierLog(size = 1 << 20): void {
    this.logBuf = new Uint8Array(size);
    libbpf().bpf_program__set_log_buf(this.handle, this.logBuf, size);
  }

  verifierLog(): string {
    if (!this.logBuf) return "";
    const end = this.logBuf.indexOf(0);
    return new TextDecoder().decode(this.logBuf.subarray(0, end < 0 ? undefined : end));
  }

  /**
   * Run the loaded program `repeat` times in the kernel on one context
   * (BPF_PROG_TEST_RUN; for sk_lookup, net/bpf/test_run.c
   * bpf_prog_test_run_sk_lookup, Linux 5.14+). Returns the program's verdict,
   * the kernel's mean ns per run, and the context as the kernel wrote it back.
   */
  testRun(ctx: Uint8Array, repeat: number): { retval: number; nsPerRun: number; ctxOut: Uint8Array } {
    const ctxOut = new Uint8Array(ctx.length);
    const opts = new Uint8Array(TEST_RUN_OPTS_SIZE);
    const v = new DataView(opts.buffer);
    v.setBigUint64(0, BigInt(TEST_RUN_OPTS_SIZE), true); // sz
    v.setBigUint64(32, BigInt(ptr(ctx)), true); // ctx_in
    v.setBigUint64(40, BigInt(ptr(ctxOut)), true); // ctx_out
    v.setUint32(48, ctx.length, true); // ctx_size_in
    v.setUint32(52, ctxOut.length, true); // ctx_size_out
    v.setInt32(60, repeat, true); // repeat
    const rc = libbpf().bpf_prog_test_run_opts(this.fd, opts);
    if (rc < 0) throw new KernelError(`test-run program ${this.name}`, rc, takeLibbpfLog());
    return { retval: v.getUint32(56, true), nsPerRun: v.getUint32(64, true), ctxOut };
  }

  pinAt(path: string): void {
    objPin(this.fd, path, `pin program ${this.name} at ${path}`);
  }

  /** Attach to the network namespace open at netnsFd (BPF_LINK_TYPE_NETNS). */
  attachNetns(netnsFd: number): BpfLink {
    const h = libbpf().bpf_program__attach_netns(this.handle, netnsFd);
    if (!h) throw new KernelError(`attach ${this.name} to netns`, errno(), takeLibbpfLog());
    return new BpfLink(h as Pointer);
  }
}

/**
 * An ELF BPF object opened from memory: owns the bpf_object and, through it,
 * every program and map fd. close() frees them all and is idempotent.
 */
export class BpfObject {
  private handle: Pointer | null;
  // libelf reads the ELF image in place until load finishes: keep it alive.
  private readonly image: Uint8Array;
  private readonly programs = new Map<string, BpfProgram>();

  private constructor(handle: Pointer, image: Uint8Array) {
    this.handle = handle;
    this.image = image;
  }

  static open(image: Uint8Array): BpfObject {
    const h = libbpf().bpf_object__open_mem(image, image.length, null);
    if (!h) throw new KernelError("open BPF object", errno(), takeLibbpfLog());
    return new BpfObject(h as Pointer, image);
  }

  assertOpen(what: string): void {
    if (!this.handle) throw new EdgeError(what, "BPF object used after close", "internal");
  }

  program(name: string): BpfProgram {
    this.assertOpen(`program ${name}`);
    let p = this.programs.get(name);
    if (!p) {
      const h = libbpf().bpf_object__find_program_by_name(this.handle, cstr(name));
      if (!h) throw new EdgeError(`program ${name}`, "not in the BPF object", "internal");
      p = new BpfProgram(name, this, h as Pointer);
      this.programs.set(name, p);
    }
    return p;
  }

  hasProgram(name: string): boolean {
    this.assertOpen(`program ${name}`);
    return this.programs.has(name) || !!libbpf().bpf_object__find_program_by_name(this.handle, cstr(name));
  }

  map(name: string): BpfMap {
    this.assertOpen(`map ${name}`);
    const h = libbpf().bpf_object__find_map_by_name(this.handle, cstr(name));
    if (!h) throw new EdgeError(`map ${name}`, "not in the BPF object", "internal");
    return new BpfMap(name, { owner: this, handle: h as Pointer });
  }

  /** The maps declared in .maps, in the object's order (libbpf's internal .data/.rodata/.bss maps left out). */
  maps(): BpfMap[] {
    this.assertOpen("list maps");
    const lib = libbpf();
    const out: BpfMap[] = [];
    for (let h = lib.bpf_object__next_map(this.handle, null); h; h = lib.bpf_object__next_map(this.handle, h)) {
      if (lib.bpf_map__is_internal(h)) continue;
      out.push(new BpfMap(String(lib.bpf_map__name(h)), { owner: this, handle: h as Pointer }));
    }
    return out;
  }

  /** Create the maps and load every program; a failure carries the verifier log. */
  load(): void {
    this.assertOpen("load BPF object");
    for (const p of this.programs.values()) p.captureVerifierLog();
    const rc = libbpf().bpf_object__load(this.handle);
    if (rc < 0) {
      const verifier = [...this.programs.values()].map((p) => p.verifierLog()).join("\n");
      throw new KernelError("load BPF object", rc, [takeLibbpfLog(), verifier].filter(Boolean).join("\n"));
    }
    void this.image;
  }

  /** Free the object, its programs and maps. Idempotent. */
  close(): void {
    if (!this.handle) return;
    const h = this.handle;
    this.handle = null;
    libbpf().bpf_object__close(h);
  }
}

/** 1 supported, 0 not, negative errno when the probe itself failed (e.g. EPERM). */
export function probeProgramType(type: number): number {
  return libbpf().libbpf_probe_bpf_prog_type(type, null);
}

export function possibleCpus(): number {
  const n = libbpf().libbpf_num_possible_cpus();
  if (n <= 0) throw new KernelError("count possible CPUs", n);
  return n;
}
