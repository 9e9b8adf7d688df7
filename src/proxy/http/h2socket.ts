import type { Socket } from "bun";
import { Duplex } from "node:stream";

/** Frames the codec may have written and we not yet sent, before it is made to wait. */
const OUT_HIGH = 64 * 1024;

/**
 * The Bun socket as the node stream node:http2 reads and writes.
 *
 * Reading: paused at the socket when node's stream buffer is full (push()
 * false), resumed by _read.
 *
 * Writing: the codec writes each frame on its own (HEADERS, DATA, WINDOW_UPDATE,
 * ...); sent one by one, each would be a TLS record and a syscall (measured:
 * 30% of the CPU of a proxied request). So frames are gathered and sent in
 * one write per turn of the event loop (setImmediate). The codec's write
 * callback is held while more than OUT_HIGH is unsent, or while a partial
 * write waits for `drain`: that is node's backpressure on everything the
 * session sends.
 */
export class SocketDuplex extends Duplex {
  private out: Uint8Array[] = [];
  private outBytes = 0;
  private scheduled = false;
  /** What the socket has not taken of the last write (until `drain`). */
  private rest: Uint8Array | undefined;
  /** The codec's write callback, held (see above). */
  private held: ((e?: Error) => void) | undefined;
  /** Called once everything is sent (hangUp waits for it). */
  private onFlushed: (() => void) | undefined;
  paused = false;
  /** Bytes the socket took (what the client was sent: frames, TLS records' plaintext). */
  sent = 0;

  constructor(
    private readonly s: Socket<any>,
    private readonly hangUp: () => void,
  ) {
    super();
  }

  _read(): void {
    if (!this.paused) return;
    this.paused = false;
    this.s.resume();
  }

  feed(chunk: Uint8Array): void {
    if (!this.push(chunk) && !this.paused) {
      this.paused = true;
      this.s.pause();
    }
  }

  _write(chunk: Buffer, _enc: string, cb: (e?: Error) => void): void {
    this.queue(chunk);
    if (this.rest === undefined && this.outBytes < OUT_HIGH) return cb();
    this.held = cb;
  }

  /** A frame of ours (GOAWAY), after everything the codec wrote, sent now. */
  writeNow(frame: Uint8Array): void {
    this.queue(frame);
    this.send();
  }

  private queue(chunk: Uint8Array): void {
    this.out.push(chunk);
    this.outBytes += chunk.length;
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.flushOut);
  }

  private readonly flushOut = () => {
    this.scheduled = false;
    this.send();
  };

  /** Everything queued in one write (unless a partial one is still waiting for `drain`). */
  private send(): void {
    if (this.rest !== undefined || this.out.length === 0) return this.settle();
    const buf = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out, this.outBytes);
    this.out = [];
    this.outBytes = 0;
    const n = this.s.write(buf);
    // n < 0: the socket is closing; its close handler ends the session.
    if (n > 0) this.sent += n;
    if (n >= 0 && n < buf.length) this.rest = buf.subarray(n);
    this.settle();
  }

  /** The socket took what was waiting: send the rest and what was queued meanwhile. */
  drain(): void {
    if (this.rest === undefined) return;
    const n = this.s.write(this.rest);
    if (n > 0) this.sent += n;
    if (n >= 0 && n < this.rest.length) {
      this.rest = this.rest.subarray(n);
      return;
    }
    this.rest = undefined;
    this.send();
  }

  /** Give the codec its callback back, and hangUp its turn, when nothing holds them. */
  private settle(): void {
    if (this.rest !== undefined) return;
    if (this.held && this.outBytes < OUT_HIGH) {
      const cb = this.held;
      this.held = undefined;
      cb();
    }
    if (this.onFlushed && this.outBytes === 0) {
      const f = this.onFlushed;
      this.onFlushed = undefined;
      f();
    }
  }

  /** `f` once every byte written so far is in the socket (at once when it is). */
  whenFlushed(f: () => void): void {
    if (this.rest === undefined && this.outBytes === 0) return f();
    this.onFlushed = f;
  }

  // The codec is done with the connection. Not at once: it ends its stream before it emits
  // the session's error, and the GOAWAY for that is ours to write first.
  _final(cb: () => void): void {
    setImmediate(this.hangUp);
    cb();
  }

  _destroy(e: Error | null, cb: (e: Error | null) => void): void {
    setImmediate(this.hangUp);
    cb(e);
  }
}
