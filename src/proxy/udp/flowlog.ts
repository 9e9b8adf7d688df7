import type { AccessLogConfig } from "../../config/service";
import { isoNow, jsonString } from "../../log/access";

/*
 * The access log of UDP flows, on the UDP data plane's thread. The file and
 * its bounded writer belong to the main thread (src/log/access.ts): lines
 * are made here, held in a bounded batch, and posted to it whenever the
 * epoll loop yields (worker.ts), a message per batch, not per line.
 */

/** Lines held between posts; more are dropped (and counted with the writer's drops). */
const MAX_PENDING = 4096;

/** One batch for the main thread: lines per log path, and what was dropped or sampled out here. */
export interface AccessBatch {
  readonly byPath: [string, string[]][];
  readonly dropped: number;
  readonly sampledOut: number;
}

/** The lines of every UDP service of the thread, until the next post. */
export class FlowLogSink {
  private byPath = new Map<string, string[]>();
  private count = 0;
  private dropped = 0;
  private sampledOut = 0;

  add(path: string, line: string): void {
    if (this.count >= MAX_PENDING) {
      this.dropped++;
      return;
    }
    this.count++;
    let lines = this.byPath.get(path);
    if (!lines) this.byPath.set(path, (lines = []));
    lines.push(line);
  }

  skipped(): void {
    this.sampledOut++;
  }

  get pending(): boolean {
    return this.count > 0 || this.dropped > 0 || this.sampledOut > 0;
  }

  take(): AccessBatch {
    const batch = { byPath: [...this.byPath], dropped: this.dropped, sampledOut: this.sampledOut };
    this.byPath = new Map();
    this.count = this.dropped = this.sampledOut = 0;
    return batch;
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

/** A UDP service's log on this thread. */
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
    // Built by hand in the order the fields always had (no object, no JSON.stringify walk per flow): event and reason are our codes, addresses need no escape.
    const origin = r.origin === null ? "null" : `"${r.origin}"`;
    const body = `"event":${jsonString(event)},"client":"${r.client}","edge":"${r.edge}","origin":${origin},"bytes_in":${bytesIn},"bytes_out":${bytesOut},"duration_ms":${Math.round(performance.now() - r.startedAt)},"reason":${jsonString(why)}}`;
    this.sink.add(this.config.path, `{"time":"${isoNow()}"${this.prefix}${body}`);
  }

  emit(fields: Record<string, unknown>): void {
    if (this.config.sample < 1 && Math.random() >= this.config.sample) return this.sink.skipped();
    this.sink.add(this.config.path, `{"time":"${isoNow()}"${this.prefix}${JSON.stringify(fields).slice(1)}`);
  }
}
