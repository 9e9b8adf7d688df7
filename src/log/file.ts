import { closeSync, openSync, write, writeSync, writev } from "node:fs";
import { ConfigError } from "../errors";
import { LineWriter } from "./line";
import type { RingReader, RingRead } from "./ring";

/*
 * One access log file (src/log/access.ts): a LogFile per path in this
 * process, shared by every service that names it (the registry by path:
 * src/log/files.ts).
 *
 * The data plane only ever appends a line to an in-memory queue (on the
 * main thread, this file's; on the data plane's thread, a shared ring per
 * file, src/log/ring.ts, read here with the file's own): writes
 * are batched (every FLUSH_MS, or sooner once FLUSH_BYTES are queued or a
 * ring is half full; rings that stay empty for a period stop the timer until
 * their next line, so an idle process wakes for none) and
 * asynchronous (fs.write on the thread pool), one write in flight per file.
 * The queue, written-but-unconfirmed bytes included, is bounded
 * (access_log_buffer): a line that does not fit is dropped and counted, so a
 * slow disk or a stalled pipe costs lines, never latency. Several worker
 * processes append to one file: O_APPEND makes each write land whole at the
 * end (each write is whole lines), so lines never interleave.
 *
 * SIGUSR1 reopens every file (logrotate's `postrotate kill -USR1`); a write
 * error is one line on stderr (once per error code until a write succeeds),
 * counted, and the data plane goes on.
 */

/** How long lines wait to be batched into one write. */
const FLUSH_MS = 200;
/** Queued bytes that trigger a write before FLUSH_MS. */
const FLUSH_BYTES = 64 * 1024;

/** Process-wide counters, for /metrics. */
export const accessLogStats = { lines: 0, dropped: 0, writeErrors: 0, sampledOut: 0 };

/** Lines are encoded into buffers of this size as they come (the line's string dies young; no join at flush). */
const CHUNK = 64 * 1024;

export const NO_HEAD = new Uint8Array(0);

/** One log destination in this process, shared by every service that names it. */
export class LogFile {
  private fd: number;
  /** The buffer lines are being encoded into, and how much of it is used. */
  private chunk: Buffer = Buffer.allocUnsafe(CHUNK);
  private used = 0;
  /** Filled buffers waiting for the write in flight. */
  private sealed: Uint8Array[] = [];
  /** Written buffers, for reuse. */
  private spare: Buffer[] = [];
  /** Queued plus in-flight bytes (what the bound covers). */
  private bytes = 0;
  private writing = false;
  private timer: Timer | undefined;
  /** A flush is queued with setImmediate: the lines that come before it runs queue no other. */
  private immediate = false;
  private reopenWanted = false;
  private lastError = "";
  /** Since when (ms) no service of the running config names this path; 0 while one does (retainAccessLogs). */
  unnamedSince = 0;
  /** When the last write started (ms): an unnamed file's descriptor closes once it has been idle long enough. */
  private wroteAt = Date.now();
  /** The descriptor was closed (closeIfIdle): the next write opens the path again. */
  private closed = false;
  /** The data plane thread's rings of lines for this file (src/log/ring.ts), read on a timer or a nudge. */
  private readonly rings: RingReader[] = [];
  private poller: Timer | undefined;

  constructor(
    readonly path: string,
    private readonly maxBytes: number,
  ) {
    this.fd = openLog(path);
  }

  push(line: string): void {
    this.push2(NO_HEAD, line);
  }

  /**
   * Append `head` + `body` as one line. The head (time and service, the same
   * for a millisecond) comes already encoded and is copied in (a memcpy, no
   * second UTF-8 encoding call into native code per line); the body is
   * encoded straight into the buffer, never concatenated with the head (a
   * rope of both would be flattened first, a copy more than the encoding).
   */
  push2(head: Uint8Array, body: string): void {
    const length = head.length + body.length;
    if (this.bytes + length + 1 > this.maxBytes) {
      accessLogStats.dropped++;
      return;
    }
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    const worst = head.length + body.length * 3 + 1;
    if (worst > CHUNK - this.used) {
      this.seal();
      if (worst > CHUNK) {
        // A line longer than a buffer (a huge path) goes on its own.
        const own = Buffer.concat([head, Buffer.from(`${body}\n`)]);
        this.sealed.push(own);
        this.bytes += own.length;
        accessLogStats.lines++;
        return this.schedule();
      }
    }
    let n = head.length;
    if (n !== 0) this.chunk.set(head, this.used);
    n += this.chunk.write(body, this.used + n, "utf8");
    this.chunk[this.used + n] = 10;
    this.used += n + 1;
    this.bytes += n + 1;
    accessLogStats.lines++;
    this.schedule();
  }

  private readonly writer = new LineWriter();
  /** Where the line begun by begin() starts in `chunk`. */
  private lineFrom = 0;

  /**
   * Begin a line of `head` and at most `worst` more bytes, written in place
   * by the caller through the writer, then finish(): or undefined when it
   * could not fit a buffer (the caller makes it a string, push2).
   */
  begin(head: Uint8Array, worst: number): LineWriter | undefined {
    const most = head.length + worst + 1;
    if (most > CHUNK) return undefined;
    if (most > CHUNK - this.used) this.seal();
    const w = this.writer;
    w.buf = this.chunk;
    this.lineFrom = this.used;
    if (head.length !== 0) this.chunk.set(head, this.used);
    w.p = this.used + head.length;
    return w;
  }

  /** The line begun is complete: kept, or dropped and counted if the bound has no room for it. */
  finish(): void {
    const w = this.writer;
    const n = w.p - this.lineFrom + 1;
    if (this.bytes + n > this.maxBytes) {
      accessLogStats.dropped++;
      return;
    }
    this.chunk[w.p] = 10;
    this.used += n;
    this.bytes += n;
    accessLogStats.lines++;
    this.schedule();
  }

  /** Lines of the data plane thread, in a ring: written with this file's own, at least every FLUSH_MS while they come. */
  attach(ring: RingReader): void {
    this.rings.push(ring);
    this.awake();
  }

  /** The rings are read every FLUSH_MS from now on. */
  private awake(): void {
    if (this.poller) return;
    for (const r of this.rings) r.wake();
    this.poller = setInterval(this.tick, FLUSH_MS);
    this.poller.unref();
  }

  /**
   * The timer: the rings read, or, when all of them are empty and nothing
   * is being written, the timer stopped until a writer's next line nudges
   * (RingReader.sleep): an idle data plane costs the main thread no wake-up.
   */
  private readonly tick = (): void => {
    this.poll();
    if (this.writing || this.immediate || this.rings.some((r) => r.unread)) return;
    if (!this.rings.every((r) => r.sleep())) {
      for (const r of this.rings) r.wake();
      return;
    }
    clearInterval(this.poller);
    this.poller = undefined;
  };

  /** Read the rings now if no write is in flight (the timer; a writer's nudge: a ring half full, or a line after a sleep). */
  readonly poll = (): void => {
    this.awake();
    this.countRings();
    if (!this.writing && !this.immediate) this.flush();
  };

  /** The rings' lines written, dropped and sampled out, into the process's counters. */
  countRings(): void {
    for (const r of this.rings) {
      const c = r.counts();
      accessLogStats.lines += c.lines;
      accessLogStats.dropped += c.dropped;
      accessLogStats.sampledOut += c.sampledOut;
    }
  }

  private schedule(): void {
    if (this.writing || this.immediate) return;
    if (this.bytes >= FLUSH_BYTES) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.immediate = true;
      setImmediate(this.flush);
    } else if (!this.timer) {
      this.timer = setTimeout(this.flush, FLUSH_MS);
      this.timer.unref();
    }
  }

  /** The current buffer joins the queue to write. */
  private seal(): void {
    if (this.used === 0) return;
    this.sealed.push(this.chunk.subarray(0, this.used));
    this.chunk = this.spare.pop() ?? Buffer.allocUnsafe(CHUNK);
    this.used = 0;
  }

  private readonly flush = (): void => {
    // Run early (poll: the rings' timer or a nudge), the pending timer is spent too: left, schedule() would add a second.
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.immediate = false;
    if (this.writing) return;
    if (this.reopenWanted) this.reopenNow();
    this.seal();
    // The rings' unread lines go in the same write, straight from the shared memory; their space is given back once written.
    let reads: [RingReader, RingRead][] | undefined;
    for (const r of this.rings) {
      const got = r.read();
      if (got) (reads ??= []).push([r, got]);
    }
    if (this.sealed.length === 0 && !reads) return;
    const own = this.sealed;
    this.sealed = [];
    let ownBytes = 0;
    for (const b of own) ownBytes += b.length;
    let bufs: Uint8Array[] = own;
    let total = ownBytes;
    if (reads) {
      bufs = [...own];
      for (const [, got] of reads) {
        bufs.push(...got.views);
        total += got.bytes;
      }
    }
    // One write: usually one buffer; several (a writev, not a copy into one) after a slow write or a burst.
    this.writing = true;
    const after = () => {
      this.writing = false;
      this.bytes -= ownBytes;
      if (reads) for (const [r, got] of reads) r.release(got);
      // Whole buffers go back for reuse, as many as the bound could ever need.
      for (const b of own) if (b.buffer.byteLength >= CHUNK && this.spare.length * CHUNK < this.maxBytes) this.spare.push(Buffer.from(b.buffer, b.byteOffset, CHUNK));
      if (this.reopenWanted) this.reopenNow();
      // What came in meanwhile waits for a full batch or the timer: a write per completion would cost a thread-pool round trip every few lines.
      if (this.bytes >= FLUSH_BYTES) {
        if (!this.immediate) {
          this.immediate = true;
          setImmediate(this.flush);
        }
      } else if (this.bytes > 0 && !this.timer) {
        this.timer = setTimeout(this.flush, FLUSH_MS);
        this.timer.unref();
      }
    };
    // An idle unnamed file (closeIfIdle) that gets a line after all: a connection of a service a reload removed.
    if (this.closed && !this.openAgain()) return after();
    this.wroteAt = Date.now();
    if (bufs.length === 1) this.writeAll(bufs[0]!, 0, after);
    else
      writev(this.fd, bufs, null, (err, written) => {
        if (err) {
          this.failed(err);
          return after();
        }
        this.lastError = "";
        // Short (a full pipe, a full disk): the rest goes as one buffer, as before.
        if (written < total) return this.writeAll(Buffer.concat(bufs).subarray(written), 0, after);
        after();
      });
  };

  private writeAll(data: Uint8Array, from: number, done: () => void): void {
    write(this.fd, data, from, data.length - from, null, (err, written) => {
      if (err) {
        this.failed(err);
        return done();
      }
      this.lastError = "";
      if (from + written < data.length) return this.writeAll(data, from + written, done);
      done();
    });
  }

  private failed(err: NodeJS.ErrnoException): void {
    accessLogStats.writeErrors++;
    const code = err.code ?? err.message;
    if (code === this.lastError) return;
    this.lastError = code;
    process.stderr.write(`edgeproxy: access log ${this.path}: write failed (${code}); lines are dropped and counted until it works again\n`);
  }

  /** SIGUSR1: reopen once no write is in flight. */
  reopen(): void {
    if (this.path === "-") return;
    this.reopenWanted = true;
    if (!this.writing) this.reopenNow();
  }

  private reopenNow(): void {
    this.reopenWanted = false;
    // Closed: the next write opens the path anyway.
    if (this.closed) return;
    try {
      const fd = openLog(this.path);
      closeSync(this.fd);
      this.fd = fd;
      this.lastError = "";
    } catch (e) {
      accessLogStats.writeErrors++;
      process.stderr.write(`edgeproxy: access log: reopen failed, still writing to the old file: ${(e as Error).message}\n`);
    }
  }

  /**
   * Close the descriptor of a file no service of the running config names
   * (retainAccessLogs) once nothing waits to be written and nothing was for
   * `idleMs`: after a reload moved the log elsewhere, the old file is let go
   * (a logrotated or deleted file's space is freed) instead of held open for
   * the life of the process. True when closed. A line that still comes (a
   * removed service's connection ending late) opens the path again.
   */
  closeIfIdle(now: number, idleMs: number): boolean {
    if (this.closed) return true;
    if (this.path === "-" || this.unnamedSince === 0 || this.writing || this.immediate || this.timer || this.used > 0 || this.sealed.length > 0) return false;
    if (now - Math.max(this.wroteAt, this.unnamedSince) < idleMs || this.rings.some((r) => r.unread)) return false;
    closeSync(this.fd);
    this.closed = true;
    return true;
  }

  /** Open a closed file's path again (a line came after closeIfIdle); a failure is counted and said like a write's. */
  private openAgain(): boolean {
    try {
      this.fd = openLog(this.path);
      this.closed = false;
      return true;
    } catch (e) {
      accessLogStats.writeErrors++;
      const why = (e as Error).message;
      if (why !== this.lastError) {
        this.lastError = why;
        process.stderr.write(`edgeproxy: ${why}; lines are dropped and counted until it works again\n`);
      }
      return false;
    }
  }

  /** At exit: what is queued, written synchronously (the process is ending; nothing else waits). */
  drainSync(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.poller) clearInterval(this.poller);
    this.seal();
    // A write still in flight means a stalled destination (a full pipe): exiting must not wait on it.
    if (this.writing || (this.closed && (this.sealed.length > 0 || this.rings.some((r) => r.unread)) && !this.openAgain())) {
      this.sealed = [];
      return;
    }
    if (this.closed) return;
    try {
      for (const b of this.sealed) writeSync(this.fd, b);
      for (const r of this.rings) {
        const got = r.read();
        if (got) for (const v of got.views) writeSync(this.fd, v);
      }
    } catch {
      // Exiting: nothing left to tell.
    }
    this.sealed = [];
  }
}

/** Open a log for appending (created 0640 if absent); "-" is stdout. A ConfigError names the path. */
export function openLog(path: string): number {
  if (path === "-") return 1;
  try {
    return openSync(path, "a", 0o640);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError("access_log", `cannot open "${path}" for appending: ${code ?? (e as Error).message}`);
  }
}
