import { LineWriter } from "./line";

/*
 * The access log's lines from the data plane's thread to the main thread,
 * which owns the file (src/log/access.ts): one ring of bytes per log path in
 * a SharedArrayBuffer, one writer (the data plane thread writes whole lines
 * in place, LineWriter) and one reader (the main thread writes the ring's
 * bytes to the file straight from the shared memory, then gives the space
 * back). No message per batch, no buffer per batch, no copy: posting batches
 * of transferred buffers cost ~4% of an http one-connection-per-request
 * run's CPU (paired runs, bench/pair.sh), writing the lines about as much.
 *
 * Positions are byte counters that only grow (mod 2^32, the ring's size
 * divides 2^32); a line never straddles the ring's end: the writer skips the
 * rest of the lap and records where the lap's lines end (WRAP). The writer
 * stores WRAP only when it starts a lap with the reader past the previous
 * lap's end, so the reader always sees the WRAP of the lap it is reading.
 * Atomics order the bytes before the position that publishes them
 * (ECMA-262 §29, the memory model: a seq-cst store synchronizes with the load
 * that reads it).
 */

/**
 * A ring's bytes: the log's bound (access_log_buffer) rounded down to a power
 * of two (positions are counters mod 2^32, which a power of two divides),
 * from 64 KiB: the lines of this thread wait in it as the main thread's wait
 * in its own queue, each up to the bound.
 */
export function ringBytes(bound: number): number {
  let n = 1 << 16;
  while (n * 2 <= bound && n < 1 << 30) n *= 2;
  return n;
}

// Int32 header slots.
const HEAD = 0; // written up to (writer)
const TAIL = 1; // read up to (reader)
const WRAP = 2; // where the current lap's lines end (writer)
const LINES = 3; // lines written (writer), read as a difference
const DROPPED = 4; // lines dropped: ring full or line too long (writer)
const SAMPLED_OUT = 5; // lines sampled out (writer)
const NUDGED = 6; // 1: the writer has asked for a read since the last one
const ASLEEP = 7; // 1: the reader stopped its timer (an idle ring): the next line asks for a read
const HEADER_BYTES = 64;

/** A ring's memory: its header and `bytes` (ringBytes) of lines. */
export function newRingMemory(bytes: number): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_BYTES + bytes);
}

/** The ring's size, from its memory. */
function sizeOf(memory: SharedArrayBuffer): number {
  return memory.byteLength - HEADER_BYTES;
}

/** The data plane thread's end of one path's ring. */
export class RingWriter {
  private readonly h: Int32Array;
  private readonly data: Buffer;
  /** Our own copy of HEAD (only we write it). */
  private head = 0;
  private readonly writer = new LineWriter();
  /** Where the line begun starts (its pad skipped), and the head after the pad. */
  private from = 0;
  private headAfterPad = 0;
  private readonly size: number;
  private readonly mask: number;
  /** The longest line it takes (longer ones are dropped and counted). */
  private readonly maxLine: number;
  /** Above this many unread bytes the writer asks the reader to come sooner than its timer (once until it has read). */
  private readonly nudgeAt: number;

  constructor(
    readonly memory: SharedArrayBuffer,
    /** Asks the reader to come now: the ring passed half full, or a line came while the reader slept. */
    private readonly nudge: () => void,
  ) {
    this.size = sizeOf(memory);
    this.mask = this.size - 1;
    this.maxLine = this.size / 8;
    this.nudgeAt = this.size / 2;
    this.h = new Int32Array(memory, 0, HEADER_BYTES / 4);
    this.data = Buffer.from(memory, HEADER_BYTES, this.size);
  }

  /**
   * Begin a line of `head` and at most `worst` more bytes; the caller writes
   * it through the writer, then finish(). Undefined: longer than the ring
   * takes (the caller counts it). Null: the ring is full, the line is
   * dropped and counted here, and nothing is to be made: a reader that
   * falls behind (a slow disk) costs the writer no formatting of lines
   * that cannot be kept.
   */
  begin(head: Uint8Array, worst: number): LineWriter | undefined | null {
    const most = head.length + worst + 1;
    if (most > this.maxLine) return undefined;
    const w = this.writer;
    const tail = Atomics.load(this.h, TAIL) >>> 0;
    let at = this.head;
    const off = at & this.mask;
    const pad = off + most > this.size ? this.size - off : 0;
    if (((at - tail) >>> 0) + pad + most > this.size) {
      Atomics.add(this.h, DROPPED, 1);
      return null;
    }
    if (pad !== 0) {
      // The reader is past the previous lap's end (the check above), so this WRAP is the only one it can need.
      Atomics.store(this.h, WRAP, off);
      at = (at + pad) >>> 0;
    }
    this.headAfterPad = at;
    this.from = at & this.mask;
    w.buf = this.data;
    this.data.set(head, this.from);
    w.p = this.from + head.length;
    return w;
  }

  /** The line begun is complete: published. */
  finish(): void {
    const w = this.writer;
    this.data[w.p] = 10;
    const n = w.p + 1 - this.from;
    const head = (this.head = (this.headAfterPad + n) >>> 0);
    Atomics.store(this.h, HEAD, head | 0);
    Atomics.add(this.h, LINES, 1);
    if (((head - (Atomics.load(this.h, TAIL) >>> 0)) >>> 0) >= this.nudgeAt && Atomics.compareExchange(this.h, NUDGED, 0, 1) === 0) this.nudge();
    // The reader sleeps (RingReader.sleep): this line wakes it, once. HEAD is stored above before ASLEEP is loaded
    // here, and the reader stores ASLEEP before it loads HEAD: with sequentially consistent atomics one of the two
    // sees the other's store, so a line is never left unread with the reader asleep.
    else if (Atomics.load(this.h, ASLEEP) !== 0 && Atomics.compareExchange(this.h, ASLEEP, 1, 0) === 1) this.nudge();
  }

  /** A line made as a string (rare lines): one too long for the ring is dropped and counted. */
  add(line: string, head: Uint8Array): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit; a line that bound refuses is measured (long ASCII paths fit).
    let worst = line.length * 3;
    if (head.length + worst >= this.maxLine) worst = Buffer.byteLength(line);
    const w = this.begin(head, worst);
    if (w === null) return;
    if (!w) return this.dropped();
    w.p += w.buf.write(line, w.p, "utf8");
    this.finish();
  }

  dropped(): void {
    Atomics.add(this.h, DROPPED, 1);
  }

  skipped(): void {
    Atomics.add(this.h, SAMPLED_OUT, 1);
  }
}

/** What a read found: the bytes to write (one or two views of the ring) and the position to give back once written. */
export interface RingRead {
  readonly views: Uint8Array[];
  readonly bytes: number;
  readonly to: number;
}

/** The main thread's end of one path's ring. */
export class RingReader {
  private readonly h: Int32Array;
  private readonly data: Uint8Array;
  private lines = 0;
  private droppedSeen = 0;
  private sampledSeen = 0;
  private readonly size: number;

  constructor(readonly memory: SharedArrayBuffer) {
    this.size = sizeOf(memory);
    this.h = new Int32Array(memory, 0, HEADER_BYTES / 4);
    this.data = new Uint8Array(memory, HEADER_BYTES, this.size);
  }

  /** The unread bytes, undefined when none. They stay the reader's until release(). */
  read(): RingRead | undefined {
    const head = Atomics.load(this.h, HEAD) >>> 0;
    const tail = Atomics.load(this.h, TAIL) >>> 0;
    const span = (head - tail) >>> 0;
    if (span === 0) return undefined;
    const t = tail & (this.size - 1);
    // A lap ends with its last line or a skipped rest (WRAP): a span that fits before the end never wrapped.
    if (span <= this.size - t) return { views: [this.data.subarray(t, t + span)], bytes: span, to: head };
    // The span passes the ring's end: this lap's lines up to WRAP, then the next lap's from 0.
    const wrap = Atomics.load(this.h, WRAP);
    const views: Uint8Array[] = [];
    if (wrap > t) views.push(this.data.subarray(t, wrap));
    const h = head & (this.size - 1);
    if (h > 0) views.push(this.data.subarray(0, h));
    let bytes = 0;
    for (const v of views) bytes += v.length;
    return { views, bytes, to: head };
  }

  /** Are there lines not read yet? */
  get unread(): boolean {
    return Atomics.load(this.h, HEAD) !== Atomics.load(this.h, TAIL);
  }

  /**
   * The reader stops reading on a timer: true when the ring is empty and
   * the writer will nudge at its next line (finish); false, and still
   * awake, when a line is unread (it came as the reader looked).
   */
  sleep(): boolean {
    Atomics.store(this.h, ASLEEP, 1);
    if (!this.unread) return true;
    this.wake();
    return false;
  }

  /** Reading on a timer again: no nudge wanted for each line. */
  wake(): void {
    Atomics.store(this.h, ASLEEP, 0);
  }

  /** The bytes of a read are written: the writer may reuse them. */
  release(r: RingRead): void {
    Atomics.store(this.h, TAIL, r.to | 0);
    Atomics.store(this.h, NUDGED, 0);
  }

  /** Lines written, dropped and sampled out since the last call. */
  counts(): { lines: number; dropped: number; sampledOut: number } {
    const lines = Atomics.load(this.h, LINES);
    const dropped = Atomics.load(this.h, DROPPED);
    const sampledOut = Atomics.load(this.h, SAMPLED_OUT);
    const out = { lines: (lines - this.lines) | 0, dropped: (dropped - this.droppedSeen) | 0, sampledOut: (sampledOut - this.sampledSeen) | 0 };
    this.lines = lines;
    this.droppedSeen = dropped;
    this.sampledSeen = sampledOut;
    return out;
  }
}
