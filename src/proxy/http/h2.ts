import type { Socket } from "bun";
import type http2 from "node:http2";
import type { Duplex } from "node:stream";
import { formatAddress } from "../../config/address";
import { clientAddress, type EndNames, type Ends } from "../inbound";
import type { Session } from "../pipelineapi";
import { LINGER_MS, type HttpContext } from "./context";
import { H2Stream } from "./h2stream";
import { SocketDuplex } from "./h2socket";
import type { H2CloseReason } from "./stats";
import { H2_REFUSED_STREAM } from "./h2codes";

/** node:http2, evaluated on the first HTTP/2 connection, not at every start (h2codes.ts says why). */
let http2Module: typeof http2 | undefined;
const loadHttp2 = (): typeof http2 => (http2Module ??= require("node:http2") as typeof http2);

/*
 * HTTP/2 (RFC 9113) on a TLS connection whose ALPN chose "h2". The codec is
 * Bun's node:http2 (native frame parser and HPACK, RFC 7541), attached to the
 * connection the pipeline already owns through performServerHandshake() and
 * a Duplex around the Bun socket; each stream becomes one HTTP/1.1 request on
 * the service's keep-alive origin connections (h2stream.ts).
 *
 * Why node:http2 and not a codec of our own (measured, Bun 1.4.5, 2 cores,
 * h2load -c10 -m10 on loopback, a 6-byte response from the session itself):
 * 83 000 req/s, 16 us of CPU per request with TLS; it enforces
 * SETTINGS_MAX_CONCURRENT_STREAMS (RST_STREAM REFUSED_STREAM beyond) and
 * MAX_HEADER_LIST_SIZE (a request over it: RST_STREAM ENHANCE_YOUR_CALM, no
 * event for us to count; an HPACK bomb or a CONTINUATION flood: a session
 * error), and detects control-frame floods (CVE-2019-9512..9518) itself. What
 * it does not do, we do:
 *
 * - rapid reset (CVE-2023-44487): streams the client resets are counted per
 *   session in RESET_WINDOW_MS; above resetBudget() the session gets GOAWAY
 *   ENHANCE_YOUR_CALM (RFC 9113 §7, 0xb) and closes;
 * - a GOAWAY for the codec's errors (it closes without one), counted by reason;
 * - deadlines: the client's preface and SETTINGS (header_timeout), keep-alive
 *   between streams (keepalive_timeout), idle_timeout, per stream the body
 *   gap and the origin's connect and first byte;
 * - frames gathered into one socket write per event-loop turn (h2socket.ts).
 */

/** Resets by the client within RESET_WINDOW_MS above which the session is ended (rapid reset). */
export const RESET_WINDOW_MS = 10_000;
/** How many client resets a session may make per window, for a given SETTINGS_MAX_CONCURRENT_STREAMS. */
export const resetBudget = (maxStreams: number) => Math.max(100, 2 * maxStreams);
/** RFC 9113 §7 error codes. */
const NO_ERROR = 0x0;
const PROTOCOL_ERROR = 0x1;
const ENHANCE_YOUR_CALM = 0xb;
/** Memory the codec may hold per session (its own accounting, MB): what an HPACK table and queued frames may take. */
const MAX_SESSION_MEMORY_MB = 10;
/** HPACK dynamic table size we allow the client's encoder (RFC 7541 §4.2; the default). */
const HEADER_TABLE_SIZE = 4096;
/** Header fields per request at most (bounds the decoded list by count as well as by bytes). */
const MAX_HEADER_PAIRS = 256;

/** An HTTP/2 client connection (see above), the pipeline's last stage. */
export class H2Connection implements Session {
  readonly streams = new Set<H2Stream>();
  readonly clientIp: string;
  private readonly duplex: SocketDuplex;
  readonly session: http2.ServerHttp2Session;
  private closed = false;
  private closing = false;
  private gotSettings = false;
  private readonly startedAt: number;
  /** Last time a stream ended or the connection saw a byte. */
  lastActive: number;
  /** When the session last had no stream open (keep-alive). */
  private idleFrom: number;
  private resets = 0;
  private resetWindow = 0;
  private readonly budget: number;
  private edgePortCache = -1;

  constructor(
    readonly client: Socket<any>,
    readonly ctx: HttpContext,
    readonly ends?: Ends,
    /** With the access log on and `ends` not computed: the socket's ends as text, for the log. */
    readonly names?: EndNames,
  ) {
    const now = ctx.clock.now;
    this.startedAt = this.lastActive = this.idleFrom = this.resetWindow = now;
    this.clientIp = clientAddress(ends, names, client);
    ctx.active.add(this);
    ctx.stats.connectionsActive++;
    ctx.stats.connectionsTotal++;
    ctx.httpStats.h2.sessions++;
    const maxStreams = ctx.http.http2MaxConcurrentStreams;
    this.budget = resetBudget(maxStreams);
    this.duplex = new SocketDuplex(client, () => this.hangUp());
    const maxHeaderListSize = ctx.http.maxHeaderBytes;
    this.session = (loadHttp2() as unknown as { performServerHandshake(d: Duplex, o: http2.ServerOptions): http2.ServerHttp2Session }).performServerHandshake(this.duplex, {
      settings: { maxConcurrentStreams: maxStreams, maxHeaderListSize, headerTableSize: HEADER_TABLE_SIZE, enablePush: false },
      maxHeaderListSize,
      maxSessionMemory: MAX_SESSION_MEMORY_MB,
      maxHeaderListPairs: MAX_HEADER_PAIRS,
      maxOutstandingPings: 10,
      maxSettings: 32,
    } as http2.ServerOptions);
    const s = this.session;
    s.on("stream", (stream: http2.ServerHttp2Stream, _h: unknown, _f: unknown, raw: string[]) => {
      if (this.closing || this.closed) {
        // Bun's stream emits 'error' for the close: unheard, it would be an uncaught exception (the worker exits 1).
        stream.on("error", () => {});
        return void stream.close(H2_REFUSED_STREAM);
      }
      this.gotSettings = true;
      const st = new H2Stream(this, stream, raw);
      if (st.id > this.lastStreamId) this.lastStreamId = st.id;
      this.streams.add(st);
      st.start();
    });
    s.on("remoteSettings", () => void (this.gotSettings = true));
    s.on("error", (e: Error) => this.sessionError(e));
    s.on("close", () => this.sessionClosed());
  }

  /** The address:port the client dialled. */
  get localPort(): number {
    if (this.edgePortCache < 0) this.edgePortCache = this.ends ? this.ends.edge.port : this.client.localPort;
    return this.edgePortCache;
  }

  destination(): string {
    const a = this.ends ? formatAddress(this.ends.edge.addr) : this.client.localAddress;
    return a.includes(":") ? `[${a}]:${this.localPort}` : `${a}:${this.localPort}`;
  }

  // ---- the pipeline's Session ----

  started(rest: Uint8Array): this {
    if (rest.length) this.clientData(rest);
    return this;
  }

  /** Bytes the client sent (the busiest-clients tracker's, with what it was sent: `bytes`). */
  private received = 0;

  clientData(chunk: Uint8Array): void {
    this.lastActive = this.ctx.clock.now;
    this.ctx.stats.bytesFromClients += chunk.length;
    this.received += chunk.length;
    // Lingering: what still comes is read and dropped (see hangUp).
    if (!this.closed && this.lingerUntil === 0) this.duplex.feed(chunk);
  }

  /** When a lingering close gives up on the client's FIN (0: not lingering). */
  private lingerUntil = 0;
  private clientEnded = false;

  /**
   * The session is over: close after what is written, but not before the
   * client's FIN (or LINGER_MS): closing with the client's frames unread
   * sends an RST that destroys our last frames in flight (RFC 9113 §6.8,
   * RFC 9112 §9.6 for the same problem in HTTP/1.1). What still comes is
   * read and dropped. No FIN of ours first: with shutdown() right after the
   * last write, a client now and then saw the close but not the response (the
   * drain test, about 1 run in 10); end() flushes first. A client that got
   * GOAWAY closes once its streams are done (RFC 9113 §6.8).
   */
  private hangUp(): void {
    if (this.lingerUntil !== 0) return;
    // Both bounded by LINGER_MS: our last frames (a GOAWAY) going out, then the wait for the client's FIN.
    this.lingerUntil = this.ctx.clock.now + LINGER_MS;
    this.duplex.whenFlushed(() => this.linger());
  }

  /** Everything is sent: close at the client's FIN (or LINGER_MS); read on, dropping it, meanwhile. */
  private linger(): void {
    this.flushed = true;
    if (this.clientEnded) return void this.client.end();
    if (this.duplex.paused) this.client.resume();
  }

  private flushed = false;

  clientDrain(): void {
    this.duplex.drain();
  }

  /** Bytes both ways (the session's frames, as the TLS socket took them), for the busiest-clients tracker. */
  bytes(): number {
    return this.received + this.duplex.sent;
  }

  clientEnd(): void {
    this.clientEnded = true;
    if (this.lingerUntil !== 0) {
      if (this.flushed) this.client.end();
      return;
    }
    this.duplex.push(null);
    // The client's FIN: no frame can follow, so no new stream. node:http2 does not end the session
    // for it (measured: the connection stayed open until keepalive_timeout, counted active): close
    // it as a drain does, letting open streams finish (the client may still read, RFC 9293 §3.6).
    // Not `closing`: streams the codec has yet to take from what came before the FIN are served.
    if (!this.closing && !this.closed && !this.session.closed) this.session.close();
  }

  clientClosed(error?: Error): void {
    if (this.closed) return;
    if (error && this.streams.size) this.ctx.stats.clientResets++;
    this.release();
    if (!this.session.destroyed) this.session.destroy();
  }

  abort(): void {
    this.client.terminate();
  }

  drainService(): void {
    // GOAWAY NO_ERROR with the last stream we took; open streams finish (RFC 9113 §6.8).
    if (this.closing || this.closed) return;
    this.closing = true;
    this.session.close();
  }

  sweep(now: number): void {
    // A client that reads nothing of our last frames, or never sends its FIN: closed anyway.
    if (this.lingerUntil !== 0 && now >= this.lingerUntil) return void (this.flushed ? this.client.end() : this.client.terminate());
    if (this.closed) return;
    for (const st of this.streams) st.sweep(now);
    const d = this.ctx.config.deadlines;
    if (!this.gotSettings && now - this.startedAt >= d.headerMs) {
      this.ctx.stats.deadlineExpired("request_head");
      return this.end("settings_timeout", NO_ERROR);
    }
    if (this.streams.size === 0 && now - this.idleFrom >= d.keepaliveMs) {
      this.ctx.stats.deadlineExpired("keepalive");
      return this.end(undefined, NO_ERROR);
    }
    if (now - this.lastActive >= this.ctx.config.idleTimeoutMs) {
      this.ctx.stats.idleTimeouts++;
      this.end("idle", NO_ERROR);
    }
  }

  // ---- streams ----

  streamActive(): void {
    this.lastActive = this.ctx.clock.now;
  }

  streamDone(st: H2Stream): void {
    this.streams.delete(st);
    const now = this.ctx.clock.now;
    this.lastActive = now;
    if (this.streams.size === 0) this.idleFrom = now;
  }

  /** Streams holding an origin connection now; those past the first hold a cap slot each (HttpContext.admission). */
  private originsHeld = 0;

  /**
   * A stream is about to take an origin connection: false when the connection
   * cap has no slot for it (the stream is answered 503, counted in
   * connection_cap_refused_total).
   * Without this, one client connection could hold http2_max_concurrent_streams
   * origin descriptors where the cap budgets one.
   */
  holdOrigin(): boolean {
    if (this.originsHeld > 0 && !this.ctx.admission.admit()) return false;
    this.originsHeld++;
    return true;
  }

  /** A stream gave its origin connection up (once per holdOrigin that returned true). */
  releaseOrigin(): void {
    if (--this.originsHeld > 0) this.ctx.admission.leave();
  }

  /** The client reset a stream before its response was complete: the rapid-reset count (CVE-2023-44487). */
  clientReset(): void {
    if (this.closing || this.closed) return;
    const now = this.ctx.clock.now;
    if (now - this.resetWindow >= RESET_WINDOW_MS) {
      this.resetWindow = now;
      this.resets = 0;
    }
    this.ctx.httpStats.h2.streamResets++;
    if (++this.resets > this.budget) this.end("rapid_reset", ENHANCE_YOUR_CALM);
  }

  /** GOAWAY with `code` (RFC 9113 §6.8), then the session and the connection close; counted by `reason`. */
  private end(reason: H2CloseReason | undefined, code: number): void {
    if (this.closed || this.session.destroyed) return;
    if (reason) this.ctx.httpStats.h2.closed[reason]++;
    this.closing = true;
    this.sayGoaway(code, reason ?? "idle");
    this.session.destroy();
  }

  /**
   * A GOAWAY frame of ours, after what the codec wrote: node:http2's own
   * goaway() is queued and lost when the session is destroyed at once, and
   * its errors (floods, bad HPACK) close without one.
   */
  private sayGoaway(code: number, debug: string): void {
    const text = Buffer.from(debug, "latin1");
    const f = Buffer.alloc(17 + text.length);
    f.writeUIntBE(8 + text.length, 0, 3);
    f[3] = 0x7; // GOAWAY, flags 0, stream 0
    f.writeUInt32BE(this.lastStreamId & 0x7fffffff, 9);
    f.writeUInt32BE(code, 13);
    text.copy(f, 17);
    this.duplex.writeNow(f);
  }

  /** The highest stream id the client opened (GOAWAY's last-stream-id: §6.8). */
  lastStreamId = 0;

  /** The codec gave up on the session: floods it detected itself, malformed frames, HPACK errors, oversized header lists. */
  private sessionError(e: Error): void {
    if (this.closing) return;
    this.closing = true;
    const flood = /flood/i.test(e.message);
    this.ctx.httpStats.h2.closed[flood ? "flood" : "protocol"]++;
    this.sayGoaway(flood ? ENHANCE_YOUR_CALM : PROTOCOL_ERROR, flood ? "flood" : "protocol");
  }

  private sessionClosed(): void {
    this.release();
  }

  private release(): void {
    if (this.closed) return;
    this.closed = true;
    for (const st of [...this.streams]) st.sessionGone();
    this.streams.clear();
    this.ctx.active.delete(this);
    this.ctx.stats.connectionsActive--;
  }
}
