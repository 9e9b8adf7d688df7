import type { Socket } from "bun";
import type { Member, OriginFailure } from "../origin/pool";
import { Outbox } from "./outbox";
import type { Session } from "./pipelineapi";
import { localResourceOf } from "../system/lack";
import { errorClass } from "./stats";
import type { EndNames } from "./inbound";
import { lateRefusal, OriginTlsError } from "../origin/tls";
import { clearThenTlsHandlers, originHandlers, tlsOriginHandlers, type Peer } from "./relay-handlers";
import { relayLine } from "./relay-log";
import type { RelayOptions, RelayTarget } from "./relay-options";

/*
 * One proxied TCP connection: client <-> origin.
 *
 * Backpressure: when a write to one side is partial, the rest is queued and
 * the other side is paused (socket.pause() stops reading, so the kernel's
 * receive window closes on the sender); `drain` flushes and resumes. At most
 * a read's worth of bytes is queued per direction.
 * Half-close: a FIN from one side becomes shutdown() of the other once its
 * queue is flushed; the pair closes when both directions are done.
 * Resets: an RST (close with an error) on one side becomes terminate(),
 * which sends an RST, on the other.
 * Its access log line is relay-log.ts's; what it is given, relay-options.ts's.
 */

/** Queued bytes above which the sending side is paused. */
const HIGH_WATER = 256 * 1024;

/** Where a target came from, for TLS: the origin as configured (its name is the SNI). */
const originHostOf = (t: RelayTarget) => t.member?.origin.host ?? t.host;

const FAILURES: ReadonlySet<string> = new Set<OriginFailure>(["refused", "timeout", "unreachable", "reset"]);

/**
 * A side a send to failed (Outbox.failed) reset the connection; Bun reports that as an end and a close
 * without error, as it does a FIN. Without this, an origin's reset reached the client as a clean FIN (a
 * truncated stream taken for whole) and was counted nowhere.
 */
const SEND_FAILED = Object.assign(new Error("send failed: the peer reset the connection"), { code: "ECONNRESET" });

interface Direction {
  /** Bytes waiting for the destination to drain (or, client->origin, to connect). */
  readonly out: Outbox;
  /** The source sent FIN. */
  ended: boolean;
  /** We sent FIN to the destination. */
  shut: boolean;
}

/** The pipeline's last stage of a tcp service (the pipeline owns the client's cap slot). */
export class Relay implements Session {
  private origin: Socket<Peer> | undefined;
  private member: Member | undefined;
  private readonly up: Direction = { out: new Outbox(), ended: false, shut: false };
  private readonly down: Direction = { out: new Outbox(), ended: false, shut: false };
  private done = false;
  private connecting = true;
  // origin_tls: the TCP connect is done and the handshake is under way.
  private handshaking = false;
  lastActive: number;
  /** The origin connect's deadline; none before connect() (an sni route is still being read). */
  private deadline = Infinity;
  // performance.now() at accept, for the duration histogram (and the log line's, relay-log.ts).
  readonly startedAt: number;
  // This connection's bytes each way (the access log's; two additions per chunk).
  bytesIn = 0;
  bytesOut = 0;
  // Access log only: the ends as text (set by the tcp service when the log is on), the origin dialled,
  // TLS as negotiated, and how it ended (the first cause wins).
  names: EndNames | undefined;
  tls: { version: string | null; sni: string | undefined } | undefined;
  /** SNI routing (proxy/sni/): the route taken ("1".., "default") and the ClientHello's name; for the log. */
  routed: { route: string | null; sni: string | null } | undefined;
  /** SNI routing: the route's byte counters, kept with the service's. */
  routeStats: { bytesFromClients: number; bytesFromOrigins: number } | undefined;
  target: string | undefined;
  private event: string | undefined;
  why: string | undefined;

  constructor(
    private readonly client: Socket<unknown>,
    private readonly options: RelayOptions,
  ) {
    this.startedAt = performance.now();
    this.lastActive = options.clock.now;
    options.stats.connectionsActive++;
    options.stats.connectionsTotal++;
  }

  connect(target: RelayTarget): void {
    this.member = target.member;
    this.member?.acquired();
    this.deadline = this.options.clock.now + this.options.connectTimeoutMs;
    if (this.options.log) {
      this.target = target.host.includes(":") ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
      if (this.options.log.connect) relayLine(this, this.options.log, "connect");
    }
    const tls = this.options.originTls;
    try {
      if (tls && this.clearPreamble) {
        this.tlsTarget = target;
        Bun.connect<Peer>({ hostname: target.host, port: target.port, allowHalfOpen: true, data: { relay: this, side: "origin" }, socket: clearThenTlsHandlers }).catch((e) => this.originFailed(e));
        return;
      }
      Bun.connect<Peer>({
        hostname: target.host,
        port: target.port,
        allowHalfOpen: true,
        data: { relay: this, side: "origin" },
        ...(tls ? { tls: tls.options(originHostOf(target)) } : {}),
        socket: tls ? tlsOriginHandlers : originHandlers,
      }).catch((e) => this.originFailed(e));
    } catch (e) {
      // Bun refuses some TLS options synchronously (a key not matching its certificate; the config checks that).
      this.originFailed(e);
    }
  }

  /** Bytes the origin gets before anything from the client (a PROXY header); call before connect(). With origin_tls they go in the clear, before the handshake. */
  preamble(bytes: Uint8Array): void {
    if (this.options.originTls) this.clearPreamble = bytes;
    else this.up.out.write(undefined, bytes);
  }

  private clearPreamble: Uint8Array | undefined;
  private tlsTarget: RelayTarget | undefined;

  /** origin_tls after a PROXY header: the TCP connect is done; write the header, then start TLS on the same connection. */
  originClearOpen(raw: Socket<Peer>): void {
    if (this.done) return void raw.terminate();
    this.handshaking = true;
    const header = this.clearPreamble!;
    // A fresh socket's send buffer takes a PROXY header (at most 536 bytes, v2 with TLVs) whole.
    if (raw.write(header) !== header.length) return this.originFailed(new Error("could not write the PROXY header"));
    raw.data.upgraded = true;
    this.pending = raw;
    try {
      raw.upgradeTLS<Peer>({ data: { relay: this, side: "origin" }, tls: this.options.originTls!.options(originHostOf(this.tlsTarget!)), socket: tlsOriginHandlers });
    } catch (e) {
      this.originFailed(e);
    }
  }

  /** Called by the sweep timer. */
  sweep(now: number): void {
    if (this.done) return;
    if (this.connecting && now >= this.deadline) {
      // connect_timeout covers the TLS handshake too: a handshake still under way is a TLS failure as well.
      if (this.handshaking) this.options.stats.originTlsError("timeout");
      this.cause("origin_error", this.handshaking ? "origin_tls_timeout" : "origin_connect_timeout", true);
      this.options.stats.originError("timeout");
      this.member?.failed("timeout");
      this.abort();
    } else if (now - this.lastActive >= this.options.idleTimeoutMs) {
      this.options.stats.idleTimeouts++;
      this.cause("timeout", "idle_timeout");
      this.finish(false);
    }
  }

  originOpen(s: Socket<Peer>): void {
    if (this.done) {
      s.terminate();
      return;
    }
    this.connecting = false;
    if (!this.tlsUnconfirmed) this.member?.succeeded();
    this.origin = s;
    this.flush(this.up, s, this.client);
  }

  originTcpOpen(s: Socket<Peer>): void {
    if (this.done) return void s.terminate();
    this.handshaking = true;
    this.pending = s;
  }

  // origin_tls: the origin socket while its handshake is under way, so that an abort (the connect deadline) closes it too.
  private pending: Socket<Peer> | undefined;

  /** origin_tls: the handshake finished (well or not); the pool's OriginTls judges it. */
  originHandshake(s: Socket<Peer>, success: boolean, error: Error | null): void {
    if (this.done) return void s.terminate();
    const refused = this.options.originTls!.verdict(success, error);
    if (refused) return this.originFailed(refused);
    this.handshaking = false;
    this.pending = undefined;
    this.tlsUnconfirmed = true;
    this.originOpen(s);
  }

  /**
   * origin_tls: the origin socket closed; before the handshake finished, that
   * is a failed connect; after it but before the origin's first byte, a TLS
   * alert is the origin refusing the handshake (lateRefusal).
   */
  originTlsClosed(error?: Error): void {
    if (this.done) return;
    if (this.connecting) return this.originFailed(new OriginTlsError("protocol", (error as { code?: string } | undefined)?.code ?? "closed during the handshake"));
    if (this.tlsUnconfirmed) {
      const refused = lateRefusal(error);
      if (refused) return this.originFailed(refused);
      this.tlsConfirmed();
    }
    this.sideClosed("origin", error);
  }

  // origin_tls: our handshake is done but the origin has not answered yet. A TLS 1.3 server may still
  // refuse it (a client certificate is checked after the client's Finished), so the connect's success
  // is told to passive ejection at the origin's first byte, or at a close without an alert.
  private tlsUnconfirmed = false;

  private tlsConfirmed(): void {
    this.tlsUnconfirmed = false;
    this.member?.succeeded();
  }

  originFailed(error: unknown): void {
    if (this.done) return;
    if (error instanceof OriginTlsError) {
      this.options.stats.originTlsError(error.reason);
      this.options.stats.originError("tls");
      this.cause("origin_error", `origin_tls_${error.reason}`, true);
      this.member?.failed("tls");
      return this.abort();
    }
    const code = (error as { code?: string })?.code;
    const kind = errorClass(code);
    this.options.stats.originError(kind);
    // A descriptor, memory or local port this host lacked says nothing of the origin: no failure toward its ejection.
    const local = localResourceOf(code);
    if (local) this.options.stats.localResourceReset(local);
    this.cause("origin_error", local ? `local_${local}` : `origin_${kind}`, true);
    if (!local) this.member?.failed(FAILURES.has(kind) ? (kind as OriginFailure) : "other");
    this.abort();
  }

  // ---- the client side, as the pipeline's Session ----

  clientData(chunk: Uint8Array): void {
    this.fromClient(chunk);
  }

  clientDrain(): void {
    this.drained("client");
  }

  clientEnd(): void {
    this.ended("client");
  }

  clientClosed(error?: Error): void {
    this.sideClosed("client", error);
  }

  bytes(): number {
    return this.bytesIn + this.bytesOut;
  }

  fromClient(chunk: Uint8Array): void {
    this.lastActive = this.options.clock.now;
    this.options.stats.bytesFromClients += chunk.length;
    this.bytesIn += chunk.length;
    if (this.routeStats) this.routeStats.bytesFromClients += chunk.length;
    this.send(this.up, this.origin, chunk, this.client);
  }

  fromOrigin(chunk: Uint8Array): void {
    if (this.tlsUnconfirmed) this.tlsConfirmed();
    this.lastActive = this.options.clock.now;
    this.options.stats.bytesFromOrigins += chunk.length;
    this.bytesOut += chunk.length;
    if (this.routeStats) this.routeStats.bytesFromOrigins += chunk.length;
    this.send(this.down, this.client, chunk, this.origin!);
  }

  private send(d: Direction, to: Socket<any> | undefined, chunk: Uint8Array, from: Socket<any>): void {
    if (d.out.write(to, chunk)) return;
    // Before the origin connects, up to HIGH_WATER is held; after, any backlog pauses the source.
    if (to || d.out.queued >= HIGH_WATER) from.pause();
  }

  private flush(d: Direction, to: Socket<any>, from: Socket<any>): void {
    if (!d.out.flush(to)) return;
    from.resume();
    if (d.ended && !d.shut) {
      d.shut = true;
      to.shutdown();
    }
    this.maybeFinish();
  }

  drained(side: "client" | "origin"): void {
    if (this.done) return;
    if (side === "origin" && this.origin) this.flush(this.up, this.origin, this.client);
    if (side === "client" && this.origin) this.flush(this.down, this.client, this.origin);
  }

  ended(side: "client" | "origin"): void {
    if (this.done) return;
    if (this.sendFailed(side)) return this.sideClosed(side, SEND_FAILED);
    this.lastActive = this.options.clock.now;
    const d = side === "client" ? this.up : this.down;
    d.ended = true;
    // Who closed first says why the connection ended.
    this.cause("close", `${side}_fin`);
    const to = side === "client" ? this.origin : this.client;
    if (to && d.out.queued === 0 && !d.shut) {
      d.shut = true;
      to.shutdown();
    }
    this.maybeFinish();
  }

  /** A send to `side` failed (SEND_FAILED). */
  private sendFailed(side: "client" | "origin"): boolean {
    return (side === "client" ? this.down : this.up).out.failed;
  }

  sideClosed(side: "client" | "origin", error?: Error): void {
    if (this.done) return;
    if (!error && this.sendFailed(side)) error = SEND_FAILED;
    const reset = error !== undefined;
    if (reset) {
      if (side === "client") this.options.stats.clientResets++;
      else this.options.stats.originError(errorClass((error as { code?: string }).code));
      this.cause(side === "client" ? "close" : "origin_error", `${side}_reset`);
      this.abort();
      return;
    }
    // A clean close: deliver what is queued for the other side, then close it.
    this.cause("close", `${side}_close`);
    this.finish(true);
  }

  private maybeFinish(): void {
    if (this.up.shut && this.down.shut) this.finish(true);
  }

  /** Close both sides with FIN (after queued bytes, where graceful). */
  private finish(graceful: boolean): void {
    if (this.done) return;
    this.release();
    if (graceful) {
      if (this.origin && this.up.out.queued) this.origin.write(this.up.out.take());
      if (this.down.out.queued) this.client.write(this.down.out.take());
    }
    (this.origin ?? this.pending)?.end();
    this.client.end();
  }

  /** Close both sides with FIN now (nothing is queued yet: an sni route's client left before sending a byte). */
  end(): void {
    this.finish(true);
  }

  /** Close both sides with RST. */
  abort(): void {
    if (this.done) return;
    this.release();
    (this.origin ?? this.pending)?.terminate();
    this.client.terminate();
  }

  private release(): void {
    this.done = true;
    this.up.out.clear();
    this.down.out.clear();
    this.member?.released();
    this.options.stats.connectionsActive--;
    this.options.stats.observe((performance.now() - this.startedAt) / 1000);
    if (this.options.log) relayLine(this, this.options.log, this.event ?? "close");
  }

  /**
   * Record why the connection ends, for its log line: the first cause wins,
   * except that a failed origin connect (`force`) is always the reason: a
   * client's FIN while the connect (or TLS handshake) was under way did not end it.
   */
  cause(event: string, why: string, force = false): void {
    if (!this.options.log) return;
    if (force) {
      this.event = event;
      this.why = why;
      return;
    }
    this.event ??= event;
    this.why ??= why;
  }
}
