import type { DeadlineStage } from "../../config/deadlines";
import { HIGH_WATER, LINGER_MS } from "./context";
import { ResponseExchange } from "./responding";
import { refusalReason } from "./stats";
import { Deadline, EMPTY, Phase } from "./state";
import { H2_REFUSAL, errorResponse } from "./response";

/*
 * How a client connection of an http service ends: our own error answers,
 * a close that lingers so an answer is not lost to an RST, resets, the
 * origin connection given back, and the sweep that ends what outlived its
 * deadline. HttpConnection (conn.ts) adds the requests on top.
 */

/** A client connection's endings and deadlines (see above); HttpConnection adds the client's requests. */
export abstract class ConnectionEndings extends ResponseExchange {
  /** Close by shutdown and a wait for the client's FIN, not at once. */
  protected linger = false;

  /**
   * Requests wait in `inbuf` while HIGH_WATER or more of our answers wait
   * for the client: RFC 9112 §9.3.2 lets a client pipeline requests, not
   * make us buffer the answers of ones it never reads (each small answer
   * would free its origin connection and let the next request in, without
   * bound). The client is paused; HttpConnection.clientDrain takes them up
   * again; till then the stall is the client's, under idle_timeout (as a
   * download it does not read), not a head deadline.
   */
  protected get held(): boolean {
    return this.phase === Phase.Head && this.inbuf.length > 0 && this.toClient.queued >= HIGH_WATER;
  }

  /** Done with the origin connection: back to the pool, closed (FIN), or reset (it may be mid-request). */
  protected releaseOrigin(how: "reuse" | "close" | "reset"): void {
    const c = this.origin;
    this.origin = undefined;
    if (c) {
      if (how === "reuse" && this.toOrigin.queued === 0) {
        // Paused for a slow client: an idle connection must see the origin's FIN.
        if (this.originPaused) c.socket?.resume();
        this.ctx.origins.release(c, this.ctx.clock.now);
      } else c.destroy(how !== "reset");
    }
    this.toOrigin.clear();
    this.originPaused = false;
    this.member?.released();
    this.member = undefined;
  }

  /** A request the framing checks refuse: counted by reason, answered (an HTTP/2 preface in HTTP/2), closed. */
  protected refuse(status: number, message: string, h2Preface = false): void {
    this.ctx.httpStats.refused[refusalReason(status, h2Preface)]++;
    // A head refused before it became a request still gets its line.
    if (this.rlog && !this.rlog.pending) this.rlog.begin(undefined, this.inbuf.length);
    this.fail(status, message, h2Preface ? H2_REFUSAL : undefined);
  }

  /** Answer with our own error (if no response started), then close. */
  protected fail(status: number, message: string, answer?: Uint8Array): void {
    if (this.phase === Phase.Done || this.closed) return;
    if (this.res || this.phase === Phase.Tunnel) return this.abort();
    this.ctx.httpStats.response(status);
    this.linger = true;
    this.releaseOrigin("reset");
    const reply = answer ?? errorResponse(status, message, this.rlog?.returnedId !== undefined ? `x-request-id: ${this.rlog.returnedId}\r\n` : "");
    this.rlog?.answered(status, reply.length, message);
    this.toClient.write(this.client, reply);
    this.keepAlive = false;
    this.endClient();
  }

  /** Close after what is queued for the client; keep reading (and discarding) for a while, so our answer is not lost to an RST. */
  protected endClient(): void {
    this.releaseOrigin("close");
    this.phase = Phase.Done;
    // Unread input (a request we refused, pipelined ones after "close") would make close() send an RST that can destroy our answer in flight: linger then.
    if (this.inbuf.length) this.linger = true;
    this.inbuf = EMPTY;
    if (this.toClient.queued) {
      this.endAfterFlush = true;
      return;
    }
    if (this.clientEnded || !this.linger) return void this.client.end();
    this.client.shutdown();
    this.resumeClient();
    this.setDeadline(Deadline.Linger, LINGER_MS);
  }

  /** Reset both sides. */
  abort(): void {
    this.rlog?.end("reset");
    this.releaseOrigin("reset");
    this.phase = Phase.Done;
    this.client.terminate();
  }

  sweep(now: number): void {
    if (this.closed) return;
    const d = this.ctx.config.deadlines;
    if (this.phase === Phase.Head && !this.held) {
      // Waiting for a next request (nothing of it yet, our answer written out): keep-alive.
      // Else a head is coming (or a new connection's first one is due): the head deadline.
      if (this.inbuf.length === 0 && this.served) {
        if (this.toClient.queued === 0 && now - this.waitFrom >= d.keepaliveMs) return this.expired("keepalive");
      } else if (now - this.headFrom >= d.headerMs) return this.expired("request_head");
    } else if (this.phase === Phase.Body && !this.clientPaused && now - this.clientAt >= d.bodyMs) {
      // A gap, not a minimum rate (nginx's client_body_timeout, not Apache's MinRate): a rate needs a
      // window and a second knob, and cuts honest uploads on slow links; a gap costs one number per
      // chunk. What a gap leaves open (a body dribbled just under it) is bounded in number by the
      // connection cap and the per-source limits. Gaps we cause (client paused for the origin) do not count.
      return this.expired("request_body");
    }
    if (this.deadlineKind !== Deadline.None && now >= this.deadline) {
      const kind = this.deadlineKind;
      this.deadlineKind = Deadline.None;
      if (kind === Deadline.Linger) return void this.client.end();
      this.ctx.stats.originError("timeout");
      if (kind === Deadline.Connect) this.member?.failed("timeout");
      // connect_timeout covers an origin TLS handshake too.
      const inTls = kind === Deadline.Connect && this.origin?.handshaking === true;
      if (inTls) this.ctx.stats.originTlsError("timeout");
      return this.fail(504, kind === Deadline.Connect ? (inTls ? "origin TLS handshake timeout" : "origin connect timeout") : "origin first byte timeout");
    }
    if (now - this.lastActive >= this.ctx.config.idleTimeoutMs) {
      this.ctx.stats.idleTimeouts++;
      if (this.phase === Phase.Head || this.phase === Phase.Done) this.client.end();
      else this.abort();
    }
  }

  /**
   * A client stage's deadline passed: counted, then a quiet close between
   * requests, or a 408 (RFC 9110 §15.5.9) when a request was under way and
   * nothing of its response was sent. No lingering: a client this slow is
   * not owed one, and its slot is freed now.
   */
  private expired(stage: DeadlineStage): void {
    this.ctx.stats.deadlineExpired(stage);
    if (stage !== "keepalive") {
      if (this.res) return this.abort();
      this.ctx.httpStats.response(408);
      this.releaseOrigin("reset");
      const reply = errorResponse(408, stage === "request_head" ? "request head timeout" : "request body timeout");
      if (this.rlog && !this.rlog.pending) this.rlog.begin(undefined, this.inbuf.length);
      this.rlog?.answered(408, reply.length, `${stage}_timeout`);
      this.toClient.write(this.client, reply);
    }
    this.keepAlive = false;
    this.inbuf = EMPTY;
    this.linger = false;
    this.endClient();
  }

  protected release(reset: boolean): void {
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
  }
}
