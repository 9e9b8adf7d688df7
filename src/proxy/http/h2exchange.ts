import type http2 from "node:http2";
import type { Member } from "../../origin/pool";
import { lateRefusal } from "../../origin/tls";
import { Outbox } from "../outbox";
import { ChunkedDecoder } from "./chunked";
import { HIGH_WATER, MAX_RESPONSE_HEAD, idempotent, countOriginClose, countOriginFailure, readResponseHead, tailAfter } from "./context";
import { Deadline, EMPTY, concat } from "./state";
import type { H2Connection } from "./h2";
import { h2ResponseHeaders } from "./h2fields";
import { originFraming, originReusable } from "./response";
import type { OriginConn, OriginUser } from "./origins";
import { HeadError, type RequestHead, type ResponseHead } from "./message";
import { RequestLog } from "./reqlog";

/*
 * The origin side of an HTTP/2 stream's exchange (the client side is
 * H2Stream, h2stream.ts): the HTTP/1.1 origin connection's events and the
 * response, parsed as exchange.ts does for HTTP/1.1 clients and sent on as
 * HTTP/2 fields and DATA.
 *
 * Flow control: the client's windows are node:http2's; a stream write that
 * returns false (the client's window or our buffer is full) pauses the
 * origin socket until the stream's `drain`. The other way, the stream is
 * paused while the origin connection's queue is full, so its window is not
 * reopened and the client waits (RFC 9113 §5.2).
 */

/** Bytes past the response head that are small get copied. */
/** One stream's exchange state and its origin side; H2Stream adds the client side. */
export abstract class H2Exchange implements OriginUser {
  readonly id: number;
  protected req: RequestHead | undefined;
  protected origin: OriginConn | undefined;
  protected member: Member | undefined;
  protected readonly toOrigin = new Outbox();
  protected headBytes: Uint8Array = EMPTY;
  /** The request body goes to the origin chunked (no content-length was given). */
  protected chunkedUp = false;
  protected requestDone = false;
  protected retried = false;
  protected paused = false;
  protected originPaused = false;
  // The response.
  protected resBuf: Uint8Array = EMPTY;
  protected res: ResponseHead | undefined;
  protected framing: "none" | "length" | "chunked" | "close" = "none";
  protected resLeft = 0;
  protected resChunks: ChunkedDecoder | undefined;
  protected gotByte = false;
  protected responded = false;
  protected done = false;
  protected deadline = 0;
  protected deadlineKind = Deadline.None;
  /** The last time the client sent body bytes, or we let it send again. */
  protected bodyAt: number;
  protected readonly rlog: RequestLog | undefined;

  constructor(
    protected readonly conn: H2Connection,
    protected readonly stream: http2.ServerHttp2Stream,
  ) {
    this.id = stream.id ?? 0;
    this.bodyAt = conn.ctx.clock.now;
    if (conn.ctx.log) this.rlog = RequestLog.of(conn.ctx.log, conn.ctx.http.requestIdInResponse, conn.ends, "2", undefined, conn.names);
  }

  protected sendOrigin(bytes: Uint8Array): void {
    if (!this.origin) return;
    const s = this.origin.open ? this.origin.socket : undefined;
    if (this.toOrigin.write(s, bytes)) return;
    if ((s || this.toOrigin.queued >= HIGH_WATER) && !this.paused) {
      this.paused = true;
      this.stream.pause();
    }
  }

  protected resumeStream(): void {
    if (!this.paused) return;
    this.paused = false;
    this.bodyAt = this.conn.ctx.clock.now;
    this.stream.resume();
  }

  // ---- the origin ----

  protected attach(c: OriginConn): void {
    this.origin = c;
    if (!c.open) this.setDeadline(Deadline.Connect, this.conn.ctx.config.connectTimeoutMs);
  }

  originOpen(c: OriginConn): void {
    // Over TLS, at the first byte (originData): a TLS 1.3 origin may still refuse the handshake (lateRefusal).
    if (!c.tls) this.member?.succeeded();
    this.deadlineKind = Deadline.None;
    if (this.toOrigin.flush(c.socket!)) this.resumeStream();
    if (this.requestDone && !this.gotByte) this.setDeadline(Deadline.FirstByte, this.conn.ctx.http.firstByteTimeoutMs);
  }

  originFailed(c: OriginConn, error: unknown): void {
    if (c !== this.origin) return;
    const cause = countOriginFailure(this.conn.ctx.stats, error);
    // A descriptor, memory or local port this host lacked says nothing of the origin: no failure toward its ejection.
    if (!cause.local) this.member?.failed(cause.kind);
    this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
  }

  originDrain(c: OriginConn): void {
    if (c === this.origin && this.toOrigin.flush(c.socket!)) this.resumeStream();
  }

  originData(c: OriginConn, chunk: Uint8Array): void {
    const ctx = this.conn.ctx;
    this.conn.streamActive();
    ctx.stats.bytesFromOrigins += chunk.length;
    if (!this.gotByte) {
      this.gotByte = true;
      if (c.tls) this.member?.succeeded();
      this.deadlineKind = Deadline.None;
      this.rlog?.firstByte();
    }
    if (this.res) return this.responseBody(chunk);
    this.resBuf = concat(this.resBuf, chunk);
    this.responseHead(c);
  }

  originEnd(c: OriginConn): void {
    this.originGone(c, undefined);
  }

  originClosed(c: OriginConn, error?: Error): void {
    this.originGone(c, error);
  }

  protected originGone(c: OriginConn, error: Error | undefined): void {
    if (c !== this.origin || this.done) return;
    const ctx = this.conn.ctx;
    // A body delimited by the close ends at the origin's FIN; a reset cuts it short (RFC 9112 §8).
    if (this.res && this.framing === "close" && !error) {
      this.resComplete = true;
      this.originReusable = false;
      return this.exchangeDone();
    }
    if (!this.gotByte) {
      // A new TLS connection the origin refused after our handshake (a TLS 1.3 client certificate check): a failed connect.
      const refused = c.tls && c.uses === 1 ? lateRefusal(error) : undefined;
      if (refused) return this.originFailed(c, refused);
      // A kept-alive connection the origin closed as we took it: once more on a new one (RFC 9112 §9.3.1).
      if (c.uses > 1 && !this.retried && this.requestDone && this.req!.contentLength <= 0 && !this.chunkedUp && idempotent(this.req!.method)) {
        this.retried = true;
        ctx.httpStats.retries++;
        c.destroy(false);
        this.toOrigin.clear();
        this.attach(ctx.origins.get(c.host, c.port, this, true, c.tlsTarget));
        return this.sendOrigin(this.headBytes);
      }
      const cause = countOriginClose(ctx.stats, error);
      return this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
    }
    // Bytes came, but no response began for the client (a head cut short, or only an interim 1xx): a 502 still;
    // mid-response, the stream is reset (fail does), so a truncated body is not taken for a whole one.
    const cause = countOriginClose(ctx.stats, error);
    this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
  }

  // ---- the response ----

  protected resComplete = false;
  protected originReusable = false;

  protected responseHead(c: OriginConn): void {
    const buf = this.resBuf;
    const r = readResponseHead(buf);
    if (r === undefined) return;
    if (r instanceof HeadError) return this.originBroken(r.reason);
    this.resBuf = EMPTY;
    const { head: parsed, headLength } = r;
    const rest = tailAfter(buf, headLength);
    const ctx = this.conn.ctx;
    if (parsed.status < 200) {
      // No upgrade over HTTP/2 (§8.6); interim responses are dropped (the final one follows).
      if (parsed.status === 101) return this.originBroken("101 Switching Protocols without an upgrade request");
      ctx.httpStats.response(parsed.status);
      // Not the response (RFC 9110 §15.2): the final one is still due within first_byte_timeout (as exchange.ts).
      if (this.requestDone) this.setDeadline(Deadline.FirstByte, ctx.http.firstByteTimeoutMs);
      if (rest.length) this.originData(c, rest);
      return;
    }
    this.res = parsed;
    this.deadlineKind = Deadline.None;
    ctx.httpStats.response(parsed.status);
    if (this.rlog) this.rlog.status = parsed.status;
    const req = this.req!;
    this.framing = originFraming(req.method, parsed);
    this.originReusable = originReusable(parsed, this.framing);
    this.resLeft = parsed.contentLength;
    this.resChunks = this.framing === "chunked" ? new ChunkedDecoder(MAX_RESPONSE_HEAD) : undefined;
    const headers = h2ResponseHeaders(parsed, this.framing === "length" || this.framing === "none", this.rlog?.returnedId);
    const empty = this.framing === "none" || (this.framing === "length" && this.resLeft === 0);
    try {
      this.stream.respond(headers, { endStream: empty });
    } catch (e) {
      // A field node:http2 refuses to send (a connection-specific one we did not know).
      return this.originBroken(`response head not sendable in HTTP/2: ${(e as Error).message}`);
    }
    this.responded = true;
    if (this.rlog) this.rlog.bytesOut += headLength;
    if (empty) {
      // Bytes after a response that has no more (as exchange.ts responseDone): its connection is not reused.
      if (rest.length) this.originReusable = false;
      this.resComplete = true;
      return this.exchangeDone();
    }
    if (rest.length) this.responseBody(rest);
  }

  protected responseBody(chunk: Uint8Array): void {
    if (this.done) return;
    switch (this.framing) {
      case "length": {
        const n = Math.min(this.resLeft, chunk.length);
        this.resLeft -= n;
        this.sendClient(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (this.resLeft === 0) this.responseEnded(chunk.length - n);
        return;
      }
      case "chunked": {
        const d = this.resChunks!;
        const n = d.feed(chunk, 0, (data) => this.sendClient(data));
        if (n < 0) return this.originBroken(`malformed chunked response body: ${d.error}`);
        if (d.done) this.responseEnded(chunk.length - n);
        return;
      }
      case "close":
        return this.sendClient(chunk);
    }
  }

  protected sendClient(data: Uint8Array): void {
    if (!data.length) return;
    if (this.rlog) this.rlog.bytesOut += data.length;
    if (this.stream.write(data)) return;
    // The client's window (or node's buffer) is full: the origin waits.
    const s = this.origin?.socket;
    if (s && !this.originPaused) {
      this.originPaused = true;
      s.pause();
      this.stream.once("drain", () => {
        if (!this.originPaused) return;
        this.originPaused = false;
        this.origin?.socket?.resume();
      });
    }
  }

  /** `extra`: bytes after the response in the same read; its connection is then not reused (exchange.ts responseDone). */
  protected responseEnded(extra: number): void {
    if (extra > 0) this.originReusable = false;
    this.resComplete = true;
    this.stream.end();
    this.exchangeDone();
  }

  /** The response is complete; once the request is too, the origin connection goes back. */
  protected releaseOrigin(how: "reuse" | "close" | "reset"): void {
    const c = this.origin;
    this.origin = undefined;
    this.deadlineKind = Deadline.None;
    if (c) {
      if (how === "reuse" && this.toOrigin.queued === 0) {
        if (this.originPaused) c.socket?.resume();
        this.conn.ctx.origins.release(c, this.conn.ctx.clock.now);
      } else c.destroy(how !== "reset");
    }
    this.originPaused = false;
    this.toOrigin.clear();
    this.member?.released();
    this.member = undefined;
    if (this.holdsOrigin) {
      this.holdsOrigin = false;
      this.conn.releaseOrigin();
    }
  }

  /** This stream counts in its session's origin connections (H2Connection.holdOrigin), until releaseOrigin. */
  protected holdsOrigin = false;

  protected originBroken(why: string): void {
    this.conn.ctx.stats.originError("protocol");
    this.fail(502, `origin ${this.origin?.host}:${this.origin?.port}: ${why}`);
  }

  /** RST_STREAM with `code`; the origin connection is reset (it may be mid-request). */
  protected setDeadline(kind: Deadline, ms: number): void {
    this.deadlineKind = kind;
    this.deadline = this.conn.ctx.clock.now + ms;
  }

  protected abstract exchangeDone(): void;
  protected abstract fail(status: number, message: string): void;
  protected abstract reset(code: number): void;
}
