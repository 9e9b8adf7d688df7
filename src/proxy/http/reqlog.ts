import { randomBytes } from "node:crypto";
import { formatEndpoint, jsonOrNull, jsonString, tenths, type ServiceLog } from "../../log/access";
import type { EndNamesOrMaker, Ends } from "../inbound";
import type { RequestHead } from "./message";

/*
 * The access log of one http client connection: one line per request
 * (src/log/access.ts). Made only when the service's log is on; the
 * connection holds none otherwise, so a request costs nothing for it.
 */

/** An X-Request-Id we keep as the client sent it: short, and characters that need no quoting anywhere (UUIDs, base64, ULIDs). */
const SANE_ID = /^[A-Za-z0-9._~:+/=-]{1,128}$/;
/**
 * Generated ids: this process's random prefix and a counter in base 36,
 * unique without a random draw per request. The usual request writes its id
 * as bytes (into the origin's head and the line, writeId) and never makes
 * it a string: a string per request, its rope flattened twice, was ~0.15 µs
 * and its share of the GC as much again (bench/README.md, "Access log cost").
 */
const PREFIX = `${randomBytes(8).toString("hex")}-`;
const PREFIX_BYTES = Buffer.from(PREFIX, "latin1");
let counter = 0;
/** The line's http_version member, and the usual line's end after the request id's text. */
const VERSION_11 = ',"http_version":"1.1"';
const VERSION_2 = ',"http_version":"2"';
const TAIL_11 = Buffer.from(`"${VERSION_11}}`, "latin1");
const TAIL_2 = Buffer.from(`"${VERSION_2}}`, "latin1");
/** The usual line's bytes besides its texts: member names and punctuation (≈ 130) and five numbers (at most 20 each). */
const LINE_FIXED = 256;

export class RequestLog {
  /** The connection's bytes each way so far. */
  bytesIn = 0;
  bytesOut = 0;
  /** A request is under way and not yet logged. */
  private open = false;
  private req: RequestHead | undefined;
  private startedAt = 0;
  private inAt = 0;
  private outAt = 0;
  private firstByteAt = 0;
  /** The status we or the origin answered with (0: none yet). */
  status = 0;
  origin: string | undefined;
  /** The client's X-Request-Id we keep (request()). */
  private given: string | undefined;
  /** Our generated id's number (0: none), its base-36 digits, and its text once asked for (id). */
  private seq = 0;
  private seqDigits = 0;
  private seqText: string | undefined;

  constructor(
    private readonly log: ServiceLog,
    private client: string | undefined,
    private edge: string | undefined,
    /** The client's HTTP version, "1.1" (1.0 requests say so themselves) or "2": the line's http_version. */
    version: "1.1" | "2" = "1.1",
    /** The service's request_id_in_response: the client's response carries the id too (returnedId). */
    private readonly returnId = false,
    /** How to make client and edge, when not given: called at the first request whose line is sampled in. */
    private makeEnds?: () => { readonly client: string; readonly edge: string } | undefined,
  ) {
    this.clock = log.loopClock;
    this.versionText = version === "2" ? VERSION_2 : VERSION_11;
    this.tail = version === "2" ? TAIL_2 : TAIL_11;
  }
  /**
   * The usual line's members up to the method's value: the same for every
   * request of the connection, encoded once its second request is logged (an
   * encoding costs more than one line's character loop, so a one-request
   * connection never makes it). `tail`: the members after the request id,
   * one per HTTP version (module constants).
   */
  private lead: Uint8Array | undefined;
  /** The log's loop clock (ServiceLog.loopClock), if it has one. */
  private readonly clock: { readonly now: number } | undefined;
  private now(): number {
    const c = this.clock;
    return c === undefined ? performance.now() : c.now;
  }
  private readonly tail: Uint8Array;
  private lines = 0;
  private readonly versionText: string;

  /**
   * `clientIp`: the connection's formatAddress(ends.client.addr) when made already (not formatted twice);
   * `names`: the socket's ends as text, when `ends` were not parsed (the pipeline's socketNames).
   */
  static of(log: ServiceLog, returnId: boolean, ends: Ends | undefined, version: "1.1" | "2", clientIp?: string, names?: EndNamesOrMaker): RequestLog {
    if (typeof names === "function") return new RequestLog(log, undefined, undefined, version, returnId, names);
    if (!ends) return new RequestLog(log, names?.client, names?.edge, version, returnId);
    const c = ends.client;
    const client = clientIp === undefined ? formatEndpoint(c) : c.family === 6 ? `[${clientIp}]:${c.port}` : `${clientIp}:${c.port}`;
    return new RequestLog(log, client, formatEndpoint(ends.edge), version, returnId);
  }

  /**
   * Whether the request under way is to be logged (access_log_sample), drawn
   * when it begins: a request sampled out costs no line and, on the engine,
   * its connection no getsockname(2) for the edge (makeEnds).
   */
  private sampledIn = false;

  /** A request starts (its head is parsed: `req`; or a head we refuse: undefined). `pending`: bytes already read that belong to it or later ones. */
  begin(req: RequestHead | undefined, pending: number): void {
    this.sampledIn = this.log.sampled();
    if (this.sampledIn && this.makeEnds) {
      // The socket is open while a request begins (its head came, or a deadline or our answer ends it before we close).
      const made = this.makeEnds();
      this.makeEnds = undefined;
      if (made) {
        this.client = made.client;
        this.edge = made.edge;
      }
    }
    this.open = true;
    this.req = req;
    this.startedAt = this.now();
    this.inAt = this.bytesIn - pending;
    this.outAt = this.bytesOut;
    this.firstByteAt = 0;
    this.status = 0;
    this.origin = undefined;
    this.given = undefined;
    this.seq = 0;
    this.seqText = undefined;
  }

  /** This request's X-Request-Id: the client's we keep, or ours (its text made here, on demand). */
  get id(): string | undefined {
    return this.given ?? (this.seq === 0 ? undefined : (this.seqText ??= PREFIX + this.seq.toString(36)));
  }

  /** The length of ours (request() returned true): what writeId writes. */
  get idLength(): number {
    return PREFIX_BYTES.length + this.seqDigits;
  }

  /** Writes our id (request() returned true) into `b` at `at` as ASCII bytes: where it ends. */
  writeId(b: Uint8Array, at: number): number {
    b.set(PREFIX_BYTES, at);
    let n = this.seq;
    const end = at + PREFIX_BYTES.length + this.seqDigits;
    for (let p = end; p > end - this.seqDigits; ) {
      const q = Math.floor(n / 36);
      const d = n - q * 36;
      b[--p] = d < 10 ? 48 + d : 87 + d;
      n = q;
    }
    return end;
  }

  /**
   * A parsed request starts: its id is the client's sane X-Request-Id, else
   * a new one. Returns whether ours must be added to the origin's request
   * (writeId, or id as text; false: the client's goes on as it came);
   * replaceId: the client's own must be dropped.
   */
  request(req: RequestHead, pending: number): boolean {
    this.begin(req, pending);
    // requestIdOf's decision, without its result object (one per request, with the log on).
    let given: string | undefined;
    let n = 0;
    const names = req.names;
    for (let i = 0; i < names.length; i++) {
      if (names[i] === "x-request-id") {
        n++;
        given = req.values[i];
      }
    }
    if (n === 1 && SANE_ID.test(given!)) {
      this.given = given;
      this.replaceId = false;
      return false;
    }
    this.replaceId = n > 0;
    const seq = (this.seq = ++counter);
    let digits = 1;
    for (let x = seq; x >= 36; x = Math.floor(x / 36)) digits++;
    this.seqDigits = digits;
    return true;
  }
  /** The id for the client's response (our answers' and the origin's, unless it has its own): with request_id_in_response only. */
  get returnedId(): string | undefined {
    return this.returnId ? this.id : undefined;
  }

  /** The request's own X-Request-Id (none sane, or several) must be dropped for ours (set by request()). */
  replaceId = false;

  /** The request goes to origin `host`:`port`; its text is made once per origin the connection uses, not per request. */
  originAt(host: string, port: number): void {
    if (host !== this.originHost || port !== this.originPort) {
      this.originHost = host;
      this.originPort = port;
      this.originText = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    }
    this.origin = this.originText;
  }
  private originHost = "";
  private originPort = -1;
  private originText = "";

  /** The client and edge members (none when the socket's ends were unknown). */
  private endsText(): string {
    return this.client ? `,"client":"${this.client}","edge":"${this.edge}"` : "";
  }

  /** Our own answer (an error) of `bytes` ends the request. */
  answered(status: number, bytes: number, reason: string): void {
    this.status = status;
    this.bytesOut += bytes;
    this.end(reason);
  }

  /** Is a request under way (begun, not yet logged)? */
  get pending(): boolean {
    return this.open;
  }

  firstByte(): void {
    if (this.open && this.firstByteAt === 0) this.firstByteAt = this.now();
  }

  /** The request is over: its line (once). `reason`: why it ended otherwise than with a whole response. */
  end(reason?: string): void {
    if (!this.open) return;
    this.open = false;
    if (!this.sampledIn) return;
    const req = this.req;
    const bytesIn = this.bytesIn - this.inAt;
    const bytesOut = this.bytesOut - this.outAt;
    const now = this.now();
    const given = this.given;
    if (req && req.host != null && this.origin != null && (given !== undefined || this.seq !== 0) && !reason) {
      // The usual request, written in place (LineWriter), in the order the fields always had: no string for the
      // line, none for its numbers or the path. The method is a token (parse.ts checks tchar, RFC 9110 §5.6.2: no
      // quote, backslash or control), the id SANE_ID's or ours, the origin a configured name or an IP address
      // (config/origin.ts checks both) and its port: none needs escaping; what the client sent does (text). The
      // path is the target up to its query.
      const q = req.target.indexOf("?");
      const pathEnd = q < 0 ? req.target.length : q;
      const worst = LINE_FIXED + (this.client?.length ?? 0) + (this.edge?.length ?? 0) + this.versionText.length + req.method.length + (given?.length ?? this.idLength) + 6 * (req.host.length + pathEnd + this.origin.length);
      const w = this.log.begin(worst);
      if (w === null) return;
      if (w) {
        if (this.lead) w.bytes(this.lead);
        else {
          // Addresses and our constants: ASCII, nothing to escape.
          w.raw('"protocol":"http"');
          if (this.client) w.raw(',"client":"').raw(this.client).raw('","edge":"').raw(this.edge!).raw('"');
          w.raw(',"method":"');
          if (++this.lines === 2) this.lead = Buffer.from(`"protocol":"http"${this.endsText()},"method":"`, "latin1");
        }
        w.raw(req.method).raw('","host":"').text(req.host).raw('","path":"').text(req.target, pathEnd);
        w.raw('","status":').int(this.status).raw(',"bytes_in":').int(bytesIn).raw(',"bytes_out":').int(bytesOut).raw(',"origin":"').raw(this.origin).raw('","ttfb_ms":');
        if (this.firstByteAt) w.tenths(this.firstByteAt - this.startedAt);
        else w.raw("null");
        w.raw(',"duration_ms":').tenths(now - this.startedAt).raw(',"request_id":"');
        if (given !== undefined) w.raw(given);
        else w.p = this.writeId(w.buf, w.p);
        w.bytes(this.tail);
        return this.log.finish();
      }
    }
    // Anything else (and a line too long for a buffer) as a string, built by hand in the same order (ServiceLog.line).
    const q = req ? req.target.indexOf("?") : -1;
    const path = req ? (q < 0 ? req.target : req.target.slice(0, q)) : "";
    const ttfb = this.firstByteAt ? tenths(this.firstByteAt - this.startedAt) : "null";
    const what = req ? `"method":${jsonString(req.method)},"host":${jsonOrNull(req.host)},"path":${jsonString(path)}` : `"method":null,"host":null,"path":null`;
    this.log.line(
      `"protocol":"http"${this.endsText()},${what},"status":${this.status},"bytes_in":${bytesIn},"bytes_out":${bytesOut},"origin":${jsonOrNull(this.origin)},"ttfb_ms":${ttfb},"duration_ms":${tenths(now - this.startedAt)},"request_id":${jsonOrNull(this.id)}${this.versionText}${reason ? `,"reason":${jsonString(reason)}` : ""}}`,
    );
  }
}
