import { ChunkedDecoder } from "./chunked";
import { MAX_RESPONSE_HEAD, readResponseHead, tailAfter } from "./context";
import { Exchange } from "./exchange";
import { HeadError, type ResponseHead } from "./message";
import type { OriginConn } from "./origins";
import { clientResponseHead, closingResponse, originFraming, originReusable, verbatimResponse, withFields } from "./response";
import { Deadline, EMPTY, Phase, withHead } from "./state";

/*
 * The response of a client connection's current exchange: the origin's head
 * read and judged (interim, upgrade, framing, reuse), passed on verbatim or
 * rebuilt, and its body streamed to the client by its framing (RFC 9112 §6).
 * The origin connection's events: exchange.ts; the client side: conn.ts.
 */

/** An exchange's response side (see above); ConnectionEndings and HttpConnection add the client side. */
export abstract class ResponseExchange extends Exchange {
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
}
