import type { Member } from "../../origin/pool";
import { clientAddress, type EndNamesOrMaker, type Ends } from "../inbound";
import { Outbox } from "../outbox";
import { ChunkedDecoder } from "./chunked";
import { HIGH_WATER, MAX_RESPONSE_HEAD, idempotent, countOriginClose, countOriginFailure, readResponseHead, tailAfter, type HttpContext } from "./context";
import { clientResponseHead, closingResponse, originFraming, originReusable, verbatimResponse, withFields, type ResponseFraming } from "./response";
import type { OriginConn, OriginUser } from "./origins";
import { HeadError, type RequestHead, type ResponseHead } from "./message";
import { RequestLog } from "./reqlog";
import type { HttpSocket } from "./socket";
import { lateRefusal } from "../../origin/tls";
import { Deadline, EMPTY, Phase, concat, withHead } from "./state";

/*
 * The state of one client connection's current exchange, and its origin
 * side: origin connection events and the response, streamed to the client.
 * The client side: HttpConnection (conn.ts), its endings and timeouts endings.ts's.
 */

/** One client connection's state and its origin side; HttpConnection adds the client side. */
export abstract class Exchange implements OriginUser {
  protected phase = Phase.Head;
  /** This connection's bytes from its client and from its origins (the busiest-clients tracker's, at close). */
  protected clientBytes = 0;
  protected originBytes = 0;
  protected inbuf: Uint8Array = EMPTY;
  protected scanFrom = 0;
  protected req: RequestHead | undefined;
  protected bodyLeft = 0;
  protected reqChunks: ChunkedDecoder | undefined;
  protected requestDone = false;
  protected local = false;
  protected upgrade = false;
  protected keepAlive = true;
  protected clientEnded = false;
  protected closed = false;
  // The origin side of the current exchange.
  protected origin: OriginConn | undefined;
  protected member: Member | undefined;
  protected headBytes: Uint8Array = EMPTY;
  protected retried = false;
  protected readonly toOrigin = new Outbox();
  protected readonly toClient = new Outbox();
  protected originPaused = false;
  // The response.
  protected resBuf: Uint8Array = EMPTY;
  protected res: ResponseHead | undefined;
  protected gotByte = false;
  protected originFraming: ResponseFraming = "none";
  protected decodeForClient = false;
  protected resLeft = 0;
  protected resChunks: ChunkedDecoder | undefined;
  protected originReusable = false;
  protected endAfterFlush = false;
  protected tunnelUp = false;
  protected tunnelDown = false;
  // Timeouts.
  protected lastActive: number;
  // The client-side deadlines (config/deadlines.ts), numbers on the coarse clock the sweep compares:
  /** When the current request head's time started: accept for the first request, its first byte for later ones. */
  protected headFrom: number;
  /** When the connection began waiting for a next request (keep-alive). */
  protected waitFrom = 0;
  /** A response was sent on this connection: an empty head phase is a keep-alive wait. */
  protected served = false;
  /** The last client byte, or the last time we let the client send again (a gap we caused is not the client's). */
  protected clientAt: number;
  protected deadline = 0;
  protected deadlineKind = Deadline.None;
  readonly clientIp: string;
  /** The access log's record of this connection's requests; absent when the log is off. */
  protected readonly rlog: RequestLog | undefined;
  // The original destination's port (sk_lookup keeps it as the accepted
  // socket's local address), read on first use: each of Bun's local*
  // getters is a getsockname(2), and most configs never need it.
  private edgePort = -1;
  protected get localPort(): number {
    if (this.edgePort < 0) this.edgePort = this.ends ? this.ends.edge.port : this.client.localPort;
    return this.edgePort;
  }

  constructor(
    protected readonly client: HttpSocket,
    protected readonly ctx: HttpContext,
    /** Both ends as a trusted load balancer's PROXY header named them (accept_proxy); else the socket's. */
    protected readonly ends?: Ends,
    /** With the access log on and `ends` not computed: the socket's ends as text, for the log. */
    names?: EndNamesOrMaker,
  ) {
    this.lastActive = ctx.clock.now;
    this.headFrom = ctx.clock.now;
    this.clientAt = ctx.clock.now;
    this.clientIp = clientAddress(ends, names, client);
    if (ctx.log) this.rlog = RequestLog.of(ctx.log, ctx.http.requestIdInResponse, ends, "1.1", this.clientIp, names);
    ctx.active.add(this);
    ctx.stats.connectionsActive++;
    ctx.stats.connectionsTotal++;
  }

  protected sendOrigin(bytes: Uint8Array): void {
    if (!this.origin || this.local) return;
    const s = this.origin.open ? this.origin.socket : undefined;
    if (this.toOrigin.write(s, bytes)) return;
    if (s || this.toOrigin.queued >= HIGH_WATER) this.pauseClient();
  }

  /** `last`: the response's last bytes on a connection that ends after it (the socket may send them with its FIN: HttpSocket.writeLast). */
  protected sendClient(bytes: Uint8Array, last = false): void {
    if (this.rlog) this.rlog.bytesOut += bytes.length;
    if (this.toClient.write(this.client, bytes, last)) return;
    if (this.origin?.socket && !this.originPaused) {
      this.originPaused = true;
      this.origin.socket.pause();
    }
  }

  // ---- origin events ----

  protected attach(c: OriginConn): void {
    this.origin = c;
    if (!c.open) this.setDeadline(Deadline.Connect, this.ctx.config.connectTimeoutMs);
  }

  originOpen(c: OriginConn): void {
    // Over TLS, at the first byte (originData): a TLS 1.3 origin may still refuse the handshake (lateRefusal).
    if (!c.tls) this.member?.succeeded();
    this.deadlineKind = Deadline.None;
    if (this.toOrigin.flush(c.socket!)) this.resumeClient();
    if (this.requestDone && !this.gotByte) this.setDeadline(Deadline.FirstByte, this.ctx.http.firstByteTimeoutMs);
  }

  originFailed(c: OriginConn, error: unknown): void {
    if (c !== this.origin) return;
    const cause = countOriginFailure(this.ctx.stats, error);
    // A descriptor, memory or local port this host lacked says nothing of the origin: no failure toward its ejection.
    if (!cause.local) this.member?.failed(cause.kind);
    this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
  }

  originDrain(c: OriginConn): void {
    if (c !== this.origin || !this.toOrigin.flush(c.socket!)) return;
    this.resumeClient();
    if (this.phase === Phase.Tunnel && this.tunnelUp) c.socket!.shutdown();
  }

  originData(c: OriginConn, chunk: Uint8Array): void {
    this.lastActive = this.ctx.clock.now;
    this.ctx.stats.bytesFromOrigins += chunk.length;
    this.originBytes += chunk.length;
    if (!this.gotByte) {
      this.gotByte = true;
      if (c.tls) this.member?.succeeded();
      this.deadlineKind = Deadline.None;
      this.rlog?.firstByte();
    }
    if (this.phase === Phase.Tunnel) return this.sendClient(chunk);
    if (this.res) return this.responseBody(chunk);
    this.resBuf = concat(this.resBuf, chunk);
    this.responseHead(c);
  }

  originEnd(c: OriginConn): void {
    if (this.phase === Phase.Tunnel) {
      // A send to the origin failed: it reset, though Bun reports that as an end, as for a FIN (Outbox.failed).
      if (this.toOrigin.failed) return this.abort();
      this.tunnelDown = true;
      if (this.toClient.queued === 0) this.client.shutdown();
      if (this.tunnelUp) this.endClient();
      return;
    }
    this.originGone(c, undefined);
  }

  originClosed(c: OriginConn, error?: Error): void {
    if (this.phase === Phase.Tunnel) {
      if (error || this.toOrigin.failed) return this.abort();
      return this.endClient();
    }
    this.originGone(c, error);
  }

  /** The origin connection ended mid-exchange. */
  protected originGone(c: OriginConn, error: Error | undefined): void {
    if (c !== this.origin) return;
    // A body delimited by the close ends at the origin's FIN; a reset cuts it short, and a
    // truncated body must not reach the client as a whole one (RFC 9112 §8).
    if (this.res && this.originFraming === "close" && !this.decodeForClient && !error) {
      this.originReusable = false;
      this.resDone = true;
      return this.exchangeDone();
    }
    if (!this.gotByte) {
      // A new TLS connection the origin refused after our handshake (a TLS 1.3 client certificate check): a failed connect.
      const refused = c.tls && c.uses === 1 ? lateRefusal(error) : undefined;
      if (refused) return this.originFailed(c, refused);
      // A kept-alive connection the origin closed while we picked it: send again, once (RFC 9112 §9.3.1).
      if (c.uses > 1 && !this.retried && this.requestDone && this.bodyless && idempotent(this.req!.method)) {
        this.retried = true;
        this.ctx.httpStats.retries++;
        c.destroy(false);
        this.toOrigin.clear();
        this.attach(this.ctx.origins.get(c.host, c.port, this, true, c.tlsTarget));
        return this.sendOrigin(this.headBytes);
      }
      const cause = countOriginClose(this.ctx.stats, error);
      return this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
    }
    // Bytes came, but no response began for the client (a head cut short, or only an interim 1xx):
    // it can still get a 502 (fail answers it so), not a reset.
    // Mid-response: the client must not mistake a truncated body for a whole one (fail resets it).
    const cause = countOriginClose(this.ctx.stats, error);
    this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
  }

  protected get bodyless(): boolean {
    return !this.req!.chunked && this.req!.contentLength <= 0;
  }

  // ---- responses ----

  protected resDone = false;

  protected responseHead(c: OriginConn): void {
    const whole = this.resBuf;
    const r = readResponseHead(whole);
    if (r === undefined) return;
    if (r instanceof HeadError) return this.originBroken(r.reason);
    this.resBuf = EMPTY;
    const { head: parsed, headLength } = r;
    const req = this.req!;
    if (parsed.status < 200) {
      const rest = tailAfter(whole, headLength);
      if (parsed.status === 101) {
        if (!this.upgrade) return this.originBroken("101 Switching Protocols without an upgrade request");
        this.ctx.httpStats.response(101);
        if (this.rlog) this.rlog.status = 101;
        this.sendClient(Buffer.from(clientResponseHead(parsed, req.minor, "none", true, true, this.requestIdField(parsed)), "latin1"));
        this.phase = Phase.Tunnel;
        this.deadlineKind = Deadline.None;
        if (rest.length) this.sendClient(rest);
        const early = this.inbuf;
        this.inbuf = EMPTY;
        if (early.length) this.sendOrigin(early);
        if (this.clientEnded) {
          // The client's FIN came while the 101 was awaited (HttpConnection.clientEnd held it): the tunnel's
          // way up is over already, and the origin must hear so, as clientEnd tells it in a tunnel.
          this.tunnelUp = true;
          if (this.toOrigin.queued === 0) c.socket?.shutdown();
        }
        this.resumeClient();
        return;
      }
      // Interim responses (100-continue, 103) go on, except to an HTTP/1.0 client (RFC 9110 §15.2).
      this.ctx.httpStats.response(parsed.status);
      if (req.minor === 1) this.sendClient(Buffer.from(clientResponseHead(parsed, 1, "none", true, false), "latin1"));
      // An interim response is not the response (RFC 9110 §15.2): the final one is still due within
      // first_byte_timeout (of this, or of the request's end: requestComplete), not only at idle_timeout.
      if (this.requestDone) this.setDeadline(Deadline.FirstByte, this.ctx.http.firstByteTimeoutMs);
      if (rest.length) this.originData(c, rest);
      return;
    }
    this.res = parsed;
    this.deadlineKind = Deadline.None;
    this.resDone = false;
    this.ctx.httpStats.response(parsed.status);
    if (this.rlog) this.rlog.status = parsed.status;
    // With request_id_in_response, the response says which request it answers (the access log's X-Request-Id), unless the origin said so itself.
    const idField = this.rlog ? this.requestIdField(parsed) : "";
    // Message body length, RFC 9112 §6.3.
    this.originFraming = originFraming(req.method, parsed);
    this.originReusable = originReusable(parsed, this.originFraming);
    // An HTTP/1.0 client cannot take chunked: decode, and frame by close.
    this.decodeForClient = this.originFraming === "chunked" && req.minor === 0;
    const framing = this.decodeForClient ? "close" : this.originFraming;
    if (framing === "close" || !this.requestDone || this.ctx.draining) this.keepAlive = false;
    this.resLeft = parsed.contentLength;
    this.resChunks = this.originFraming === "chunked" ? new ChunkedDecoder(MAX_RESPONSE_HEAD) : undefined;
    if (this.keepAlive && req.minor === 1 && framing === this.originFraming && verbatimResponse(parsed)) {
      // The origin's head goes on as it came, with the body bytes that came with it: no copy at all.
      if (idField === "") return this.responseVerbatim(whole, headLength);
      // With our X-Request-Id put in before the blank line: one copy, not a rebuild of the head.
      return this.responseVerbatim(withFields(whole, headLength, idField), headLength + idField.length);
    }
    if (!this.keepAlive && req.minor === 1 && framing === this.originFraming && framing !== "close" && verbatimResponse(parsed)) {
      // The client's last response (it said close, or we drain), framed by length or chunks (responseVerbatim's):
      // the origin's head with "connection: close" in place of its keep-alive, in one copy.
      const closing = closingResponse(whole, headLength, parsed, idField);
      if (closing) return this.responseVerbatim(closing, headLength + closing.length - whole.length);
    }
    const rest = tailAfter(whole, headLength);
    const head = clientResponseHead(parsed, req.minor, framing, this.keepAlive, false, idField);
    if (rest.length && (this.originFraming === "length" || framing === "chunked")) {
      // The head and the body bytes that came with it in one write: one syscall, not two.
      let n: number;
      if (this.originFraming === "length") {
        n = Math.min(this.resLeft, rest.length);
        this.resLeft -= n;
      } else {
        n = this.resChunks!.feed(rest, 0);
        if (n < 0) return this.originBroken(`malformed chunked response body: ${this.resChunks!.error}`);
      }
      const done = this.originFraming === "length" ? this.resLeft === 0 : this.resChunks!.done;
      this.sendClient(withHead(head, rest.subarray(0, n)), done && !this.keepAlive);
      if (done) this.responseDone(rest.length - n);
      return;
    }
    const done = this.originFraming === "none" || (this.originFraming === "length" && this.resLeft === 0);
    this.sendClient(withHead(head, EMPTY), done && !this.keepAlive);
    if (done) return this.responseDone(rest.length);
    if (rest.length) this.responseBody(rest);
  }

  /** The X-Request-Id field for the client's response head: "" without one (request_id_in_response off), or when the origin's response has its own. */
  protected requestIdField(res: ResponseHead): string {
    const id = this.rlog?.returnedId;
    return id === undefined || res.names.includes("x-request-id") ? "" : `x-request-id: ${id}\r\n`;
  }

  /** Send `whole[0..headLen)` (the origin's head) and as much of the bytes after it as belong to this response, in one write. */
  protected responseVerbatim(whole: Uint8Array, headLen: number): void {
    let n = 0;
    let done = this.originFraming === "none";
    const after = whole.length - headLen;
    if (this.originFraming === "length") {
      n = Math.min(this.resLeft, after);
      this.resLeft -= n;
      done = this.resLeft === 0;
    } else if (this.originFraming === "chunked" && after > 0) {
      n = this.resChunks!.feed(whole, headLen);
      if (n < 0) return this.originBroken(`malformed chunked response body: ${this.resChunks!.error}`);
      done = this.resChunks!.done;
    }
    this.sendClient(headLen + n === whole.length ? whole : whole.subarray(0, headLen + n), done && !this.keepAlive);
    if (done) this.responseDone(after - n);
  }

  /**
   * The response is complete. `extra` bytes came after it in the same read: an origin that sent more
   * than its framing said (a wrong Content-Length, a body to a HEAD or a 204) cannot be trusted with
   * another request, whose response those bytes would be taken for, or begin (RFC 9112 §6.3: never
   * forward such data as a separate response). They are dropped and its connection closes, as
   * nginx's does ("upstream sent more data than specified").
   */
  protected responseDone(extra: number): void {
    if (extra > 0) this.originReusable = false;
    this.resDone = true;
    this.exchangeDone();
  }

  protected responseBody(chunk: Uint8Array): void {
    switch (this.originFraming) {
      case "length": {
        const n = Math.min(this.resLeft, chunk.length);
        this.resLeft -= n;
        this.sendClient(n === chunk.length ? chunk : chunk.subarray(0, n), this.resLeft === 0 && !this.keepAlive);
        if (this.resLeft === 0) this.responseDone(chunk.length - n);
        return;
      }
      case "chunked": {
        const d = this.resChunks!;
        const n = d.feed(chunk, 0, this.decodeForClient ? (data) => this.sendClient(data) : undefined);
        if (n < 0) return this.originBroken(`malformed chunked response body: ${d.error}`);
        if (!this.decodeForClient) this.sendClient(n === chunk.length ? chunk : chunk.subarray(0, n), d.done && !this.keepAlive);
        if (d.done) this.responseDone(chunk.length - n);
        return;
      }
      case "close":
        return this.sendClient(chunk);
    }
  }


  /** The origin broke HTTP: 502 if nothing was sent yet, else the client is reset. */
  protected originBroken(why: string): void {
    this.ctx.stats.originError("protocol");
    if (this.res) return this.abort();
    this.fail(502, `origin ${this.origin?.host}:${this.origin?.port}: ${why}`);
  }

  // pause()/resume() are calls into Bun's native code: made only when they change something.
  protected clientPaused = false;

  protected pauseClient(): void {
    if (this.clientPaused) return;
    this.clientPaused = true;
    this.client.pause();
  }

  protected resumeClient(): void {
    if (!this.clientPaused) return;
    this.clientPaused = false;
    this.clientAt = this.ctx.clock.now;
    this.client.resume();
  }

  protected setDeadline(kind: Deadline, ms: number): void {
    this.deadlineKind = kind;
    this.deadline = this.ctx.clock.now + ms;
  }

  protected abstract exchangeDone(): void;
  protected abstract fail(status: number, message: string, answer?: Uint8Array): void;
  protected abstract endClient(): void;
  abstract abort(): void;
  abstract drainService(): void;
  abstract sweep(now: number): void;
}
