import type { Socket } from "bun";
import { unmapAddress } from "../../config/address";
import type { Member } from "../../origin/pool";
import { Outbox } from "../outbox";
import { ChunkedDecoder } from "./chunked";
import { HIGH_WATER, LINGER_MS, MAX_RESPONSE_HEAD, idempotent, originCause, type HttpContext } from "./context";
import { clientResponseHead, errorResponse, extendable, forwardingFields, originRequestHead, verbatimResponse, type ResponseFraming } from "./headers";
import { serveLocal } from "./local";
import type { OriginConn, OriginUser } from "./origins";
import { HeadError, hasToken, headEnd, parseRequestHead, parseResponseHead, type RequestHead, type ResponseHead } from "./parse";

/*
 * One client connection of an http service: a sequence of request/response
 * exchanges (RFC 9112 §9.3, pipelined requests answered in order), each
 * streamed to an origin connection taken from the keep-alive pool, or, after
 * a 101, a plain byte tunnel.
 *
 * Backpressure as in relay.ts: a partial write queues the rest in an Outbox
 * and pauses the sending side until `drain`; nothing buffers a whole body.
 * Deadlines are numbers checked by the service's sweep (CoarseClock), not
 * timers per request.
 */

const enum Phase {
  /** Reading a request head. */
  Head,
  /** Forwarding the request body. */
  Body,
  /** The request is sent; the response is on its way (later requests wait in `inbuf`). */
  Wait,
  /** After a 101: bytes both ways. */
  Tunnel,
  /** Closing: input is discarded. */
  Done,
}

const enum Deadline {
  None,
  Connect,
  FirstByte,
  Linger,
}

const EMPTY = new Uint8Array(0);

const concat = (a: Uint8Array, b: Uint8Array) => (a.length ? Buffer.concat([a, b]) : b);

/** A latin1 head followed by `body`, in one buffer. */
function withHead(head: string, body: Uint8Array): Uint8Array {
  const buf = Buffer.allocUnsafe(head.length + body.length);
  buf.write(head, 0, "latin1");
  if (body.length) buf.set(body, head.length);
  return buf;
}

export class HttpConnection implements OriginUser {
  private phase = Phase.Head;
  private inbuf: Uint8Array = EMPTY;
  private scanFrom = 0;
  private req: RequestHead | undefined;
  private bodyLeft = 0;
  private reqChunks: ChunkedDecoder | undefined;
  private requestDone = false;
  private local = false;
  private upgrade = false;
  private keepAlive = true;
  private clientEnded = false;
  private closed = false;
  // The origin side of the current exchange.
  private origin: OriginConn | undefined;
  private member: Member | undefined;
  private headBytes: Uint8Array = EMPTY;
  private retried = false;
  private readonly toOrigin = new Outbox();
  private readonly toClient = new Outbox();
  private originPaused = false;
  // The response.
  private resBuf: Uint8Array = EMPTY;
  private res: ResponseHead | undefined;
  private gotByte = false;
  private originFraming: ResponseFraming = "none";
  private decodeForClient = false;
  private resLeft = 0;
  private resChunks: ChunkedDecoder | undefined;
  private originReusable = false;
  private endAfterFlush = false;
  private tunnelUp = false;
  private tunnelDown = false;
  // Timeouts.
  private lastActive: number;
  private deadline = 0;
  private deadlineKind = Deadline.None;
  readonly clientIp: string;

  constructor(
    private readonly client: Socket<HttpConnection>,
    private readonly ctx: HttpContext,
  ) {
    this.lastActive = ctx.clock.now;
    this.clientIp = unmapAddress(client.remoteAddress);
    ctx.active.add(this);
    ctx.stats.connectionsActive++;
    ctx.stats.connectionsTotal++;
  }

  // ---- client events ----

  clientData(chunk: Uint8Array): void {
    this.lastActive = this.ctx.clock.now;
    this.ctx.stats.bytesFromClients += chunk.length;
    switch (this.phase) {
      case Phase.Head:
        this.inbuf = concat(this.inbuf, chunk);
        return this.readHeads();
      case Phase.Body:
        return this.feedBody(chunk);
      case Phase.Wait:
        this.inbuf = concat(this.inbuf, chunk);
        if (this.inbuf.length > this.ctx.http.maxHeaderBytes + HIGH_WATER) this.client.pause();
        return;
      case Phase.Tunnel:
        return this.sendOrigin(chunk);
    }
  }

  clientDrain(): void {
    if (!this.toClient.flush(this.client)) return;
    if (this.endAfterFlush) return this.endClient();
    if (this.originPaused && this.origin?.socket) {
      this.originPaused = false;
      this.origin.socket.resume();
    }
    if (this.phase === Phase.Tunnel && this.tunnelDown) this.client.shutdown();
  }

  clientEnd(): void {
    this.clientEnded = true;
    switch (this.phase) {
      case Phase.Head:
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

  clientClosed(error?: Error): void {
    if (error && this.phase !== Phase.Done && this.phase !== Phase.Head) this.ctx.stats.clientResets++;
    this.release(error !== undefined);
  }

  // ---- requests ----

  private readHeads(): void {
    const max = this.ctx.http.maxHeaderBytes;
    while (this.phase === Phase.Head && this.inbuf.length) {
      const end = headEnd(this.inbuf, this.scanFrom);
      if (end < 0) {
        if (this.inbuf.length > max) return this.fail(431, `request head larger than ${max} bytes`);
        this.scanFrom = Math.max(0, this.inbuf.length - 3);
        return;
      }
      if (end + 4 > max) return this.fail(431, `request head larger than ${max} bytes`);
      const parsed = parseRequestHead(this.inbuf, end);
      const raw = this.inbuf.subarray(0, end + 2);
      const rest = this.inbuf.subarray(end + 4);
      this.inbuf = EMPTY;
      this.scanFrom = 0;
      if (parsed instanceof HeadError) return this.fail(parsed.status, parsed.reason);
      this.startRequest(parsed, raw, rest);
    }
  }

  /** `raw`: the head as received, up to the CRLF of its last field line. */
  private startRequest(req: RequestHead, raw: Uint8Array, rest: Uint8Array): void {
    const ctx = this.ctx;
    ctx.httpStats.requests++;
    this.req = req;
    this.requestDone = false;
    this.res = undefined;
    this.gotByte = false;
    this.retried = false;
    this.keepAlive = req.minor === 1 ? !hasToken(req.connection, "close") : hasToken(req.connection, "keep-alive");
    this.bodyLeft = req.contentLength > 0 ? req.contentLength : 0;
    this.reqChunks = req.chunked ? new ChunkedDecoder() : undefined;
    if (req.contentLength > ctx.http.maxBodyBytes) return this.fail(413, `request body larger than ${ctx.http.maxBodyBytes} bytes`);
    const q = req.target.indexOf("?");
    const route = ctx.router.match(req.host, this.client.localPort, q < 0 ? req.target : req.target.slice(0, q));
    // Only WebSocket is tunnelled (RFC 6455 §4.1); other Upgrade offers are dropped as hop-by-hop.
    this.upgrade = req.upgrade !== "" && hasToken(req.connection, "upgrade") && /^websocket$/i.test(req.upgrade);
    this.local = route.pool === undefined;
    this.phase = this.reqChunks || this.bodyLeft > 0 ? Phase.Body : Phase.Wait;
    if (!this.local) {
      const pick = ctx.pools.get(route.pool!)!.pick(this.clientIp, this.client.localPort);
      if (!pick) return this.fail(503, "no healthy origin");
      this.member = pick.member;
      pick.member.acquired();
      const destination = this.client.localAddress.includes(":") ? `[${this.client.localAddress}]` : this.client.localAddress;
      const fwd = { clientIp: this.clientIp, proto: ctx.proto, fallbackHost: `${destination}:${this.client.localPort}`, upgrade: this.upgrade };
      if (!this.upgrade && extendable(req)) {
        // The head as it came plus our fields: one copy, no rebuilding.
        const extra = forwardingFields(req, fwd);
        const buf = Buffer.allocUnsafe(raw.length + extra.length);
        buf.set(raw, 0);
        buf.write(extra, raw.length, "latin1");
        this.headBytes = buf;
      } else {
        this.headBytes = Buffer.from(originRequestHead(req, fwd), "latin1");
      }
      this.attach(ctx.origins.get(pick.host, pick.port, this));
      this.sendOrigin(this.headBytes);
    }
    if (this.phase === Phase.Body) {
      if (rest.length) this.feedBody(rest);
    } else {
      this.inbuf = rest;
      this.requestComplete();
    }
  }

  private feedBody(buf: Uint8Array): void {
    let n: number;
    if (this.reqChunks) {
      n = this.reqChunks.feed(buf, 0);
      if (n < 0) return this.fail(400, `malformed chunked request body: ${this.reqChunks.error}`);
      if (this.reqChunks.dataBytes > this.ctx.http.maxBodyBytes) return this.fail(413, `request body larger than ${this.ctx.http.maxBodyBytes} bytes`);
    } else {
      n = Math.min(this.bodyLeft, buf.length);
      this.bodyLeft -= n;
    }
    if (n) this.sendOrigin(n === buf.length ? buf : buf.subarray(0, n));
    if (this.reqChunks ? this.reqChunks.done : this.bodyLeft === 0) {
      this.inbuf = n < buf.length ? buf.subarray(n) : EMPTY;
      this.phase = Phase.Wait;
      this.requestComplete();
    }
  }

  private requestComplete(): void {
    this.requestDone = true;
    if (this.local) return void serveLocal(this.req!, this.client, this.ctx).then((bytes) => this.localAnswered(bytes));
    if (this.origin?.open && !this.gotByte) this.setDeadline(Deadline.FirstByte, this.ctx.http.firstByteTimeoutMs);
    if (this.res && this.resDone) this.exchangeDone();
  }

  private localAnswered(bytes: { data: Uint8Array; status: number }): void {
    if (this.closed || this.phase === Phase.Done) return;
    this.ctx.httpStats.response(bytes.status);
    this.res = undefined;
    this.toClient.write(this.client, bytes.data) || this.client.pause();
    this.resDone = true;
    this.exchangeDone();
  }

  private sendOrigin(bytes: Uint8Array): void {
    if (!this.origin || this.local) return;
    const s = this.origin.open ? this.origin.socket : undefined;
    if (this.toOrigin.write(s, bytes)) return;
    if (s || this.toOrigin.queued >= HIGH_WATER) this.client.pause();
  }

  private sendClient(bytes: Uint8Array): void {
    if (this.toClient.write(this.client, bytes)) return;
    if (this.origin?.socket && !this.originPaused) {
      this.originPaused = true;
      this.origin.socket.pause();
    }
  }

  // ---- origin events ----

  private attach(c: OriginConn): void {
    this.origin = c;
    if (!c.open) this.setDeadline(Deadline.Connect, this.ctx.config.connectTimeoutMs);
  }

  originOpen(c: OriginConn): void {
    this.member?.succeeded();
    this.deadlineKind = Deadline.None;
    if (this.toOrigin.flush(c.socket!)) this.client.resume();
    if (this.requestDone && !this.gotByte) this.setDeadline(Deadline.FirstByte, this.ctx.http.firstByteTimeoutMs);
  }

  originFailed(c: OriginConn, error: unknown): void {
    if (c !== this.origin) return;
    const cause = originCause(error);
    this.ctx.stats.originError(cause.kind);
    this.member?.failed(cause.kind);
    this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
  }

  originDrain(c: OriginConn): void {
    if (c !== this.origin || !this.toOrigin.flush(c.socket!)) return;
    this.client.resume();
    if (this.phase === Phase.Tunnel && this.tunnelUp) c.socket!.shutdown();
  }

  originData(c: OriginConn, chunk: Uint8Array): void {
    this.lastActive = this.ctx.clock.now;
    this.ctx.stats.bytesFromOrigins += chunk.length;
    if (!this.gotByte) {
      this.gotByte = true;
      this.deadlineKind = Deadline.None;
    }
    if (this.phase === Phase.Tunnel) return this.sendClient(chunk);
    if (this.res) return this.responseBody(chunk);
    this.resBuf = concat(this.resBuf, chunk);
    this.responseHead(c);
  }

  originEnd(c: OriginConn): void {
    if (this.phase === Phase.Tunnel) {
      this.tunnelDown = true;
      if (this.toClient.queued === 0) this.client.shutdown();
      if (this.tunnelUp) this.endClient();
      return;
    }
    this.originGone(c, undefined);
  }

  originClosed(c: OriginConn, error?: Error): void {
    if (this.phase === Phase.Tunnel) {
      if (error) return this.abort();
      return this.endClient();
    }
    this.originGone(c, error);
  }

  /** The origin connection ended mid-exchange. */
  private originGone(c: OriginConn, error: Error | undefined): void {
    if (c !== this.origin) return;
    if (this.res && this.originFraming === "close" && !this.decodeForClient) {
      this.originReusable = false;
      this.resDone = true;
      return this.exchangeDone();
    }
    if (!this.gotByte) {
      // A kept-alive connection the origin closed while we picked it: send again, once (RFC 9112 §9.3.1).
      if (c.uses > 1 && !this.retried && this.requestDone && this.bodyless && idempotent(this.req!.method)) {
        this.retried = true;
        this.ctx.httpStats.retries++;
        c.destroy(false);
        this.toOrigin.clear();
        this.attach(this.ctx.origins.get(c.host, c.port, this, true));
        return this.sendOrigin(this.headBytes);
      }
      const cause = error ? originCause(error) : { kind: "reset" as const, text: "closed the connection before responding" };
      this.ctx.stats.originError(cause.kind);
      return this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
    }
    // Mid-response: the client must not mistake a truncated body for a whole one.
    this.ctx.stats.originError(error ? originCause(error).kind : "reset");
    this.abort();
  }

  private get bodyless(): boolean {
    return !this.req!.chunked && this.req!.contentLength <= 0;
  }

  // ---- responses ----

  private resDone = false;

  private responseHead(c: OriginConn): void {
    const end = headEnd(this.resBuf);
    if (end < 0) {
      if (this.resBuf.length > MAX_RESPONSE_HEAD) this.originBroken(`response head larger than ${MAX_RESPONSE_HEAD} bytes`);
      return;
    }
    const parsed = parseResponseHead(this.resBuf, end);
    const whole = this.resBuf;
    const rest = this.resBuf.subarray(end + 4);
    this.resBuf = EMPTY;
    if (parsed instanceof HeadError) return this.originBroken(parsed.reason);
    const req = this.req!;
    if (parsed.status < 200) {
      if (parsed.status === 101) {
        if (!this.upgrade) return this.originBroken("101 Switching Protocols without an upgrade request");
        this.ctx.httpStats.response(101);
        this.sendClient(Buffer.from(clientResponseHead(parsed, req.minor, "none", true, true), "latin1"));
        this.phase = Phase.Tunnel;
        this.deadlineKind = Deadline.None;
        if (rest.length) this.sendClient(rest);
        const early = this.inbuf;
        this.inbuf = EMPTY;
        if (early.length) this.sendOrigin(early);
        this.client.resume();
        return;
      }
      // Interim responses (100-continue, 103) go on, except to an HTTP/1.0 client (RFC 9110 §15.2).
      this.ctx.httpStats.response(parsed.status);
      if (req.minor === 1) this.sendClient(Buffer.from(clientResponseHead(parsed, 1, "none", true, false), "latin1"));
      if (rest.length) this.originData(c, rest);
      return;
    }
    this.res = parsed;
    this.resDone = false;
    this.ctx.httpStats.response(parsed.status);
    // Message body length, RFC 9112 §6.3.
    if (req.method === "HEAD" || parsed.status === 204 || parsed.status === 304) this.originFraming = "none";
    else if (parsed.chunked) this.originFraming = "chunked";
    else if (parsed.otherCoding) this.originFraming = "close";
    else if (parsed.contentLength >= 0) this.originFraming = "length";
    else this.originFraming = "close";
    this.originReusable = parsed.minor === 1 && !hasToken(parsed.connection, "close") && this.originFraming !== "close";
    // An HTTP/1.0 client cannot take chunked: decode, and frame by close.
    this.decodeForClient = this.originFraming === "chunked" && req.minor === 0;
    const framing = this.decodeForClient ? "close" : this.originFraming;
    if (framing === "close" || !this.requestDone) this.keepAlive = false;
    this.resLeft = parsed.contentLength;
    this.resChunks = this.originFraming === "chunked" ? new ChunkedDecoder() : undefined;
    if (this.keepAlive && req.minor === 1 && framing === this.originFraming && verbatimResponse(parsed)) {
      // The origin's head goes on as it came, with the body bytes that came with it: no copy at all.
      return this.responseVerbatim(whole, whole.length - rest.length, rest);
    }
    const head = clientResponseHead(parsed, req.minor, framing, this.keepAlive, false);
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
      this.sendClient(withHead(head, rest.subarray(0, n)));
      if (this.originFraming === "length" ? this.resLeft === 0 : this.resChunks!.done) {
        this.resDone = true;
        this.exchangeDone();
      }
      return;
    }
    this.sendClient(withHead(head, EMPTY));
    if (this.originFraming === "none" || (this.originFraming === "length" && this.resLeft === 0)) {
      this.resDone = true;
      return this.exchangeDone();
    }
    if (rest.length) this.responseBody(rest);
  }

  /** Send `whole[0..headLen)` (the origin's head) and as much of `rest` as belongs to this response, in one write. */
  private responseVerbatim(whole: Uint8Array, headLen: number, rest: Uint8Array): void {
    let n = 0;
    let done = this.originFraming === "none";
    if (this.originFraming === "length") {
      n = Math.min(this.resLeft, rest.length);
      this.resLeft -= n;
      done = this.resLeft === 0;
    } else if (this.originFraming === "chunked" && rest.length) {
      n = this.resChunks!.feed(rest, 0);
      if (n < 0) return this.originBroken(`malformed chunked response body: ${this.resChunks!.error}`);
      done = this.resChunks!.done;
    }
    this.sendClient(whole.subarray(0, headLen + n));
    if (done) {
      this.resDone = true;
      this.exchangeDone();
    }
  }

  private responseBody(chunk: Uint8Array): void {
    switch (this.originFraming) {
      case "length": {
        const n = Math.min(this.resLeft, chunk.length);
        this.resLeft -= n;
        this.sendClient(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (this.resLeft === 0) {
          this.resDone = true;
          this.exchangeDone();
        }
        return;
      }
      case "chunked": {
        const d = this.resChunks!;
        const n = d.feed(chunk, 0, this.decodeForClient ? (data) => this.sendClient(data) : undefined);
        if (n < 0) return this.originBroken(`malformed chunked response body: ${d.error}`);
        if (!this.decodeForClient) this.sendClient(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (d.done) {
          this.resDone = true;
          this.exchangeDone();
        }
        return;
      }
      case "close":
        return this.sendClient(chunk);
    }
  }

  /** The origin broke HTTP: 502 if nothing was sent yet, else the client is reset. */
  private originBroken(why: string): void {
    this.ctx.stats.originError("protocol");
    if (this.res) return this.abort();
    this.fail(502, `origin ${this.origin?.host}:${this.origin?.port}: ${why}`);
  }

  /** Response complete (and, once the request is too) the exchange is over. */
  private exchangeDone(): void {
    if (!this.requestDone && !this.local) {
      // The origin answered before the whole body arrived: the rest is not read, the connections close.
      this.keepAlive = false;
      this.originReusable = false;
    }
    this.deadlineKind = Deadline.None;
    this.releaseOrigin(this.originReusable ? "reuse" : this.requestDone ? "close" : "reset");
    this.res = undefined;
    if (!this.keepAlive) return this.endClient();
    this.phase = Phase.Head;
    this.client.resume();
    if (this.inbuf.length) this.readHeads();
    if (this.phase === Phase.Head && this.clientEnded) this.endClient();
  }

  /** Done with the origin connection: back to the pool, closed (FIN), or reset (it may be mid-request). */
  private releaseOrigin(how: "reuse" | "close" | "reset"): void {
    const c = this.origin;
    this.origin = undefined;
    if (c) {
      if (how === "reuse" && this.toOrigin.queued === 0) this.ctx.origins.release(c, this.ctx.clock.now);
      else c.destroy(how !== "reset");
    }
    this.toOrigin.clear();
    this.originPaused = false;
    this.member?.released();
    this.member = undefined;
  }

  // ---- endings ----

  /** Answer with our own error (if no response started), then close. */
  private fail(status: number, message: string): void {
    if (this.phase === Phase.Done || this.closed) return;
    if (this.res || this.phase === Phase.Tunnel) return this.abort();
    this.ctx.httpStats.response(status);
    this.releaseOrigin("reset");
    this.toClient.write(this.client, errorResponse(status, message));
    this.keepAlive = false;
    this.endClient();
  }

  /** Close after what is queued for the client; keep reading (and discarding) for a while, so our answer is not lost to an RST. */
  private endClient(): void {
    this.releaseOrigin("close");
    this.phase = Phase.Done;
    this.inbuf = EMPTY;
    if (this.toClient.queued) {
      this.endAfterFlush = true;
      return;
    }
    if (this.clientEnded) return void this.client.end();
    this.client.shutdown();
    this.client.resume();
    this.setDeadline(Deadline.Linger, LINGER_MS);
  }

  /** Reset both sides. */
  abort(): void {
    this.releaseOrigin("reset");
    this.phase = Phase.Done;
    this.client.terminate();
  }

  sweep(now: number): void {
    if (this.closed) return;
    if (this.deadlineKind !== Deadline.None && now >= this.deadline) {
      const kind = this.deadlineKind;
      this.deadlineKind = Deadline.None;
      if (kind === Deadline.Linger) return void this.client.end();
      this.ctx.stats.originError("timeout");
      if (kind === Deadline.Connect) this.member?.failed("timeout");
      return this.fail(504, kind === Deadline.Connect ? "origin connect timeout" : "origin first byte timeout");
    }
    if (now - this.lastActive >= this.ctx.config.idleTimeoutMs) {
      this.ctx.stats.idleTimeouts++;
      if (this.phase === Phase.Head || this.phase === Phase.Done) this.client.end();
      else this.abort();
    }
  }

  private setDeadline(kind: Deadline, ms: number): void {
    this.deadlineKind = kind;
    this.deadline = this.ctx.clock.now + ms;
  }

  private release(reset: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.phase = Phase.Done;
    if (this.origin) {
      this.origin.destroy(!reset);
      this.origin = undefined;
    }
    this.member?.released();
    this.member = undefined;
    this.toClient.clear();
    this.toOrigin.clear();
    this.ctx.active.delete(this);
    this.ctx.stats.connectionsActive--;
    this.ctx.admission.leave();
  }
}
