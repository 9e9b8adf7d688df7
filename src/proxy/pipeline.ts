import type { Socket, TCPSocketListener } from "bun";
import { formatAddress, type Family, type Prefix } from "../config/address";
import type { Deadlines } from "../config/deadlines";
import { serviceFamilies, type ServiceConfig } from "../config/service";
import { EdgeError } from "../errors";
import type { Endpoint } from "../system/sockaddr";
import type { Admission } from "./admission";
import type { CoarseClock } from "./clock";
import { joinGroup, REUSE_PORT, type GroupPlan } from "./group";
import { HeaderReader, mustSendHeader, socketEnds, type Ends } from "./inbound";
import { LISTEN_ADDRESS, listenerSocket, type ServiceSocket } from "./service";
import type { ServiceStats } from "./stats";
import { formatEndpoint, joinHostPort, type ServiceLog } from "../log/access";
import type { ClientTracker } from "./clients";

/*
 * The one client pipeline of tcp and http services. Every accepted
 * connection goes through the same stages, each with a deadline checked by
 * the coarse clock's sweep (a number per connection, no timer):
 *
 *   admission (the connection cap; the client check)   at accept
 *   → PROXY header          when the peer is in accept_proxy (proxy_header_timeout);
 *                           the client check then for the client it names
 *   → TLS handshake         when the service terminates TLS (handshake_timeout)
 *   → the protocol          a Session: the relay (tcp), an HTTP connection (http),
 *                           the built-in responder; it keeps its own deadlines
 *
 * The pipeline owns the connection's cap slot, and what the client check
 * took (a per-source count), from accept to Bun's `close` (the descriptor is
 * gone then, whatever stage it was in), so both are given back exactly once
 * on every path: success, deadline, reset, close mid-stage. Sessions never
 * touch either.
 *
 * A PROXY header and TLS on one connection are still refused by
 * config/validate.ts: Bun's TLS listener starts the handshake at accept,
 * before a header could be read.
 */

/** What a protocol runs on a connection that passed every stage. */
export interface Session {
  clientData(chunk: Uint8Array): void;
  clientDrain(): void;
  /** The client's FIN. */
  clientEnd(): void;
  /** The client socket is closed (`error`: it was reset). The pipeline gives the cap slot back. */
  clientClosed(error?: Error): void;
  /** The session's own deadlines (idle, origin, and http's head, keep-alive and body), once per clock tick. */
  sweep(now: number): void;
  /** Bytes both ways so far (the busiest-clients tracker's, read at close); absent: not counted. */
  bytes?(): number;
  /** Reset now (the service is shutting down). */
  abort(): void;
}

/** A protocol the pipeline ends in: tcp's relay, http's connections, the built-in responder. */
export interface Protocol {
  /** Does `start` use the connection's addresses even without a PROXY header (a PROXY header to send, hashing)? */
  readonly needEnds: boolean;
  /** `ends`: the PROXY header's addresses, or the socket's when computed; `rest`: bytes after the PROXY header. */
  start(socket: Socket<any>, ends: Ends | undefined, rest: Uint8Array): Session;
}

export interface PipelineOptions {
  readonly admission: Admission;
  readonly stats: ServiceStats;
  readonly clock: CoarseClock;
  readonly acceptProxy: readonly Prefix[];
  readonly tls: boolean;
  readonly deadlines: Deadlines;
  /**
   * The admission check with the client's address (per-source limits hook in
   * here, proxy/sourcelimit.ts), once per connection: at accept with the peer,
   * unless the peer is a trusted load balancer (in accept_proxy); then once
   * its PROXY header names the real client. A header naming none (§2.1
   * UNKNOWN, §2.2 LOCAL: the balancer's own health check) is not a client and
   * is not checked. false: the connection is reset (the check counts its
   * refusals). true: what the check took is given back by `releaseClient`,
   * once, when the connection closes, whatever stage it is in. The
   * connection cap was taken before. Absent: no check, and no address parsed
   * at accept for it.
   */
  readonly admitClient?: (client: Endpoint, when: "accept" | "proxy_header") => boolean;
  /** The connection of a client `admitClient` admitted closed. */
  readonly releaseClient?: (client: Endpoint) => void;
  /** The service's access log (absent: off): the pipeline logs connections that end before the protocol starts. */
  readonly log?: ServiceLog;
  /** The process's busiest-clients tracker (proxy/clients.ts): every accepted client counted once, by address. */
  readonly clients?: ClientTracker;
}

const enum Stage {
  Header,
  Handshake,
  Protocol,
  /** Reset by a stage (refused, failed, expired); Bun's `close` is still to come. */
  Ending,
  Closed,
}

const EMPTY = new Uint8Array(0);

/** A client connection in the pipeline: the socket's `data`. */
class Conn {
  stage = Stage.Protocol;
  /** When the current stage (header, handshake) must be done, on the coarse clock. */
  deadline = 0;
  session: Session | undefined;
  header: HeaderReader | undefined;
  ends: Ends | undefined;
  /** The client admitClient admitted, to release at close. */
  admitted: Endpoint | undefined;
  /** The address the busiest-clients tracker counted it under (its bytes go there at close). */
  tracked: string | undefined;
  // Access log only (set when the log is on): when it was accepted, and why a stage ended it.
  startedAt = 0;
  event: string | undefined;
  why: string | undefined;
  constructor(readonly socket: Socket<Conn>) {}
}

export class Pipeline {
  /** Every connection holding a cap slot, whatever its stage: what a drain waits for. */
  private readonly conns = new Set<Conn>();
  private readonly needEnds: boolean;

  constructor(
    private readonly o: PipelineOptions,
    private readonly protocol: Protocol,
  ) {
    // A logged connection's addresses are read at accept: after a close Bun no longer has them.
    this.needEnds = protocol.needEnds || o.acceptProxy.length > 0 || o.admitClient !== undefined || o.log !== undefined;
  }

  get size(): number {
    return this.conns.size;
  }

  /** The one place a client is admitted by address (see PipelineOptions.admitClient); `closed` releases it. */
  private admitClient(c: Conn, client: Endpoint, when: "accept" | "proxy_header", tracked: string | undefined): boolean {
    if (!this.o.admitClient) return true;
    if (!this.o.admitClient(client, when)) {
      if (tracked !== undefined) this.o.clients!.refused(tracked);
      if (this.o.log) this.cause(c, "limited", "source_limit");
      return false;
    }
    c.admitted = client;
    return true;
  }

  /** Bun socket handlers for the service's listeners. */
  handlers() {
    const o = this.o;
    const conns = this.conns;
    return {
      open: (s: Socket<Conn>) => {
        // Over the cap: this one was already queued in the kernel when steering stopped.
        if (!o.admission.admit()) {
          if (o.log) this.logCapped(s);
          return void s.terminate();
        }
        const c = new Conn(s);
        if (o.log) c.startedAt = performance.now();
        s.data = c;
        conns.add(c);
        if (this.needEnds) {
          c.ends = socketEnds(s);
          // The peer is already gone (Bun no longer knows its address): `close` follows.
          if (!c.ends) return this.reset(c);
        }
        const balancer = o.acceptProxy.length > 0 && mustSendHeader(o.acceptProxy, c.ends!.client);
        // The peer is the client unless it is a trusted load balancer, whose header names the client.
        let tracked: string | undefined;
        if (o.clients && !balancer) {
          tracked = s.remoteAddress;
          // Gone already (no address): `close` follows.
          if (tracked) o.clients.seen(tracked);
          else tracked = undefined;
          c.tracked = tracked;
        }
        if (!balancer && c.ends && !this.admitClient(c, c.ends.client, "accept", tracked)) return this.reset(c);
        if (balancer) {
          c.stage = Stage.Header;
          c.header = new HeaderReader();
          c.deadline = o.clock.now + o.deadlines.proxyHeaderMs;
          return;
        }
        if (o.tls) {
          // Bun calls `open` at accept only when a `handshake` handler exists; without one, after the handshake.
          c.stage = Stage.Handshake;
          c.deadline = o.clock.now + o.deadlines.handshakeMs;
          return;
        }
        this.start(c, EMPTY);
      },
      // On a server, `success` is whether the handshake completed (a plaintext client gets false);
      // the authorization error concerns client certificates, which are not asked for.
      handshake: (s: Socket<Conn>, success: boolean) => {
        const c = s.data;
        if (c?.stage !== Stage.Handshake) return;
        if (!success) {
          // (Bun may report a failure more than once before the reset takes effect: count it once.)
          o.stats.tlsHandshakeError("failed");
          if (o.log) this.cause(c, "close", "tls_handshake_failed");
          return this.reset(c);
        }
        // A client may close right after its handshake (openssl s_time -new does): Bun then no longer knows its
        // address, which the session reads as it starts. Nothing to serve; `close` follows, as at accept.
        if (!s.remoteAddress) return this.reset(c);
        this.start(c, EMPTY);
      },
      data: (s: Socket<Conn>, chunk: Uint8Array) => {
        const c = s.data;
        if (c?.stage === Stage.Protocol) return c.session!.clientData(chunk);
        if (c?.stage === Stage.Header) this.headerData(c, chunk);
      },
      drain: (s: Socket<Conn>) => {
        const c = s.data;
        if (c?.stage === Stage.Protocol) c.session!.clientDrain();
      },
      end: (s: Socket<Conn>) => {
        const c = s.data;
        if (c?.stage === Stage.Protocol) return c.session!.clientEnd();
        if (c?.stage === Stage.Header && !c.header!.started) {
          // A balancer's TCP health check connects and closes without a byte: not an error.
          c.stage = Stage.Ending;
          return void s.end();
        }
        // Mid-header: truncated (counted at `close`). Mid-handshake: a client (or a TCP check) gave up.
        if (c && o.log) this.cause(c, "close", "client_fin");
        if (c) s.terminate();
      },
      close: (s: Socket<Conn>, error?: Error) => this.closed(s, error),
      error: (s: Socket<Conn>, error: Error) => this.closed(s, error),
    };
  }

  private headerData(c: Conn, chunk: Uint8Array): void {
    const r = c.header!.feed(chunk, c.ends!);
    if (r === "more") return;
    // §2.1: "abort the connection as soon as possible so that the sender ... notice[s]".
    if ("error" in r) {
      this.o.stats.proxyHeaderError(r.error);
      if (this.o.log) this.cause(c, "close", `proxy_header_${r.error}`);
      return this.reset(c);
    }
    c.header = undefined;
    // UNKNOWN and LOCAL hand back the socket's own ends (inbound.ts): the balancer itself, no client to admit.
    const named = r.ends !== c.ends;
    c.ends = r.ends;
    let tracked: string | undefined;
    if (named && this.o.clients) this.o.clients.seen((c.tracked = tracked = formatAddress(r.ends.client.addr)));
    if (named && !this.admitClient(c, r.ends.client, "proxy_header", tracked)) return this.reset(c);
    this.start(c, r.rest);
  }

  private start(c: Conn, rest: Uint8Array): void {
    c.stage = Stage.Protocol;
    c.session = this.protocol.start(c.socket, c.ends, rest);
  }

  /** Reset a connection in a stage; counted by the caller, its slot given back at `close`. */
  private reset(c: Conn): void {
    c.stage = Stage.Ending;
    c.header = undefined;
    c.socket.terminate();
  }

  /** Bun's `close` (or `error`, whichever comes first): the cap slot and the client's admission go back, once. */
  private closed(s: Socket<Conn>, error?: Error): void {
    const c = s.data;
    if (!c || c.stage === Stage.Closed) return;
    const stage = c.stage;
    c.stage = Stage.Closed;
    this.conns.delete(c);
    this.o.admission.leave();
    if (c.admitted) this.o.releaseClient?.(c.admitted);
    c.admitted = undefined;
    if (stage === Stage.Protocol) {
      c.session!.clientClosed(error);
      if (c.tracked !== undefined) this.o.clients!.closed(c.tracked, c.session!.bytes?.() ?? 0);
    }
    // The peer closed mid-header.
    else if (stage === Stage.Header && c.header?.started) this.o.stats.proxyHeaderError("truncated");
    if (stage !== Stage.Protocol && this.o.log) this.logEnded(c, error);
  }

  /** Why a connection ends before its protocol starts, for its access log line (the first cause wins). */
  private cause(c: Conn, event: string, why: string): void {
    c.event ??= event;
    c.why ??= why;
  }

  /** The access log line of a connection that ended in a stage (refused, failed, expired, gone). */
  private logEnded(c: Conn, error?: Error): void {
    const log = this.o.log!;
    if (!log.sampled()) return;
    log.emit({
      protocol: "tcp",
      event: c.event ?? "close",
      ...(c.ends ? { client: formatEndpoint(c.ends.client), edge: formatEndpoint(c.ends.edge) } : {}),
      bytes_in: 0,
      bytes_out: 0,
      duration_ms: Math.round(performance.now() - c.startedAt),
      reason: c.why ?? (error ? "client_reset" : c.stage === Stage.Closed ? "client_close" : "closed"),
    });
  }

  /** A connection over the cap, reset at accept (it has no Conn). */
  private logCapped(s: Socket<unknown>): void {
    const log = this.o.log!;
    if (!log.sampled()) return;
    const client = s.remoteAddress ? joinHostPort(s.remoteAddress, s.remotePort) : undefined;
    log.emit({ protocol: "tcp", event: "limited", ...(client ? { client, edge: joinHostPort(s.localAddress, s.localPort) } : {}), bytes_in: 0, bytes_out: 0, duration_ms: 0, reason: "cap" });
  }

  /** The deadlines of the stages, and each session's own (the coarse clock's sweep). */
  sweep(now: number): void {
    for (const c of this.conns) {
      if (c.stage === Stage.Protocol) c.session!.sweep(now);
      else if ((c.stage === Stage.Header || c.stage === Stage.Handshake) && now >= c.deadline) this.expire(c);
    }
  }

  private expire(c: Conn): void {
    if (this.o.log) this.cause(c, "timeout", c.stage === Stage.Header ? "proxy_header_timeout" : "tls_handshake_timeout");
    if (c.stage === Stage.Header) {
      this.o.stats.proxyHeaderError("timeout");
      this.o.stats.deadlineExpired("proxy_header");
    } else {
      this.o.stats.tlsHandshakeError("timeout");
      this.o.stats.deadlineExpired("tls_handshake");
    }
    this.reset(c);
  }

  /** Reset every connection, whatever its stage. */
  abort(): void {
    for (const c of [...this.conns]) {
      if (c.stage === Stage.Protocol) c.session!.abort();
      else c.socket.terminate();
    }
  }
}

/** ALPN protocol list in its wire form (RFC 7301 §3.1: length-prefixed names; Bun takes no other). */
const H2_AND_HTTP1 = Buffer.from("\x02h2\x08http/1.1", "latin1");

/** What ALPN a TLS listener offers: h2 then http/1.1 for http services with http2 on; nothing otherwise. */
function alpn(config: ServiceConfig): { ALPNProtocols?: Buffer } {
  return config.mode === "http" && (config.http?.http2 ?? true) ? { ALPNProtocols: H2_AND_HTTP1 } : {};
}

/**
 * Open a service's listeners, one per address family its prefixes use, each
 * in the plan's SO_REUSEPORT group, with the pipeline's handlers (TLS
 * terminated in the listener when configured).
 */
export function openListeners(
  config: ServiceConfig,
  plan: GroupPlan,
  socket: object,
  into: { family: Family; listener: TCPSocketListener<any> }[],
): ServiceSocket[] {
  const tls = config.tls ? { tls: { cert: config.tls.cert, key: config.tls.key, ...alpn(config) } } : {};
  try {
    return serviceFamilies(config).map((family) => {
      const listener = joinGroup(family, plan, (port) =>
        Bun.listen<any>({ hostname: LISTEN_ADDRESS[family], port, ...REUSE_PORT, allowHalfOpen: true, socket: socket as any, ...tls }),
      );
      into.push({ family, listener });
      return listenerSocket(family, listener, plan);
    });
  } catch (cause) {
    throw new EdgeError(`service ${config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
  }
}
