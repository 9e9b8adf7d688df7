import type { Member } from "../../origin/pool";
import { clientAddress, type EndNamesOrMaker, type Ends } from "../inbound";
import { Outbox } from "../outbox";
import type { ChunkedDecoder } from "./chunked";
import { HIGH_WATER, idempotent, countOriginClose, countOriginFailure, type HttpContext } from "./context";
import type { ResponseFraming } from "./response";
import type { OriginConn, OriginUser } from "./origins";
import type { RequestHead, ResponseHead } from "./message";
import { RequestLog } from "./reqlog";
import type { HttpSocket } from "./socket";
import { lateRefusal } from "../../origin/tls";
import { Deadline, EMPTY, Phase, concat } from "./state";

/*
 * The state of one client connection's current exchange, and its origin
 * side: origin connection events. The response, streamed to the client:
 * responding.ts. The client side: HttpConnection (conn.ts), its endings and
 * timeouts endings.ts's.
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

  /** The response is complete (set by the responding side, and here for a body that ends at the origin's FIN). */
  protected resDone = false;

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

  protected abstract responseHead(c: OriginConn): void;
  protected abstract responseBody(chunk: Uint8Array): void;
  protected abstract exchangeDone(): void;
  protected abstract fail(status: number, message: string, answer?: Uint8Array): void;
  protected abstract endClient(): void;
  abstract abort(): void;
  abstract drainService(): void;
  abstract sweep(now: number): void;
}
