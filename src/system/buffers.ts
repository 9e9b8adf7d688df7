// A bounded pool of fixed-size I/O buffers carved out of one preallocated
// ArrayBuffer. Every buffer the kernel reads into or sends from must stay at
// one address for the duration of the call: JSC allocates small typed arrays
// in the GC heap and may move them, but a large ArrayBuffer's backing store
// is malloc'ed once and never moves, so views of the slab are pinned, and
// their addresses are computed once here instead of a ptr() per call.
import { ptr } from "bun:ffi";
import { EdgeError } from "../errors";

export class BufferPool {
  /** The slab: the only allocation, made once. */
  private readonly slab: ArrayBuffer;
  private readonly base: number;
  /** Free buffer indexes, used last-in first-out (the most recently used buffer is the one in cache). */
  private readonly free: Int32Array;
  private top: number;
  /** Buffers handed out and not yet given back (for metrics and the bound test). */
  get inUse(): number {
    return this.count - this.top;
  }

  constructor(
    /** How many buffers; acquire() returns -1 when all are out: the caller stops reading (backpressure). */
    readonly count: number,
    /** Bytes per buffer. */
    readonly size: number,
  ) {
    if (!Number.isInteger(count) || count < 1 || !Number.isInteger(size) || size < 1) throw new EdgeError("buffer pool", `${count} buffers of ${size} bytes`, "internal");
    this.slab = new ArrayBuffer(count * size);
    this.base = ptr(new Uint8Array(this.slab));
    this.free = new Int32Array(count);
    for (let i = 0; i < count; i++) this.free[i] = count - 1 - i;
    this.top = count;
  }

  /** A free buffer's index, or -1 when every buffer is out. */
  acquire(): number {
    return this.top === 0 ? -1 : this.free[--this.top]!;
  }

  /** Give buffer `i` back; it must be out (a double release would hand it to two owners). */
  release(i: number): void {
    if (this.top >= this.count || i < 0 || i >= this.count) throw new EdgeError("buffer pool", `release of buffer ${i} that is not out`, "internal");
    this.free[this.top++] = i;
  }

  /** The address of byte `offset` of buffer i, for a system call. */
  address(i: number, offset = 0): number {
    return this.base + i * this.size + offset;
  }

  /** A view of bytes [from, to) of buffer i (for JS that reads or fills it; not needed for recv/send). */
  view(i: number, from = 0, to = this.size): Uint8Array {
    return new Uint8Array(this.slab, i * this.size + from, to - from);
  }
}
