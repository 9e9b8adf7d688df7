import type { AccessLogConfig } from "../../config/service";
import { LineHead } from "../../log/access";
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

  constructor(
    private readonly announce: (config: AccessLogConfig, memory: SharedArrayBuffer) => void,
    private readonly nudge: (path: string) => void,
  ) {}

  /**
   * The ring of `config`'s file, made and announced at its first use (a
   * service that never logs costs nothing). Callers keep it: no lookup per line.
   */
  ring(config: AccessLogConfig): RingWriter {
    let r = this.rings.get(config.path);
    if (!r) {
      const path = config.path;
      r = new RingWriter(newRingMemory(ringBytes(config.bufferBytes)), () => this.nudge(path));
      this.rings.set(path, r);
      this.announce(config, r.memory);
    }
    return r;
  }
}

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
  private ringOf: RingWriter | undefined;
  constructor(
    private readonly sink: FlowLogSink,
    service: string,
    private readonly config: AccessLogConfig,
    protocol: "udp" | "tcp" = "udp",
  ) {
    this.head = new LineHead(`${config.instance !== undefined ? `,"instance":${JSON.stringify(config.instance)}` : ""},"service":${JSON.stringify(service)},"protocol":"${protocol}",`);
  }

  private get ring(): RingWriter {
    return (this.ringOf ??= this.sink.ring(this.config));
  }

  get connect(): boolean {
    return this.config.connect;
  }

  /**
   * Is a flow (a UDP flow, a tcp engine connection) starting now to be
   * logged (access_log_sample)? Drawn once per flow, when it starts: its
   * lines (connect, last) are in or out together, and a flow sampled out
   * costs no record, no ends text and, on the tcp engine, no getsockname(2)
   * for its edge. Counted when not.
   */
  sampledIn(): boolean {
    if (this.config.sample >= 1 || Math.random() < this.config.sample) return true;
    this.ring.skipped();
    return false;
  }

  /**
   * A flow's last line (its record made when sampledIn() said so); `now`: the caller's clock reading when it has
   * one (the tcp engine's loop), same clock as startedAt.
   */
  closed(r: FlowRecord, bytesIn: number, bytesOut: number, event: string, why: string, now = performance.now()): void {
    // Written in place, in the order the fields always had: addresses (our text of the kernel's bytes) need no escape,
    // event and reason are our codes (escaped anyway). Text at most 6 bytes per UTF-16 unit, numbers at most 20.
    const origin = r.origin;
    const worst = LINE_FIXED + r.client.length + r.edge.length + (origin === null ? 0 : origin.length) + 6 * (event.length + why.length);
    const ring = this.ring;
    const w = ring.begin(this.headNow(), worst);
    // Null: the ring is full, the line dropped and counted already.
    if (w === null) return;
    if (!w) return this.emit({ event, client: r.client, edge: r.edge, origin, bytes_in: bytesIn, bytes_out: bytesOut, duration_ms: Math.round(now - r.startedAt), reason: why }, true);
    w.raw('"event":"').text(event).raw('","client":"').raw(r.client).raw('","edge":"').raw(r.edge);
    if (origin === null) w.raw('","origin":null');
    else w.raw('","origin":"').raw(origin).raw('"');
    w.raw(',"bytes_in":').int(bytesIn).raw(',"bytes_out":').int(bytesOut).raw(',"duration_ms":').int(Math.round(now - r.startedAt));
    w.raw(',"reason":"').text(why).raw('"}');
    ring.finish();
  }

  /** One event from its fields (rare lines: connect, limited). `sampled`: the caller has sampled it. */
  emit(fields: Record<string, unknown>, sampled = false): void {
    if (!sampled && this.config.sample < 1 && Math.random() >= this.config.sample) return this.ring.skipped();
    this.ring.add(JSON.stringify(fields).slice(1), this.headNow());
  }

  /** `{"time":…,"service":…,"protocol":…,`, encoded once per millisecond. */
  private headNow(): Uint8Array {
    return this.head.now();
  }
}

/** The fixed text of a closed() line: its member names and punctuation, and three numbers of at most 20 digits. */
const LINE_FIXED = 200;
