import type { AccessLogConfig } from "../../config/service";
import { isoNow } from "../../log/access";
import { LineWriter } from "../../log/line";

/*
 * The access log of UDP flows, on the UDP data plane's thread. The file and
 * its bounded writer belong to the main thread (src/log/access.ts): lines
 * are made here, held in a bounded batch, and posted to it whenever the
 * epoll loop yields (worker.ts), a message per batch, not per line.
 */

/** Bytes held between posts, every path together; lines beyond are dropped (and counted with the writer's drops). */
const MAX_PENDING_BYTES = 1 << 20;
/** Lines are written into buffers of this size, each its own ArrayBuffer: transferred to the main thread, not copied. */
const CHUNK = 32 * 1024;
/** A buffer used less than this at a post is copied out (and kept): a quiet service does not post 32 KiB per line. */
const COPY_BELOW = CHUNK / 4;

/**
 * One batch for the main thread: per log path, buffers of whole lines (UTF-8,
 * each line ending in "\n") with the number of lines in each; and what was
 * dropped or sampled out here. The buffers' ArrayBuffers are transferred
 * (FlowLogSink.transfer), so the main thread queues them as they are.
 */
export interface AccessBatch {
  readonly byPath: [path: string, chunks: Uint8Array[], lines: number[]][];
  readonly dropped: number;
  readonly sampledOut: number;
}

function chunk(size = CHUNK): Buffer {
  return Buffer.from(new ArrayBuffer(size));
}

/** One path's lines until the next post. */
class PathLines {
  chunks: Uint8Array[] = [];
  lines: number[] = [];
  buf = chunk();
  used = 0;
  /** Lines in buf. */
  count = 0;

  /** buf's lines join the batch (copied out when few, so buf stays for the next ones). */
  seal(): void {
    if (this.count === 0) return;
    if (this.used < COPY_BELOW) {
      const copy = new Uint8Array(new ArrayBuffer(this.used));
      copy.set(this.buf.subarray(0, this.used));
      this.chunks.push(copy);
    } else {
      this.chunks.push(this.buf.subarray(0, this.used));
      this.buf = chunk();
    }
    this.lines.push(this.count);
    this.used = this.count = 0;
  }
}

/**
 * The access log lines of every service on the data plane's thread, until the
 * next post. Lines are written as UTF-8 bytes where they are made (the
 * LineWriter, as the main thread's log does): no string per line, no copy of
 * it in the post, no encoding on the main thread.
 */
export class FlowLogSink {
  private byPath = new Map<string, PathLines>();
  private bytes = 0;
  private dropped = 0;
  private sampledOut = 0;
  private readonly writer = new LineWriter();
  /** The path of the line begun, and where it starts. */
  private open: PathLines | undefined;
  private lineFrom = 0;

  private path(path: string): PathLines {
    let p = this.byPath.get(path);
    if (!p) this.byPath.set(path, (p = new PathLines()));
    return p;
  }

  /**
   * Begin a line of `head` and at most `worst` more bytes for `path`, written
   * by the caller through the writer, then finish(); undefined when it could
   * not fit a buffer (the caller makes it a string: add).
   */
  begin(path: string, head: Uint8Array, worst: number): LineWriter | undefined {
    const most = head.length + worst + 1;
    if (most > CHUNK) return undefined;
    const p = this.path(path);
    if (most > CHUNK - p.used) p.seal();
    this.open = p;
    this.lineFrom = p.used;
    const w = this.writer;
    w.buf = p.buf;
    if (head.length !== 0) p.buf.set(head, p.used);
    w.p = p.used + head.length;
    return w;
  }

  /** The line begun is complete: kept, or dropped and counted when the batch is full. */
  finish(): void {
    const p = this.open!;
    this.open = undefined;
    const n = this.writer.p - this.lineFrom + 1;
    if (this.bytes + n > MAX_PENDING_BYTES) {
      this.dropped++;
      return;
    }
    p.buf[this.writer.p] = 10;
    p.used += n;
    p.count++;
    this.bytes += n;
  }

  /** A line made as a string (rare lines; lines too long for a buffer). */
  add(path: string, line: string, head?: Uint8Array): void {
    const w = this.begin(path, head ?? EMPTY, line.length * 3);
    if (w) {
      w.p += w.buf.write(line, w.p, "utf8");
      return this.finish();
    }
    const own = head ? Buffer.concat([head, Buffer.from(`${line}\n`)]) : Buffer.from(`${line}\n`);
    if (this.bytes + own.length > MAX_PENDING_BYTES) {
      this.dropped++;
      return;
    }
    const p = this.path(path);
    p.seal();
    const copy = new Uint8Array(new ArrayBuffer(own.length));
    copy.set(own);
    p.chunks.push(copy);
    p.lines.push(1);
    this.bytes += own.length;
  }

  skipped(): void {
    this.sampledOut++;
  }

  get pending(): boolean {
    return this.bytes > 0 || this.dropped > 0 || this.sampledOut > 0;
  }

  take(): AccessBatch {
    const byPath: AccessBatch["byPath"] = [];
    for (const [path, p] of this.byPath) {
      p.seal();
      if (p.chunks.length === 0) continue;
      byPath.push([path, p.chunks, p.lines]);
      p.chunks = [];
      p.lines = [];
    }
    const batch = { byPath, dropped: this.dropped, sampledOut: this.sampledOut };
    this.bytes = this.dropped = this.sampledOut = 0;
    return batch;
  }

  /** The ArrayBuffers a batch's postMessage transfers (each chunk has its own). */
  static transfer(batch: AccessBatch): ArrayBuffer[] {
    const list: ArrayBuffer[] = [];
    for (const [, chunks] of batch.byPath) for (const c of chunks) list.push(c.buffer as ArrayBuffer);
    return list;
  }
}

const EMPTY = new Uint8Array(0);

/** What a logged flow remembers for its line (made only when the service's log is on). */
export interface FlowRecord {
  /** The socket's peer, or the client a trusted balancer's PROXY header named (the tcp engine's header stage). */
  client: string;
  edge: string;
  /** Set once the origin is chosen (the tcp engine chooses it after the record is made). */
  origin: string | null;
  readonly startedAt: number;
}

/** A UDP service's log on this thread (and the tcp engine's). */
export class FlowLog {
  private readonly prefix: string;
  constructor(
    private readonly sink: FlowLogSink,
    service: string,
    private readonly config: AccessLogConfig,
    protocol: "udp" | "tcp" = "udp",
  ) {
    this.prefix = `${config.instance !== undefined ? `,"instance":${JSON.stringify(config.instance)}` : ""},"service":${JSON.stringify(service)},"protocol":"${protocol}",`;
  }

  get connect(): boolean {
    return this.config.connect;
  }

  /** A flow's last line. */
  closed(r: FlowRecord, bytesIn: number, bytesOut: number, event: string, why: string): void {
    if (this.config.sample < 1 && Math.random() >= this.config.sample) return this.sink.skipped();
    // Written in place, in the order the fields always had: addresses (our text of the kernel's bytes) need no escape,
    // event and reason are our codes (escaped anyway). Text at most 6 bytes per UTF-16 unit, numbers at most 20.
    const origin = r.origin;
    const worst = LINE_FIXED + r.client.length + r.edge.length + (origin === null ? 0 : origin.length) + 6 * (event.length + why.length);
    const w = this.sink.begin(this.config.path, this.headNow(), worst);
    if (!w) return this.emit({ event, client: r.client, edge: r.edge, origin, bytes_in: bytesIn, bytes_out: bytesOut, duration_ms: Math.round(performance.now() - r.startedAt), reason: why }, true);
    w.raw('"event":"').text(event).raw('","client":"').raw(r.client).raw('","edge":"').raw(r.edge);
    if (origin === null) w.raw('","origin":null');
    else w.raw('","origin":"').raw(origin).raw('"');
    w.raw(',"bytes_in":').int(bytesIn).raw(',"bytes_out":').int(bytesOut).raw(',"duration_ms":').int(Math.round(performance.now() - r.startedAt));
    w.raw(',"reason":"').text(why).raw('"}');
    this.sink.finish();
  }

  /** One event from its fields (rare lines: connect, limited). `sampled`: the caller has sampled it. */
  emit(fields: Record<string, unknown>, sampled = false): void {
    if (!sampled && this.config.sample < 1 && Math.random() >= this.config.sample) return this.sink.skipped();
    this.sink.add(this.config.path, JSON.stringify(fields).slice(1), this.headNow());
  }

  /** `{"time":…,"service":…,"protocol":…,` for the millisecond headMs, UTF-8 encoded once for every line of it. */
  private headNow(): Uint8Array {
    const ms = Date.now();
    if (ms !== this.headMs) {
      this.headMs = ms;
      this.head = Buffer.from(`{"time":"${isoNow()}"${this.prefix}`);
    }
    return this.head;
  }
  private head: Uint8Array = EMPTY;
  private headMs = -1;
}

/** The fixed text of a closed() line: its member names and punctuation, and three numbers of at most 20 digits. */
const LINE_FIXED = 200;
