import type http2 from "node:http2";
import { H2_INTERNAL_ERROR, H2_NO_ERROR, H2_PROTOCOL_ERROR } from "./h2codes";
import { requestOrigin } from "./context";
import { H2Exchange } from "./h2exchange";
import type { H2Connection } from "./h2";
import { h2Local, h2Request } from "./h2fields";
import { originRequestHead } from "./headers";
import { localResponse } from "./local";
import { Deadline } from "./state";
import { refusalReason } from "./stats";

const CRLF = Buffer.from("\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");
/** What a stream whose response was cut short is destroyed with (reset()): its RST_STREAM is INTERNAL_ERROR. */
const CUT_SHORT = new Error("the response was cut short");

/*
 * One HTTP/2 stream (RFC 9113 §8) as one HTTP/1.1 exchange with an origin
 * connection from the service's keep-alive pool: the same routes, forwarding
 * fields (headers.ts originRequestHead), limits and access log line as
 * HTTP/1.1, with `http_version` "2". This is the client side: the request,
 * its body, endings and deadlines; the origin side is H2Exchange.
 */
export class H2Stream extends H2Exchange {
  private bodyBytes = 0;

  constructor(
    conn: H2Connection,
    stream: http2.ServerHttp2Stream,
    private readonly raw: string[],
  ) {
    super(conn, stream);
  }

  start(): void {
    const ctx = this.conn.ctx;
    const st = this.stream;
    ctx.httpStats.requests++;
    ctx.httpStats.h2.streams++;
    st.on("aborted", () => this.clientAborted());
    st.on("error", () => {});
    st.on("close", () => this.streamClosed());
    const parsed = h2Request(this.raw, !st.endAfterHeaders);
    if ("status" in parsed) return this.refuse(parsed.status, parsed.message);
    const { req } = parsed;
    if (this.rlog) this.rlog.bytesIn += parsed.bytes;
    const ends = st.endAfterHeaders;
    this.chunkedUp = req.chunked;
    const cl = req.contentLength;
    const path = req.target;
    this.req = req;
    if (cl > ctx.http.maxBodyBytes) return this.refuse(413, `request body larger than ${ctx.http.maxBodyBytes} bytes`);
    const q = path.indexOf("?");
    const route = ctx.router.match(req.host, ctx.router.byPort ? this.conn.localPort : 0, q < 0 ? path : path.slice(0, q));
    const addId = this.rlog?.request(req, 0) ?? false;
    if (route.pool === undefined) {
      // The built-in responder: its answer once the request (and any body, not read) is in.
      this.requestDone = true;
      return void localResponse(req, this.conn.client, ctx).then((res) => this.localAnswered(res));
    }
    // 503, not RST_STREAM REFUSED_STREAM: node's client answered Bun's RST_STREAM here (even a turn later) with GOAWAY PROTOCOL_ERROR, ending the session (measured).
    if (!this.conn.holdOrigin()) return this.fail(503, "connection cap reached");
    this.holdsOrigin = true;
    const to = requestOrigin(ctx, route.pool, this.conn.clientIp, () => this.conn.localPort, this);
    if (!to) return this.fail(503, "no healthy origin");
    this.member = to.member;
    this.attach(to.conn);
    this.rlog?.originAt(to.conn.host, to.conn.port);
    const fwd = { clientIp: this.conn.clientIp, proto: ctx.proto, fallbackHost: req.host === undefined ? this.conn.destination() : "", upgrade: false, requestId: addId ? this.rlog!.id : undefined };
    this.headBytes = Buffer.from(originRequestHead(req, fwd), "latin1");
    this.sendOrigin(this.headBytes);
    if (ends) return this.requestComplete();
    st.on("data", (chunk: Buffer) => this.bodyData(chunk));
    st.on("end", () => this.bodyEnd());
  }

  private async localAnswered(res: Response): Promise<void> {
    if (this.done) return;
    const { headers, body } = await h2Local(res, this.req!.method === "HEAD");
    if (this.done) return;
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
    const stop = () => void (st.closed || st.close(H2_NO_ERROR));
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
    if (this.req!.contentLength >= 0 && this.bodyBytes > this.req!.contentLength) return this.reset(H2_PROTOCOL_ERROR);
    if (this.chunkedUp) this.sendOrigin(Buffer.from(`${chunk.length.toString(16)}\r\n`, "latin1"));
    this.sendOrigin(chunk);
    if (this.chunkedUp) this.sendOrigin(CRLF);
  }

  private bodyEnd(): void {
    if (this.done) return;
    if (this.req!.contentLength >= 0 && this.bodyBytes !== this.req!.contentLength) return this.reset(H2_PROTOCOL_ERROR);
    if (this.chunkedUp) this.sendOrigin(LAST_CHUNK);
    this.requestComplete();
  }

  private requestComplete(): void {
    this.requestDone = true;
    // The response is due (an interim 1xx is not it: h2exchange.ts responseHead).
    if (this.origin?.open && !this.res) this.setDeadline(Deadline.FirstByte, this.conn.ctx.http.firstByteTimeoutMs);
    if (this.res && this.resComplete) this.exchangeDone();
  }

  protected exchangeDone(): void {
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

  // ---- endings ----

  /** A request the checks refuse: counted by reason, answered. */
  private refuse(status: number, message: string): void {
    this.conn.ctx.httpStats.refused[refusalReason(status)]++;
    this.fail(status, message);
  }

  /** Our own answer (if no response started; else the stream is reset). */
  protected fail(status: number, message: string): void {
    if (this.done) return;
    if (this.responded) return this.reset(H2_INTERNAL_ERROR);
    this.conn.ctx.httpStats.response(status);
    this.releaseOrigin("reset");
    const body = `${message}\n`;
    const id = this.rlog?.returnedId;
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

  protected reset(code: number): void {
    if (this.done) return;
    this.rlog?.end("reset");
    this.releaseOrigin("reset");
    this.finish();
    // Bun's node:http2 ends a stream whose response began with END_STREAM on close(code), not RST_STREAM
    // (seen with nghttp -v): a response cut short (no content-length when chunked or framed by the origin's
    // close) would reach the client as a whole one. destroy(error) sends RST_STREAM INTERNAL_ERROR.
    if (!this.stream.closed) code === H2_INTERNAL_ERROR && this.responded ? this.stream.destroy(CUT_SHORT) : this.stream.close(code);
    // A reset the client provoked (a malformed body) costs it as its own would: the
    // "MadeYouReset" variant of rapid reset (CVE-2025-8671) is bounded by the same budget.
    if (code === H2_PROTOCOL_ERROR) this.conn.clientReset();
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
      // connect_timeout covers an origin TLS handshake too (as endings.ts says it).
      const inTls = kind === Deadline.Connect && this.origin?.handshaking === true;
      if (inTls) ctx.stats.originTlsError("timeout");
      this.fail(504, kind === Deadline.Connect ? (inTls ? "origin TLS handshake timeout" : "origin connect timeout") : "origin first byte timeout");
    }
  }
}
