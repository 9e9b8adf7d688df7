import { formatAddress } from "../../config/address";
import type { Session } from "../pipelineapi";
import { ChunkedDecoder, reframe } from "./chunked";
import { HIGH_WATER, requestOrigin } from "./context";
import { ConnectionEndings } from "./endings";
import { Deadline, EMPTY, Phase, concat } from "./state";
import { type ConnectionForwarding, extendable, forwardingFor, originRequestHead } from "./headers";
import { serveLocal } from "./local";
import { hasToken } from "./fields";
import { HeadError, type RequestHead } from "./message";
import { headEnd, hopelessHead, parseRequestHead } from "./parse";

/*
 * One client connection of an http service: a sequence of request/response
 * exchanges (RFC 9112 §9.3, pipelined requests answered in order), each
 * streamed to an origin connection taken from the keep-alive pool, or, after
 * a 101, a plain byte tunnel. Here the client's side: its events and its
 * requests; the origin's side and the response are Exchange's (exchange.ts),
 * the endings and deadlines ConnectionEndings' (endings.ts).
 *
 * Backpressure as in relay.ts: a partial write queues the rest in an Outbox
 * and pauses the sending side until `drain`; nothing buffers a whole body.
 * Deadlines are numbers checked by the service's sweep (CoarseClock), not
 * timers per request.
 */

/** A client connection of an http service (see above), the pipeline's last stage. */
export class HttpConnection extends ConnectionEndings implements Session {
  /** The forwarding fields of this connection's extendable requests (its client's, shared: forwardingFor). */
  private forwarding: ConnectionForwarding | undefined;

  /** The pipeline hands over: `rest` are the bytes that came after a PROXY header. */
  started(rest: Uint8Array): this {
    if (rest.length) this.clientData(rest);
    return this;
  }

  // ---- client events (the pipeline's Session) ----

  clientData(chunk: Uint8Array): void {
    const now = this.ctx.clock.now;
    this.lastActive = now;
    this.clientAt = now;
    this.ctx.stats.bytesFromClients += chunk.length;
    this.clientBytes += chunk.length;
    if (this.rlog) this.rlog.bytesIn += chunk.length;
    switch (this.phase) {
      case Phase.Head:
        // A later request's head has its time from its first byte (the first request's from accept).
        if (this.inbuf.length === 0 && this.served) this.headFrom = now;
        this.inbuf = concat(this.inbuf, chunk);
        return this.readHeads();
      case Phase.Body:
        return this.feedBody(chunk);
      case Phase.Wait:
        this.inbuf = concat(this.inbuf, chunk);
        if (this.inbuf.length > this.ctx.http.maxHeaderBytes + HIGH_WATER) this.pauseClient();
        return;
      case Phase.Tunnel:
        return this.sendOrigin(chunk);
    }
  }

  clientDrain(): void {
    const held = this.held;
    if (!this.toClient.flush(this.client)) return;
    if (this.endAfterFlush) return this.endClient();
    if (this.originPaused && this.origin?.socket) {
      this.originPaused = false;
      this.origin.socket.resume();
    }
    if (this.phase === Phase.Tunnel && this.tunnelDown) this.client.shutdown();
    // Pipelined requests held while the client did not read its answers (readHeads): their turn now.
    if (held) {
      this.headFrom = this.ctx.clock.now;
      this.resumeClient();
      this.nextRequests();
    }
  }

  clientEnd(): void {
    this.clientEnded = true;
    switch (this.phase) {
      case Phase.Head:
        // Pipelined requests held for a client that is behind on reading are still answered (clientDrain).
        if (this.held) return;
        // Between requests, a FIN is a goodbye; mid-head, the request is abandoned.
        return this.endClient();
      case Phase.Body:
        // The body will never be complete: the origin must not take a truncated one as whole.
        this.ctx.stats.clientResets++;
        return this.abort();
      case Phase.Wait:
        return; // answer what was asked (pipelined requests too), then close
      case Phase.Tunnel:
        this.tunnelUp = true;
        if (this.toOrigin.queued === 0) this.origin?.socket?.shutdown();
        if (this.tunnelDown) this.endClient();
        return;
      case Phase.Done:
        return void this.client.end();
    }
  }

  bytes(): number {
    return this.clientBytes + this.originBytes;
  }

  clientClosed(error?: Error): void {
    // A send to the client failed: it reset the connection, though Bun's sockets report that as an end and a
    // close without error, as for a FIN (Outbox.failed).
    const reset = error !== undefined || this.toClient.failed;
    if (reset && this.phase !== Phase.Done && this.phase !== Phase.Head) this.ctx.stats.clientResets++;
    this.rlog?.end(reset ? "client_reset" : "client_close");
    this.release(reset);
  }

  // ---- requests ----

  private readHeads(): void {
    const max = this.ctx.http.maxHeaderBytes;
    while (this.phase === Phase.Head && this.inbuf.length) {
      if (this.held) return this.pauseClient();
      const end = headEnd(this.inbuf, this.scanFrom);
      if (end < 0) {
        if (this.inbuf.length > max) return this.refuse(431, `request head larger than ${max} bytes`);
        const hopeless = hopelessHead(this.inbuf, this.scanFrom);
        if (hopeless) return this.refuse(400, hopeless);
        this.scanFrom = Math.max(0, this.inbuf.length - 3);
        return;
      }
      if (end + 4 > max) return this.refuse(431, `request head larger than ${max} bytes`);
      const parsed = parseRequestHead(this.inbuf, end);
      // No view of the head itself: a subarray of a small socket chunk makes JSC give the chunk an
      // ArrayBuffer of its own first (a malloc and a copy, ≈ 220 ns per request measured).
      const head = this.inbuf;
      const rest = end + 4 === head.length ? EMPTY : head.subarray(end + 4);
      this.inbuf = EMPTY;
      this.scanFrom = 0;
      if (parsed instanceof HeadError) return this.refuse(parsed.status, parsed.reason, parsed.h2Preface);
      this.startRequest(parsed, head, end + 2, rest);
    }
  }

  /** The address:port the client dialled (HTTP/1.0 requests without Host get it as their Host). */
  private destination(): string {
    const a = this.ends ? formatAddress(this.ends.edge.addr) : this.client.localAddress;
    return a.includes(":") ? `[${a}]:${this.localPort}` : `${a}:${this.localPort}`;
  }

  /** `head`: starts with the head as received; `rawLength`: its length up to the CRLF of its last field line. */
  private startRequest(req: RequestHead, head: Uint8Array, rawLength: number, rest: Uint8Array): void {
    const ctx = this.ctx;
    ctx.httpStats.requests++;
    this.req = req;
    this.requestDone = false;
    this.res = undefined;
    this.gotByte = false;
    this.retried = false;
    this.keepAlive = req.minor === 1 ? !hasToken(req.connection, "close") : hasToken(req.connection, "keep-alive");
    this.bodyLeft = req.contentLength > 0 ? req.contentLength : 0;
    // Every byte counts against the body limit, not only data: else extensions and trailers are free.
    this.reqChunks = req.chunked ? new ChunkedDecoder(ctx.http.maxHeaderBytes, ctx.http.maxBodyBytes) : undefined;
    if (req.contentLength > ctx.http.maxBodyBytes) return this.refuse(413, `request body larger than ${ctx.http.maxBodyBytes} bytes`);
    const q = req.target.indexOf("?");
    const route = ctx.router.match(req.host, ctx.router.byPort ? this.localPort : 0, q < 0 ? req.target : req.target.slice(0, q));
    // Only WebSocket is tunnelled (RFC 6455 §4.1); other Upgrade offers are dropped as hop-by-hop, and so is
    // one in an HTTP/1.0 request, which a server must ignore (RFC 9110 §7.8: a 1.0 hop may have passed it on).
    this.upgrade = req.minor === 1 && req.upgrade !== "" && hasToken(req.connection, "upgrade") && /^websocket$/i.test(req.upgrade);
    this.local = route.pool === undefined;
    this.phase = this.reqChunks || this.bodyLeft > 0 ? Phase.Body : Phase.Wait;
    // Its bytes: the head (raw lacks the blank line's CRLF) and whatever came after it so far.
    // Whether an id of ours goes to the origin (the rlog's, as bytes or text).
    const addId = this.rlog?.request(req, rawLength + 2 + rest.length) ?? false;
    if (!this.local) {
      const to = requestOrigin(ctx, route.pool!, this.clientIp, () => this.localPort, this);
      if (!to) return this.fail(503, "no healthy origin");
      this.member = to.member;
      this.attach(to.conn);
      this.rlog?.originAt(to.conn.host, to.conn.port);
      if (!this.upgrade && !this.rlog?.replaceId && extendable(req)) {
        // The head as it came (its Connection line cut out) plus our fields: one copy, no rebuilding.
        this.headBytes = (this.forwarding ??= forwardingFor(this.clientIp, ctx.proto)).head(head, rawLength, req.host!, addId ? this.rlog : undefined, req.connectionAt, req.connectionEnd);
      } else {
        const fwd = { clientIp: this.clientIp, proto: ctx.proto, fallbackHost: req.host === undefined ? this.destination() : "", upgrade: this.upgrade, requestId: addId ? this.rlog!.id : undefined };
        this.headBytes = Buffer.from(originRequestHead(req, fwd), "latin1");
      }
      this.sendOrigin(this.headBytes);
    }
    if (this.phase === Phase.Body) {
      if (rest.length) this.feedBody(rest);
    } else {
      this.inbuf = rest;
      this.requestComplete();
    }
  }

  /** Data runs of the current feed, for reframe() (one array per connection, reused). */
  private readonly runs: Uint8Array[] = [];
  private readonly collect = (data: Uint8Array) => void this.runs.push(data);

  private feedBody(buf: Uint8Array): void {
    let n: number;
    if (this.reqChunks) {
      const d = this.reqChunks;
      this.runs.length = 0;
      n = d.feed(buf, 0, this.collect);
      if (n < 0) return d.tooLarge ? this.refuse(413, `request body larger than ${this.ctx.http.maxBodyBytes} bytes`) : this.refuse(400, `malformed chunked request body: ${d.error}`);
      // Re-framed, never passed on as it came: the origin sees canonical chunks whatever the client sent.
      const out = reframe(this.runs, d.done);
      this.runs.length = 0;
      if (out.length) this.sendOrigin(out);
    } else {
      n = Math.min(this.bodyLeft, buf.length);
      this.bodyLeft -= n;
      if (n) this.sendOrigin(n === buf.length ? buf : buf.subarray(0, n));
    }
    if (this.reqChunks ? this.reqChunks.done : this.bodyLeft === 0) {
      this.inbuf = n < buf.length ? buf.subarray(n) : EMPTY;
      this.phase = Phase.Wait;
      this.requestComplete();
    }
  }

  private requestComplete(): void {
    this.requestDone = true;
    if (this.local) return void serveLocal(this.req!, this.client, this.ctx).then((bytes) => this.localAnswered(bytes));
    // The response is due (an interim 1xx, as after 100-continue, is not it: exchange.ts responseHead).
    if (this.origin?.open && !this.res) this.setDeadline(Deadline.FirstByte, this.ctx.http.firstByteTimeoutMs);
    if (this.res && this.resDone) this.exchangeDone();
  }

  private localAnswered(bytes: { data: Uint8Array; status: number }): void {
    if (this.closed || this.phase === Phase.Done) return;
    this.ctx.httpStats.response(bytes.status);
    this.res = undefined;
    if (this.rlog) {
      this.rlog.status = bytes.status;
      this.rlog.bytesOut += bytes.data.length;
    }
    this.toClient.write(this.client, bytes.data) || this.pauseClient();
    this.resDone = true;
    this.exchangeDone();
  }

  /** The service is draining: a connection waiting for its next request closes now; a busy one after its response. */
  drainService(): void {
    if (this.closed || this.phase !== Phase.Head || this.inbuf.length > 0) return;
    this.keepAlive = false;
    this.endClient();
  }

  /** Response complete (and, once the request is too) the exchange is over. */
  protected exchangeDone(): void {
    this.rlog?.end();
    if (!this.requestDone && !this.local) {
      // The origin answered before the whole body arrived: the rest is not read, the connections close.
      // The client is still sending it: closed at once, the unread bytes would make our close an RST that
      // destroys the answer in flight. Half-close and read on instead (RFC 9112 §9.6).
      this.keepAlive = false;
      this.originReusable = false;
      this.linger = true;
    }
    this.deadlineKind = Deadline.None;
    this.releaseOrigin(this.originReusable ? "reuse" : this.requestDone ? "close" : "reset");
    this.res = undefined;
    if (!this.keepAlive) return this.endClient();
    this.phase = Phase.Head;
    this.served = true;
    this.waitFrom = this.headFrom = this.ctx.clock.now;
    this.resumeClient();
    this.nextRequests();
  }

  /** The pipelined requests in `inbuf`, then, after the client's FIN, the end. */
  private nextRequests(): void {
    if (this.inbuf.length) this.readHeads();
    if (!this.clientEnded || this.held) return;
    // The client's FIN came while an earlier request was answered: nothing more will arrive.
    if (this.phase === Phase.Head) this.endClient();
    else if (this.phase === Phase.Body) {
      // A pipelined request whose body stops short of its framing: the origin must not take it as whole.
      this.ctx.stats.clientResets++;
      this.abort();
    }
  }
}
