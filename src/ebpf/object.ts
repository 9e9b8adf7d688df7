import { ptr, type Pointer } from "bun:ffi";
import { EdgeError } from "../errors";
import { BpfMap, objPin } from "./map";
import { check, cstr, KernelError, libbpf, takeLibbpfLog } from "./libbpf";
import { errno } from "./libc";

/*
 * BPF programs, objects and links: a BpfObject opened from an ELF image,
 * loaded into the kernel (its BpfPrograms and BpfMaps), a program attached
 * as a BpfLink, a program's test run, and what a program or link is by its
 * fd. Maps and pins: src/ebpf/map.ts.
 */

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
