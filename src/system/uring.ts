// io_uring(7) through bun:ffi, without liburing: io_uring_setup/enter/register
// are three syscall(2)s and the rings are mmap(2)ed shared memory, so the
// layer is this file (liburing's fast paths are static inline functions in its
// header, which dlopen cannot reach: through FFI it would add a call per SQE).
// The kernel's structures are described ONCE below (include/uapi/linux/io_uring.h);
// uring.test.ts compiles a C program against the system's header and checks
// every offset and constant here.
//
// Memory: the rings, the SQE array and the provided-buffer ring are mmap(2)ed
// and seen from JS through toArrayBuffer() (external memory, never moved by
// the GC); the buffers the kernel reads into are a BufferPool's slab (one
// malloc'ed ArrayBuffer that never moves). No small typed array is ever handed
// to the kernel.
import { ptr, toArrayBuffer, type Pointer } from "bun:ffi";
import { EdgeError } from "../errors";
import { errno, errnoText, libc } from "./libc";
import { Fd } from "./fd";

/** asm-generic numbers: the same on x86_64 and aarch64. */
export const SYS_IO_URING_SETUP = 425;
export const SYS_IO_URING_ENTER = 426;
export const SYS_IO_URING_REGISTER = 427;

/** struct io_uring_sqe (64 bytes): byte offsets. */
export const SQE = { size: 64, opcode: 0, flags: 1, ioprio: 2, fd: 4, off: 8, addr: 16, len: 24, opFlags: 28, userData: 32, bufGroup: 40, personality: 42, fileIndex: 44, addr3: 48 } as const;
/** struct io_uring_cqe (16 bytes without IORING_SETUP_CQE32). */
export const CQE = { size: 16, userData: 0, res: 8, flags: 12 } as const;
/** struct io_uring_params (120 bytes) and its io_sqring_offsets / io_cqring_offsets members. */
export const PARAMS = { size: 120, sqEntries: 0, cqEntries: 4, flags: 8, features: 20, sqOff: 40, cqOff: 80 } as const;
export const SQ_OFF = { head: 0, tail: 4, ringMask: 8, ringEntries: 12, flags: 16, dropped: 20, array: 24 } as const;
export const CQ_OFF = { head: 0, tail: 4, ringMask: 8, ringEntries: 12, overflow: 16, cqes: 20, flags: 24 } as const;
/** struct io_uring_buf_reg (40 bytes): IORING_REGISTER_PBUF_RING's argument. */
export const BUF_REG = { size: 40, ringAddr: 0, ringEntries: 8, bgid: 12 } as const;
/** struct io_uring_buf (16 bytes); the ring's tail overlays entry 0's resv (struct io_uring_buf_ring). */
export const BUF = { size: 16, addr: 0, len: 8, bid: 12, tail: 14 } as const;

/** struct io_uring_getevents_arg (IORING_ENTER_EXT_ARG: a wait with a timeout). */
export const GETEVENTS_ARG = { size: 24, ts: 16 } as const;

/** enum io_uring_op: the opcodes used. */
export const OP = { NOP: 0, ACCEPT: 13, ASYNC_CANCEL: 14, CONNECT: 16, CLOSE: 19, SEND: 26, RECV: 27, SHUTDOWN: 34 } as const;

export const IORING_SETUP_SUBMIT_ALL = 1 << 7;
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;
export const IORING_FEAT_SINGLE_MMAP = 1 << 0;
export const IORING_FEAT_NODROP = 1 << 1;
export const IORING_ENTER_GETEVENTS = 1 << 0;
export const IORING_ENTER_EXT_ARG = 1 << 3;
export const IORING_FEAT_EXT_ARG = 1 << 8;
export const IORING_OFF_SQ_RING = 0;
export const IORING_OFF_SQES = 0x10000000;
export const IORING_REGISTER_PBUF_RING = 22;
export const IOSQE_IO_LINK = 1 << 2;
export const IOSQE_BUFFER_SELECT = 1 << 5;
export const IORING_CQE_F_BUFFER = 1 << 0;
export const IORING_CQE_F_MORE = 1 << 1;
export const IORING_CQE_BUFFER_SHIFT = 16;
/** In sqe->ioprio. */
export const IORING_ACCEPT_MULTISHOT = 1 << 0;
export const IORING_RECV_MULTISHOT = 1 << 1;
/** In sqe->cancel_flags. */
export const IORING_ASYNC_CANCEL_ALL = 1 << 0;
export const IORING_ASYNC_CANCEL_FD = 1 << 1;

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_POPULATE = 0x8000;
const EINTR = 4;
const ETIME = 62;
const PAGE = 4096;
const TWO32 = 2 ** 32;

function mapOrThrow(len: number, prot: number, flags: number, fd: number, off: number, what: string): number {
  const at = Number(libc.mmap(0, len, prot, flags, fd, off));
  if (at === -1 || at === 0) throw new EdgeError(what, `mmap: ${errnoText(errno())}`, "kernel");
  return at;
}

/**
 * One io_uring instance: the owner of its fd and its mappings. Single
 * issuer: only the thread that made it submits (IORING_SETUP_SINGLE_ISSUER),
 * and completions run only when that thread enters the kernel to wait for
 * them (IORING_SETUP_DEFER_TASKRUN), so a loop turn's sends, receives and
 * accepts are done in one io_uring_enter.
 */
export class Ring {
  private readonly fd: Fd;
  private readonly maps: [number, number][] = [];
  /** The SQEs, as words, bytes and halves. */
  private readonly sq32: Uint32Array;
  private readonly sq8: Uint8Array;
  private readonly sq16: Uint16Array;
  /** The SQ and CQ rings' shared memory as words (head and tail are read and written with Atomics). */
  private readonly ring: Uint32Array;
  private readonly ringI: Int32Array;
  private readonly sqHeadAt: number;
  private readonly sqTailAt: number;
  private readonly sqMask: number;
  readonly sqEntries: number;
  private readonly cqHeadAt: number;
  private readonly cqTailAt: number;
  private readonly cqMask: number;
  private readonly cqesAt: number;
  /** SQEs filled since the last enter, and the local tail. */
  private pending = 0;
  private sqTail = 0;
  /** CQ ring: the next entry to read, and the tail seen by the last peek. */
  private cqHead = 0;
  private cqTail = 0;
  /** io_uring_enter calls made (for the profile). */
  enters = 0;
  /** The timed wait's io_uring_getevents_arg and its __kernel_timespec, in one buffer of their own. */
  private readonly waitArg = new BigInt64Array(new ArrayBuffer(GETEVENTS_ARG.size + 16));
  private readonly waitArgAt: number;

  constructor(entries: number) {
    this.waitArgAt = ptr(this.waitArg);
    this.waitArg[GETEVENTS_ARG.ts / 8] = BigInt(this.waitArgAt + GETEVENTS_ARG.size);
    const params = new Uint32Array(new ArrayBuffer(PARAMS.size));
    params[PARAMS.flags / 4] = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    const rc = Number(libc.syscall(SYS_IO_URING_SETUP, entries, ptr(params), 0, 0, 0, 0));
    this.fd = Fd.from(rc, "io_uring_setup");
    try {
      const features = params[PARAMS.features / 4]!;
      if (!(features & IORING_FEAT_SINGLE_MMAP) || !(features & IORING_FEAT_NODROP) || !(features & IORING_FEAT_EXT_ARG))
        throw new EdgeError("io_uring", "the kernel lacks IORING_FEAT_SINGLE_MMAP, NODROP or EXT_ARG (Linux ≥ 5.11)", "kernel");
      const sq = (k: keyof typeof SQ_OFF) => params[(PARAMS.sqOff + SQ_OFF[k]) / 4]!;
      const cq = (k: keyof typeof CQ_OFF) => params[(PARAMS.cqOff + CQ_OFF[k]) / 4]!;
      this.sqEntries = params[PARAMS.sqEntries / 4]!;
      const cqEntries = params[PARAMS.cqEntries / 4]!;
      // One mapping holds both rings (IORING_FEAT_SINGLE_MMAP): the larger of the two sizes.
      const ringBytes = Math.max(sq("array") + this.sqEntries * 4, cq("cqes") + cqEntries * CQE.size);
      const ringAt = this.map(ringBytes, MAP_SHARED | MAP_POPULATE, this.fd.raw, IORING_OFF_SQ_RING, "io_uring rings");
      const sqesBytes = this.sqEntries * SQE.size;
      const sqesAt = this.map(sqesBytes, MAP_SHARED | MAP_POPULATE, this.fd.raw, IORING_OFF_SQES, "io_uring sqes");
      const ringBuf = toArrayBuffer(ringAt as Pointer, 0, ringBytes);
      this.ring = new Uint32Array(ringBuf);
      this.ringI = new Int32Array(ringBuf);
      const sqesBuf = toArrayBuffer(sqesAt as Pointer, 0, sqesBytes);
      this.sq32 = new Uint32Array(sqesBuf);
      this.sq8 = new Uint8Array(sqesBuf);
      this.sq16 = new Uint16Array(sqesBuf);
      this.sqHeadAt = sq("head") / 4;
      this.sqTailAt = sq("tail") / 4;
      this.sqMask = this.ring[sq("ringMask") / 4]!;
      this.cqHeadAt = cq("head") / 4;
      this.cqTailAt = cq("tail") / 4;
      this.cqMask = this.ring[cq("ringMask") / 4]!;
      this.cqesAt = cq("cqes") / 4;
      // The SQ array maps ring slot i to SQE i, once: SQEs are used in ring order.
      const array = sq("array") / 4;
      for (let i = 0; i < this.sqEntries; i++) this.ring[array + i] = i;
      this.sqTail = this.ring[this.sqTailAt]!;
      this.cqHead = this.ring[this.cqHeadAt]!;
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private map(len: number, flags: number, fd: number, off: number, what: string): number {
    const at = mapOrThrow(len, PROT_READ | PROT_WRITE, flags, fd, off, what);
    this.maps.push([at, len]);
    return at;
  }

  /** The ring's fd, for io_uring_register. */
  get raw(): number {
    return this.fd.raw;
  }

  /** SQEs free for this turn. */
  get room(): number {
    return this.sqEntries - (this.sqTail - Atomics.load(this.ring, this.sqHeadAt));
  }

  /**
   * A zeroed SQE for `op` on `fd`, tagged with `tag` (the CQE's user_data);
   * returns its word index for the setters below. When the SQ is full the
   * queued SQEs are submitted first (one more enter, no wait).
   */
  prep(op: number, fd: number, tag: number): number {
    if (this.sqTail - Atomics.load(this.ring, this.sqHeadAt) >= this.sqEntries) this.enter(0, false);
    const i = this.sqTail & this.sqMask;
    const w = i * 16;
    this.sq32.fill(0, w, w + 16);
    this.sq8[i * 64] = op;
    this.sq32[w + 1] = fd;
    this.sq32[w + 8] = tag >>> 0;
    this.sq32[w + 9] = Math.floor(tag / TWO32);
    this.sqTail++;
    this.pending++;
    // Published to the kernel at the next enter (store-release of the tail there).
    return w;
  }

  setFlags(w: number, flags: number): void {
    this.sq8[w * 4 + SQE.flags] = flags;
  }
  setIoprio(w: number, v: number): void {
    this.sq16[w * 2 + SQE.ioprio / 2] = v;
  }
  setAddr(w: number, addr: number): void {
    this.sq32[w + 4] = addr >>> 0;
    this.sq32[w + 5] = Math.floor(addr / TWO32);
  }
  setOff(w: number, off: number): void {
    this.sq32[w + 2] = off >>> 0;
    this.sq32[w + 3] = Math.floor(off / TWO32);
  }
  setLen(w: number, len: number): void {
    this.sq32[w + 6] = len;
  }
  /** msg_flags / accept_flags / cancel_flags: one word for every opcode. */
  setOpFlags(w: number, v: number): void {
    this.sq32[w + 7] = v;
  }
  setBufGroup(w: number, g: number): void {
    this.sq16[w * 2 + SQE.bufGroup / 2] = g;
  }

  /**
   * Submit what was prepared and wait for at least `wait` completions: one
   * io_uring_enter(2). With `reap` (IORING_ENTER_GETEVENTS) the deferred
   * completion work runs even when `wait` is 0 (DEFER_TASKRUN posts CQEs only
   * then). `timeoutMs` bounds the wait (IORING_ENTER_EXT_ARG). Returns the
   * number submitted, or -1 when nothing was and the wait ended without its
   * completions (a signal: EINTR; the timeout: ETIME).
   */
  enter(wait: number, reap = true, timeoutMs = -1): number {
    Atomics.store(this.ring, this.sqTailAt, this.sqTail);
    const n = this.pending;
    this.enters++;
    let flags = reap ? IORING_ENTER_GETEVENTS : 0;
    let arg = 0;
    let argSize = 0;
    if (timeoutMs >= 0 && wait > 0) {
      const ts = GETEVENTS_ARG.size / 8;
      this.waitArg[ts] = BigInt(Math.floor(timeoutMs / 1000));
      this.waitArg[ts + 1] = BigInt((timeoutMs % 1000) * 1_000_000);
      flags |= IORING_ENTER_EXT_ARG;
      arg = this.waitArgAt;
      argSize = GETEVENTS_ARG.size;
    }
    const rc = Number(libc.syscall(SYS_IO_URING_ENTER, this.fd.raw, n, wait, flags, arg, argSize));
    if (rc < 0) {
      const e = errno();
      if (e === EINTR || e === ETIME) return -1;
      throw new EdgeError("io_uring_enter", errnoText(e), "kernel");
    }
    this.pending -= rc;
    return rc;
  }

  /**
   * Forget the SQEs prepared and not consumed by the kernel (after an enter
   * failed): the tail goes back to the kernel's head, so the next enter
   * submits none of them.
   */
  discard(): void {
    this.sqTail = Atomics.load(this.ring, this.sqHeadAt);
    Atomics.store(this.ring, this.sqTailAt, this.sqTail);
    this.pending = 0;
  }

  /** Completions ready now (after an enter): read them with the cqe* accessors, then advance(). */
  ready(): number {
    this.cqTail = Atomics.load(this.ring, this.cqTailAt);
    return (this.cqTail - this.cqHead) >>> 0;
  }

  /** Word index of the k-th ready CQE. */
  cqe(k: number): number {
    return this.cqesAt + ((this.cqHead + k) & this.cqMask) * 4;
  }
  tagOf(c: number): number {
    return this.ring[c]! + this.ring[c + 1]! * TWO32;
  }
  resOf(c: number): number {
    return this.ringI[c + 2]!;
  }
  flagsOf(c: number): number {
    return this.ring[c + 3]!;
  }

  /** Hand `n` read CQEs back to the kernel. */
  advance(n: number): void {
    this.cqHead = (this.cqHead + n) >>> 0;
    Atomics.store(this.ring, this.cqHeadAt, this.cqHead);
  }

  /** io_uring_register(2). */
  register(op: number, arg: Uint32Array, nr: number, what: string): void {
    const rc = Number(libc.syscall(SYS_IO_URING_REGISTER, this.fd.raw, op, ptr(arg), nr, 0, 0));
    if (rc < 0) throw new EdgeError(what, errnoText(errno()), "kernel");
  }

  /** Idempotent: closes the ring (cancelling what it still holds) and unmaps its memory. */
  close(): void {
    this.fd.close();
    for (const [at, len] of this.maps.splice(0)) libc.munmap(at, len);
  }
}

/**
 * A provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux ≥ 5.19): the
 * kernel picks a buffer for each receive of group `bgid` and reports its id in
 * the CQE; the owner gives it back with provide() + publish(). The ring is
 * anonymous mmap'ed memory (page-aligned, as the kernel requires, and never
 * moved); the buffers are the caller's (a BufferPool's addresses).
 */
export class BufferRing {
  private readonly at: number;
  private readonly bytes: number;
  private readonly u32: Uint32Array;
  private readonly u16: Uint16Array;
  private readonly mask: number;
  private tail = 0;

  constructor(
    private readonly ring: Ring,
    readonly bgid: number,
    readonly entries: number,
  ) {
    if (entries < 1 || entries > 32768 || (entries & (entries - 1)) !== 0) throw new EdgeError("provided-buffer ring", `${entries} entries: a power of two up to 32768`, "internal");
    this.bytes = Math.ceil((entries * BUF.size) / PAGE) * PAGE;
    this.at = mapOrThrow(this.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0, "provided-buffer ring");
    const buf = toArrayBuffer(this.at as Pointer, 0, this.bytes);
    this.u32 = new Uint32Array(buf);
    this.u16 = new Uint16Array(buf);
    this.mask = entries - 1;
    const reg = new Uint32Array(new ArrayBuffer(BUF_REG.size));
    reg[0] = this.at >>> 0;
    reg[1] = Math.floor(this.at / TWO32);
    reg[BUF_REG.ringEntries / 4] = entries;
    new Uint16Array(reg.buffer)[BUF_REG.bgid / 2] = bgid;
    try {
      ring.register(IORING_REGISTER_PBUF_RING, reg, 1, "IORING_REGISTER_PBUF_RING");
    } catch (e) {
      libc.munmap(this.at, this.bytes);
      throw e;
    }
  }

  /** Queue buffer `bid` ([addr, addr+len)) for the kernel; visible after publish(). */
  provide(bid: number, addr: number, len: number): void {
    const e = (this.tail & this.mask) * 4;
    this.u32[e] = addr >>> 0;
    this.u32[e + 1] = Math.floor(addr / TWO32);
    this.u32[e + 2] = len;
    this.u16[e * 2 + BUF.bid / 2] = bid;
    this.tail = (this.tail + 1) & 0xffff;
  }

  /** Make the provided buffers visible (store-release of the tail). */
  publish(): void {
    Atomics.store(this.u16, BUF.tail / 2, this.tail);
  }
}
