import type { AccessLogConfig } from "../../config/service";
import { LineHead } from "../../log/access";
import type { LineWriter } from "../../log/line";
import { newRingMemory, ringBytes, RingWriter } from "../../log/ring";

/*
 * The access log on the data plane's thread (UDP flows, the tcp engine's
 * connections; the http engine's requests through httplog.ts). The file and
 * its writer belong to the main thread (src/log/access.ts): lines are written
 * here, in place, into a ring per file that the main thread reads
 * (src/log/ring.ts): no message per line or per batch.
 */

/**
 * The access log lines of every service on the data plane's thread: written
 * as UTF-8 bytes where they are made (the LineWriter, as the main thread's
 * log does) into one shared ring per log path (src/log/ring.ts), which the
 * main thread writes to the file it owns. `announce` hands the main thread a
 * new path's ring (once); `nudge` asks it to read a ring half full.
 */
export class FlowLogSink {
  private readonly rings = new Map<string, RingWriter>();
  /** The ring of the line begun. */
  private open: RingWriter | undefined;

  constructor(
    private readonly announce: (config: AccessLogConfig, memory: SharedArrayBuffer) => void,
    private readonly nudge: (path: string) => void,
  ) {}

  private ring(config: AccessLogConfig): RingWriter {
    let r = this.rings.get(config.path);
    if (!r) {
      const path = config.path;
      r = new RingWriter(newRingMemory(ringBytes(config.bufferBytes)), () => this.nudge(path));
      this.rings.set(path, r);
      this.announce(config, r.memory);
    }
    return r;
  }

  /**
   * Begin a line of `head` and at most `worst` more bytes for `config`'s
   * file, written by the caller through the writer, then finish(); undefined
   * when it could not fit the ring (the caller makes it a string: add).
   */
  begin(config: AccessLogConfig, head: Uint8Array, worst: number): LineWriter | undefined {
    const r = this.ring(config);
    const w = r.begin(head, worst);
    if (w) this.open = r;
    return w;
  }

  /** The line begun is complete: kept, or dropped and counted when its ring is full. */
  finish(): void {
    this.open!.finish();
    this.open = undefined;
  }

  /** A line made as a string (rare lines); one too long for the ring is dropped and counted. */
  add(config: AccessLogConfig, line: string, head: Uint8Array = EMPTY): void {
    const w = this.begin(config, head, line.length * 3);
    if (!w) return this.ring(config).dropped();
    w.p += w.buf.write(line, w.p, "utf8");
    this.finish();
  }

  /** A line sampled out (access_log_sample), counted with its file's. */
  skipped(config: AccessLogConfig): void {
    this.ring(config).skipped();
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
  private readonly head: LineHead;
  constructor(
    private readonly sink: FlowLogSink,
    service: string,
    private readonly config: AccessLogConfig,
    protocol: "udp" | "tcp" = "udp",
  ) {
    this.head = new LineHead(`${config.instance !== undefined ? `,"instance":${JSON.stringify(config.instance)}` : ""},"service":${JSON.stringify(service)},"protocol":"${protocol}",`);
  }

  get connect(): boolean {
    return this.config.connect;
  }

  /** A flow's last line. */
  closed(r: FlowRecord, bytesIn: number, bytesOut: number, event: string, why: string): void {
    if (this.config.sample < 1 && Math.random() >= this.config.sample) return this.sink.skipped(this.config);
    // Written in place, in the order the fields always had: addresses (our text of the kernel's bytes) need no escape,
    // event and reason are our codes (escaped anyway). Text at most 6 bytes per UTF-16 unit, numbers at most 20.
    const origin = r.origin;
    const worst = LINE_FIXED + r.client.length + r.edge.length + (origin === null ? 0 : origin.length) + 6 * (event.length + why.length);
    const w = this.sink.begin(this.config, this.headNow(), worst);
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
    if (!sampled && this.config.sample < 1 && Math.random() >= this.config.sample) return this.sink.skipped(this.config);
    this.sink.add(this.config, JSON.stringify(fields).slice(1), this.headNow());
  }

  /** `{"time":…,"service":…,"protocol":…,`, encoded once per millisecond. */
  private headNow(): Uint8Array {
    return this.head.now();
  }
}

/** The fixed text of a closed() line: its member names and punctuation, and three numbers of at most 20 digits. */
const LINE_FIXED = 200;
