import type { AccessLogConfig } from "../config/service";
import { accessLogStats, NO_HEAD } from "./file";
import { fileFor } from "./files";
import type { LineWriter } from "./line";

export { endpointString, formatEndpoint, jsonInner, jsonOrNull, jsonString, joinHostPort, LineWriter, tenths } from "./line";
export { accessLogStats } from "./file";
export { accessLogCounts, attachRing, checkAccessLogs, nudgeRing, reopenAccessLogs } from "./files";

/*
 * Access and event logs: one JSON object per line, per connection or flow
 * (tcp, udp) or per request (http), to a file or stdout. Here: a service's
 * log (ServiceLog) and a line's head (LineHead); the files and their bounded,
 * batched writer are src/log/file.ts, the data plane thread's rings
 * src/log/ring.ts, a line's pieces src/log/line.ts.
 */

// The time of a line, made once per millisecond: under load many lines share one.
let isoMs = 0;
let isoText = "";

/** Now, in RFC 3339 (UTC, milliseconds). */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

/**
 * Where a ServiceLog's lines go: the process's file writer (LogFile), or on
 * the data plane's thread its file's shared ring, which the main thread
 * reads (src/engine/httplog.ts, src/log/ring.ts). `skipped`: a line sampled out, counted there.
 */
export interface LogLines {
  push(line: string): void;
  push2(head: Uint8Array, body: string): void;
  /** Undefined: too long to write in place (made a string instead); null: dropped and counted already (a full ring). */
  begin(head: Uint8Array, worst: number): LineWriter | undefined | null;
  finish(): void;
  skipped?(): void;
}

/** A service's log: what its connections, flows and requests call, only when the log is on (absent: off, no cost). */
export class ServiceLog {
  private readonly file: LogLines;
  readonly config: AccessLogConfig;
  readonly connect: boolean;
  private readonly sample: number;
  /** `,"instance":…,"service":…,` once, not per line. */
  private readonly prefix: string;

  constructor(
    readonly service: string,
    config: AccessLogConfig,
    file?: LogLines,
    /**
     * A clock set at each wake of the loop that runs the lines' connections
     * (the engine's, performance.now() ms): request times are read from it, as
     * nginx's $request_time and HAProxy's timers read the time cached per loop
     * iteration, instead of a clock call per read (three per request). Absent
     * (Bun's sockets, whose coarse clock ticks every 100 ms): each read calls
     * performance.now().
     */
    readonly loopClock?: { readonly now: number },
  ) {
    this.file = file ?? fileFor(config);
    this.config = config;
    this.connect = config.connect;
    this.sample = config.sample;
    this.prefix = `${config.instance !== undefined ? `,"instance":${JSON.stringify(config.instance)}` : ""},"service":${JSON.stringify(service)},`;
    this.head = new LineHead(this.prefix);
  }

  /** Is this line to be written (access_log_sample)? Counted when not. */
  sampled(): boolean {
    if (this.sample >= 1 || Math.random() < this.sample) return true;
    if (this.file.skipped) this.file.skipped();
    else accessLogStats.sampledOut++;
    return false;
  }

  /** Write one event: `fields` after time, instance and service. */
  emit(fields: Record<string, unknown>): void {
    // RFC 3339 in UTC with milliseconds; fields spliced after the prefix (their "{" dropped).
    this.file.push(`{"time":"${isoNow()}"${this.prefix}${JSON.stringify(fields).slice(1)}`);
  }

  /**
   * Write one line whose fields the caller built: `body` is JSON members
   * and the closing brace (`"protocol":"tcp",…}`), every string in it
   * through jsonString unless known to need no escape. The per-connection and
   * per-request lines use this: no object, no JSON.stringify walk per line.
   */
  line(body: string): void {
    this.file.push2(this.headNow(), body);
  }

  /**
   * Begin a line written in place (LineWriter): the caller writes its members
   * and closing brace, at most `worst` bytes, then calls finish(). Undefined
   * when that could not fit a buffer: the caller makes the line a string (line()).
   * Null: the line is dropped and counted already (its ring is full): nothing to make.
   */
  begin(worst: number): LineWriter | undefined | null {
    return this.file.begin(this.headNow(), worst);
  }

  /** The line begun is complete. */
  finish(): void {
    this.file.finish();
  }

  private headNow(): Uint8Array {
    return this.head.now();
  }
  private readonly head: LineHead;
}

/** A line's head, `{"time":"…"` and a constant prefix (instance, service…), UTF-8 encoded once for every line of a millisecond. */
export class LineHead {
  private bytes: Uint8Array = NO_HEAD;
  private ms = -1;
  constructor(private readonly prefix: string) {}

  now(): Uint8Array {
    const ms = Date.now();
    if (ms !== this.ms) {
      this.ms = ms;
      this.bytes = Buffer.from(`{"time":"${isoNow()}"${this.prefix}`);
    }
    return this.bytes;
  }
}

/** The log of a service, or undefined when its log is off. */
export function serviceLog(service: string, config: AccessLogConfig | undefined): ServiceLog | undefined {
  return config ? new ServiceLog(service, config) : undefined;
}
