import type http2 from "node:http2";
import { constants } from "node:http2";
import type { Member } from "../../origin/pool";
import { Outbox } from "../outbox";
import { ChunkedDecoder } from "./chunked";
import { HIGH_WATER, MAX_RESPONSE_HEAD, idempotent, originCause } from "./context";
import { Deadline, EMPTY, concat } from "./exchange";
import type { H2Connection } from "./h2";
import { originRequestHead } from "./headers";
import { localResponse } from "./local";
import type { OriginConn, OriginUser } from "./origins";
import { HeadError, hasToken, headEnd, parseResponseHead, type RequestHead, type ResponseHead } from "./parse";
import { RequestLog } from "./reqlog";
import { refusalReason } from "./stats";

/*
 * One HTTP/2 stream (RFC 9113 §8) as one HTTP/1.1 exchange with an origin
 * connection from the service's keep-alive pool: the same routes, forwarding
 * fields (headers.ts originRequestHead), limits and access log line as
 * HTTP/1.1, with `http_version` "2".
 *
 * Flow control: the client's windows are node:http2's; a stream write that
 * returns false (the client's window or our buffer is full) pauses the
 * origin socket until the stream's `drain`. The other way, the stream is
 * paused while the origin connection's queue is full, so its window is not
 * reopened and the client waits (RFC 9113 §5.2).
 */

// Connection-specific fields (RFC 9113 §8.2.2) and the framing ones we state ourselves.
const HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);

export class H2Stream implements OriginUser {
  readonly id: number;
  private req: RequestHead | undefined;
  private origin: OriginConn | undefined;
  private member: Member | undefined;
  private readonly toOrigin = new Outbox();
  private headBytes: Uint8Array = EMPTY;
  /** The request body goes to the origin chunked (no content-length was given). */
  private chunkedUp = false;
  private bodyBytes = 0;
  private requestDone = false;
  private retried = false;
  private paused = false;
  private originPaused = false;
  // The response.
  private resBuf: Uint8Array = EMPTY;
  private res: ResponseHead | undefined;
  private framing: "none" | "length" | "chunked" | "close" = "none";
  private resLeft = 0;
  private resChunks: ChunkedDecoder | undefined;
  private gotByte = false;
  private responded = false;
  private done = false;
  private deadline = 0;
  private deadlineKind = Deadline.None;
  private bodyAt: number;
  private readonly rlog: RequestLog | undefined;

  constructor(
    private readonly conn: H2Connection,
    private readonly stream: http2.ServerHttp2Stream,
    private readonly raw: string[],
  ) {
    this.id = stream.id ?? 0;
    this.bodyAt = conn.ctx.clock.now;
    if (conn.ctx.log) this.rlog = RequestLog.of(conn.ctx.log, conn.ends, "2");
  }

  start(): void {
    const ctx = this.conn.ctx;
    const st = this.stream;
    ctx.httpStats.requests++;
    ctx.httpStats.h2.streams++;
    st.on("aborted", () => this.clientAborted());
    st.on("error", () => {});
    st.on("close", () => this.streamClosed());
    // The pseudo-header fields (§8.3.1) and the rest in order; cookie crumbs joined (§8.2.3).
    let method = "";
    let path = "";
    let authority: string | undefined;
    let host: string | undefined;
    let cl = -1;
    const names: string[] = [];
    const values: string[] = [];
    let cookie = "";
    let bytes = 0;
    const raw = this.raw;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = raw[i]!;
      const value = raw[i + 1]!;
      bytes += name.length + value.length + 32;
      if (name.charCodeAt(0) === 58) {
        if (name === ":method") method = value;
        else if (name === ":path") path = value;
        else if (name === ":authority") authority = value;
        continue;
      }
      if (name === "cookie") {
        cookie = cookie ? `${cookie}; ${value}` : value;
        continue;
      }
      if (name === "host") host = value;
      else if (name === "content-length") {
        if (!/^\d{1,15}$/.test(value) || (cl >= 0 && Number(value) !== cl)) return this.refuse(400, "malformed content-length");
        cl = Number(value);
        continue;
      }
      names.push(name);
      values.push(value);
    }
    if (cookie) {
      names.push("cookie");
      values.push(cookie);
    }
    if (this.rlog) this.rlog.bytesIn += bytes;
    if (method === "CONNECT") return this.refuse(501, "CONNECT is not supported");
    // §8.3.1: :path is required and origin-form (or "*" for OPTIONS) for http(s).
    if (!method || !(path.startsWith("/") || (path === "*" && method === "OPTIONS"))) return this.refuse(400, "malformed request pseudo-header fields");
    if (/[\s\x00-\x1f\x7f]/.test(path)) return this.refuse(400, "malformed :path");
    const ends = st.endAfterHeaders;
    // Content-Length states the body; without one, a body that may come goes chunked to the origin.
    this.chunkedUp = !ends && cl < 0;
    const req: RequestHead = {
      method,
      target: path,
      minor: 1,
      // §8.3.1: :authority wins over Host.
      host: authority ?? host,
      rewritten: true,
      names,
      values,
      contentLength: cl,
      chunked: this.chunkedUp,
      otherCoding: false,
      connection: "",
      upgrade: "",
    };
    this.req = req;
    if (cl > ctx.http.maxBodyBytes) return this.refuse(413, `request body larger than ${ctx.http.maxBodyBytes} bytes`);
    const q = path.indexOf("?");
    const route = ctx.router.match(req.host, ctx.router.byPort ? this.conn.localPort : 0, q < 0 ? path : path.slice(0, q));
    const ids = this.rlog?.request(req, 0);
    if (route.pool === undefined) {
      // The built-in responder: its answer once the request (and any body, not read) is in.
      this.requestDone = true;
      return void localResponse(req, this.conn.client, ctx).then((res) => this.localAnswered(res));
    }
    const pick = route.pool.pick(this.conn.clientIp, route.pool.followsEdgePort ? this.conn.localPort : 0);
    if (!pick) {
      ctx.stats.originError("no_origin");
      return this.fail(503, "no healthy origin");
    }
    this.member = pick.member;
    pick.member.acquired();
    if (this.rlog) this.rlog.origin = pick.host.includes(":") ? `[${pick.host}]:${pick.port}` : `${pick.host}:${pick.port}`;
    const fwd = { clientIp: this.conn.clientIp, proto: ctx.proto, fallbackHost: req.host === undefined ? this.conn.destination() : "", upgrade: false, ...(ids?.send !== undefined ? { requestId: ids.send } : {}) };
    this.headBytes = Buffer.from(originRequestHead(req, fwd), "latin1");
    this.attach(ctx.origins.get(pick.host, pick.port, this));
    this.sendOrigin(this.headBytes);
    if (ends) return this.requestComplete();
    st.on("data", (chunk: Buffer) => this.bodyData(chunk));
    st.on("end", () => this.bodyEnd());
  }

  private async localAnswered(res: Response): Promise<void> {
    if (this.done) return;
    const body = this.req!.method === "HEAD" ? EMPTY : new Uint8Array(await res.arrayBuffer());
    if (this.done) return;
    const headers: http2.OutgoingHttpHeaders = { ":status": res.status };
    res.headers.forEach((v, k) => {
      if (!HOP.has(k) && k !== "content-length") headers[k] = v;
    });
    headers["content-length"] = this.req!.method === "HEAD" ? (res.headers.get("content-length") ?? "0") : body.length;
    this.conn.ctx.httpStats.response(res.status);
    if (this.rlog) {
      this.rlog.status = res.status;
      this.rlog.bytesOut += body.length;
    }
    this.responded = true;
    try {
      this.stream.respond(headers, { endStream: body.length === 0 });
      if (body.length) this.stream.end(body);
    } catch {
      // The stream is gone already.
    }
    this.finish();
    this.stopRequest();
  }

  /**
   * Our response is complete but the client is still sending a body nobody
   * will read: RST_STREAM NO_ERROR (RFC 9113 §8.1), after the response's
   * frames, so its window is not held open.
   */
  private stopRequest(): void {
    const st = this.stream;
    if (st.closed || st.endAfterHeaders || st.readableEnded) return;
    const stop = () => void (st.closed || st.close(constants.NGHTTP2_NO_ERROR));
    if (st.writableFinished) stop();
    else st.once("finish", stop);
  }

  // ---- the request body ----

  private bodyData(chunk: Buffer): void {
    if (this.done) return;
    const now = this.conn.ctx.clock.now;
    this.bodyAt = now;
    this.conn.streamActive();
    this.bodyBytes += chunk.length;
    if (this.rlog) this.rlog.bytesIn += chunk.length;
    const max = this.conn.ctx.http.maxBodyBytes;
    if (this.bodyBytes > max) return this.refuse(413, `request body larger than ${max} bytes`);
    // §8.1.1: DATA beyond the stated content-length makes the request malformed.
    if (this.req!.contentLength >= 0 && this.bodyBytes > this.req!.contentLength) return this.reset(constants.NGHTTP2_PROTOCOL_ERROR);
    if (this.chunkedUp) this.sendOrigin(Buffer.from(`${chunk.length.toString(16)}\r\n`, "latin1"));
    this.sendOrigin(chunk);
    if (this.chunkedUp) this.sendOrigin(CRLF);
  }

  private bodyEnd(): void {
    if (this.done) return;
    if (this.req!.contentLength >= 0 && this.bodyBytes !== this.req!.contentLength) return this.reset(constants.NGHTTP2_PROTOCOL_ERROR);
    if (this.chunkedUp) this.sendOrigin(LAST_CHUNK);
    this.requestComplete();
  }

  private requestComplete(): void {
    this.requestDone = true;
    if (this.origin?.open && !this.gotByte) this.setDeadline(Deadline.FirstByte, this.conn.ctx.http.firstByteTimeoutMs);
    if (this.res && this.resComplete) this.exchangeDone();
  }

  private sendOrigin(bytes: Uint8Array): void {
    if (!this.origin) return;
    const s = this.origin.open ? this.origin.socket : undefined;
    if (this.toOrigin.write(s, bytes)) return;
    if ((s || this.toOrigin.queued >= HIGH_WATER) && !this.paused) {
      this.paused = true;
      this.stream.pause();
    }
  }

  private resumeStream(): void {
    if (!this.paused) return;
    this.paused = false;
    this.bodyAt = this.conn.ctx.clock.now;
    this.stream.resume();
  }

  // ---- the origin ----

  private attach(c: OriginConn): void {
    this.origin = c;
    if (!c.open) this.setDeadline(Deadline.Connect, this.conn.ctx.config.connectTimeoutMs);
  }

  originOpen(c: OriginConn): void {
    this.member?.succeeded();
    this.deadlineKind = Deadline.None;
    if (this.toOrigin.flush(c.socket!)) this.resumeStream();
    if (this.requestDone && !this.gotByte) this.setDeadline(Deadline.FirstByte, this.conn.ctx.http.firstByteTimeoutMs);
  }

  originFailed(c: OriginConn, error: unknown): void {
    if (c !== this.origin) return;
    const cause = originCause(error);
    this.conn.ctx.stats.originError(cause.kind);
    this.member?.failed(cause.kind);
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

  private originGone(c: OriginConn, error: Error | undefined): void {
    if (c !== this.origin || this.done) return;
    const ctx = this.conn.ctx;
    if (this.res && this.framing === "close") {
      this.resComplete = true;
      this.originReusable = false;
      return this.exchangeDone();
    }
    if (!this.gotByte) {
      // A kept-alive connection the origin closed as we took it: once more on a new one (RFC 9112 §9.3.1).
      if (c.uses > 1 && !this.retried && this.requestDone && this.req!.contentLength <= 0 && !this.chunkedUp && idempotent(this.req!.method)) {
        this.retried = true;
        ctx.httpStats.retries++;
        c.destroy(false);
        this.toOrigin.clear();
        this.attach(ctx.origins.get(c.host, c.port, this, true));
        return this.sendOrigin(this.headBytes);
      }
      const cause = error ? originCause(error) : { kind: "reset" as const, text: "closed the connection before responding" };
      ctx.stats.originError(cause.kind);
      return this.fail(502, `origin ${c.host}:${c.port}: ${cause.text}`);
    }
    ctx.stats.originError(error ? originCause(error).kind : "reset");
    this.reset(constants.NGHTTP2_INTERNAL_ERROR);
  }

  // ---- the response ----

  private resComplete = false;
  private originReusable = false;

  private responseHead(c: OriginConn): void {
    const end = headEnd(this.resBuf);
    if (end < 0) {
      if (this.resBuf.length > MAX_RESPONSE_HEAD) this.originBroken(`response head larger than ${MAX_RESPONSE_HEAD} bytes`);
      return;
    }
    const parsed = parseResponseHead(this.resBuf, end);
    const rest = end + 4 === this.resBuf.length ? EMPTY : this.resBuf.subarray(end + 4);
    this.resBuf = EMPTY;
    if (parsed instanceof HeadError) return this.originBroken(parsed.reason);
    const ctx = this.conn.ctx;
    if (parsed.status < 200) {
      // No upgrade over HTTP/2 (§8.6); interim responses are dropped (the final one follows).
      if (parsed.status === 101) return this.originBroken("101 Switching Protocols without an upgrade request");
      ctx.httpStats.response(parsed.status);
      if (rest.length) this.originData(c, rest);
      return;
    }
    this.res = parsed;
    ctx.httpStats.response(parsed.status);
    if (this.rlog) this.rlog.status = parsed.status;
    const req = this.req!;
    if (req.method === "HEAD" || parsed.status === 204 || parsed.status === 304) this.framing = "none";
    else if (parsed.chunked) this.framing = "chunked";
    else if (parsed.otherCoding || parsed.contentLength < 0) this.framing = "close";
    else this.framing = "length";
    this.originReusable = parsed.minor === 1 && !hasToken(parsed.connection, "close") && this.framing !== "close";
    this.resLeft = parsed.contentLength;
    this.resChunks = this.framing === "chunked" ? new ChunkedDecoder(MAX_RESPONSE_HEAD) : undefined;
    const headers: http2.OutgoingHttpHeaders = { ":status": parsed.status };
    const { names, values, connection } = parsed;
    for (let i = 0; i < names.length; i++) {
      const name = names[i]!;
      if (HOP.has(name) || (connection !== "" && hasToken(connection, name))) continue;
      if (name === "content-length" && this.framing !== "length" && this.framing !== "none") continue;
      const had = headers[name];
      headers[name] = had === undefined ? values[i]! : Array.isArray(had) ? [...had, values[i]!] : [had as string, values[i]!];
    }
    const id = this.rlog?.id;
    if (id !== undefined && !names.includes("x-request-id")) headers["x-request-id"] = id;
    const empty = this.framing === "none" || (this.framing === "length" && this.resLeft === 0);
    try {
      this.stream.respond(headers, { endStream: empty });
    } catch (e) {
      // A field node:http2 refuses to send (a connection-specific one we did not know).
      return this.originBroken(`response head not sendable in HTTP/2: ${(e as Error).message}`);
    }
    this.responded = true;
    if (this.rlog) this.rlog.bytesOut += end + 4;
    if (empty) {
      this.resComplete = true;
      return this.exchangeDone();
    }
    if (rest.length) this.responseBody(rest);
  }

  private responseBody(chunk: Uint8Array): void {
    if (this.done) return;
    switch (this.framing) {
      case "length": {
        const n = Math.min(this.resLeft, chunk.length);
        this.resLeft -= n;
        this.sendClient(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (this.resLeft === 0) this.responseEnded();
        return;
      }
      case "chunked": {
        const d = this.resChunks!;
        const n = d.feed(chunk, 0, (data) => this.sendClient(data));
        if (n < 0) return this.originBroken(`malformed chunked response body: ${d.error}`);
        if (d.done) this.responseEnded();
        return;
      }
      case "close":
        return this.sendClient(chunk);
    }
  }

  private sendClient(data: Uint8Array): void {
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

  private responseEnded(): void {
    this.resComplete = true;
    this.stream.end();
    this.exchangeDone();
  }

  /** The response is complete; once the request is too, the origin connection goes back. */
  private exchangeDone(): void {
    if (this.framing === "close" && !this.stream.writableEnded) this.stream.end();
    if (!this.requestDone) {
      // The origin answered before the whole body: the rest is not wanted (§8.1: RST_STREAM NO_ERROR).
      this.originReusable = false;
      this.releaseOrigin("reset");
      this.finish();
      return this.stopRequest();
    }
    this.releaseOrigin(this.originReusable ? "reuse" : "close");
    this.finish();
  }

  private releaseOrigin(how: "reuse" | "close" | "reset"): void {
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
  }

  // ---- endings ----

  /** A request the checks refuse: counted by reason, answered. */
  private refuse(status: number, message: string): void {
    this.conn.ctx.httpStats.refused[refusalReason(status)]++;
    this.fail(status, message);
  }

  /** Our own answer (if no response started; else the stream is reset). */
  private fail(status: number, message: string): void {
    if (this.done) return;
    if (this.responded) return this.reset(constants.NGHTTP2_INTERNAL_ERROR);
    this.conn.ctx.httpStats.response(status);
    this.releaseOrigin("reset");
    const body = `${message}\n`;
    const id = this.rlog?.id;
    try {
      this.stream.respond({ ":status": status, "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body), ...(id !== undefined ? { "x-request-id": id } : {}) });
      this.stream.end(body);
    } catch {
      // The stream is gone already.
    }
    this.responded = true;
    if (this.rlog && !this.rlog.pending) this.rlog.begin(this.req, 0);
    this.rlog?.answered(status, body.length, message);
    this.finish();
    // Stop a body we will not forward.
    this.stopRequest();
  }

  private originBroken(why: string): void {
    this.conn.ctx.stats.originError("protocol");
    this.fail(502, `origin ${this.origin?.host}:${this.origin?.port}: ${why}`);
  }

  /** RST_STREAM with `code`; the origin connection is reset (it may be mid-request). */
  private reset(code: number): void {
    if (this.done) return;
    this.rlog?.end("reset");
    this.releaseOrigin("reset");
    this.finish();
    if (!this.stream.closed) this.stream.close(code);
  }

  /** The client reset the stream (or the session went) before the exchange was over. */
  private clientAborted(): void {
    if (this.done) return;
    this.rlog?.end("client_reset");
    this.releaseOrigin("reset");
    this.finish();
    this.conn.clientReset();
  }

  private streamClosed(): void {
    if (this.done) return;
    // Closed before we were done (a reset the codec took without 'aborted', the session closing).
    this.rlog?.end("client_close");
    this.releaseOrigin("reset");
    this.finish();
  }

  sessionGone(): void {
    this.streamClosed();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.rlog?.end();
    this.conn.streamDone(this);
  }

  private setDeadline(kind: Deadline, ms: number): void {
    this.deadlineKind = kind;
    this.deadline = this.conn.ctx.clock.now + ms;
  }

  sweep(now: number): void {
    if (this.done) return;
    const ctx = this.conn.ctx;
    if (!this.requestDone && !this.paused && this.req && now - this.bodyAt >= ctx.config.deadlines.bodyMs) {
      ctx.stats.deadlineExpired("request_body");
      return this.fail(408, "request body timeout");
    }
    if (this.deadlineKind !== Deadline.None && now >= this.deadline) {
      const kind = this.deadlineKind;
      this.deadlineKind = Deadline.None;
      ctx.stats.originError("timeout");
      if (kind === Deadline.Connect) this.member?.failed("timeout");
      this.fail(504, kind === Deadline.Connect ? "origin connect timeout" : "origin first byte timeout");
    }
  }
}

const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");
