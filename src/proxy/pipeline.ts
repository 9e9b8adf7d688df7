import type { Socket } from "bun";
import { formatAddress } from "../config/address";
import type { Endpoint } from "../system/sockaddr";
import { clientAddress, HeaderReader, mustSendHeader, socketEnds, socketNames, type EndNames, type Ends } from "./inbound";
import { formatEndpoint, joinHostPort } from "../log/access";
import { peekHeader } from "./tls/peek";
import type { PipelineOptions, Protocol, Session } from "./pipelineapi";

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
 * TLS is this pipeline's stage, not the listener's: listeners are plain, and
 * the stage upgrades the accepted socket in place (Bun's server-side
 * `upgradeTLS`) at accept, or after the PROXY header of a trusted balancer
 * (then TLS comes after the header on one connection). The SNI handler
 * picks the certificate per handshake (tls/certstore.ts), so a reloaded
 * certificate, the first one included, serves the next handshake. After the
 * upgrade the connection has two Bun sockets on one descriptor: the TLS one
 * (`Conn.socket`, what sessions get) and the raw one, whose events carry
 * ciphertext and are ignored (only its close counts).
 *
 * A balancer's PROXY header before TLS is read with recv(MSG_PEEK) on the
 * paused socket (tls/peek.ts), and exactly its bytes are taken: Bun's reads
 * would take the ClientHello's first bytes with it (HAProxy sends both in one
 * segment), and a TLS socket cannot be handed bytes already read.
 */

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
  /** Access log only, when `ends` is not computed: the socket's ends as text. */
  names: EndNames | undefined;
  /** The client admitClient admitted, to release at close. */
  admitted: Endpoint | undefined;
  /** The address the busiest-clients tracker counted it under (its bytes go there at close). */
  tracked: string | undefined;
  /** Retries of a PROXY header peek before TLS (backoff). */
  peeks = 0;
  // Access log only (set when the log is on): when it was accepted, and why a stage ended it.
  startedAt = 0;
  event: string | undefined;
  why: string | undefined;
  /** The accepted socket; after the TLS upgrade, the TLS socket on the same descriptor. */
  constructor(public socket: Socket<Conn>) {}
}

export class Pipeline {
  /** Every connection holding a cap slot, whatever its stage: what a drain waits for. */
  private readonly conns = new Set<Conn>();
  private readonly needEnds: boolean;

  constructor(
    private readonly o: PipelineOptions,
    private readonly protocol: Protocol,
  ) {
    // Parsed ends for what decides on them; a logged connection's are read at accept too (after a close Bun
    // no longer has them), as text when nothing else needs them parsed (see open).
    this.needEnds = protocol.needEnds || o.acceptProxy.length > 0 || o.admitClient !== undefined;
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

  /** Bun socket handlers for the service's listeners (`extra`: binaryType, for the TLS sockets too). */
  handlers(extra: object = {}) {
    const o = this.o;
    const conns = this.conns;
    const h = {
      ...extra,
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
        // A connection to sweep: the coarse clock ticks again if it had stopped (clock.ts).
        o.clock.wake();
        if (this.needEnds) {
          c.ends = socketEnds(s);
          // The peer is already gone (Bun no longer knows its address): `close` follows.
          if (!c.ends) return this.reset(c);
        } else if (o.log) {
          // The log alone needs the ends: as Bun's text, unparsed (inbound.ts, socketNames).
          c.names = socketNames(s);
          if (!c.names) return this.reset(c);
        }
        const balancer = o.acceptProxy.length > 0 && mustSendHeader(o.acceptProxy, c.ends!.client);
        // The peer is the client unless it is a trusted load balancer, whose header names the client.
        let tracked: string | undefined;
        if (o.clients && !balancer) {
          // The address socketNames or socketEnds read already: Bun's getter would ask the kernel again.
          tracked = clientAddress(c.ends, c.names, s);
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
          if (o.tls) {
            // Read by peeking (see above): Bun must not read the socket until TLS has it.
            s.pause();
            this.peek(c);
          }
          return;
        }
        if (o.tls) return this.upgrade(c);
        this.start(c, EMPTY);
      },
      // On a server, `success` is whether the handshake completed (a plaintext client gets false);
      // the authorization error concerns client certificates, which are not asked for.
      handshake: (s: Socket<Conn>, success: boolean) => {
        const c = s.data;
        if (c?.stage !== Stage.Handshake || s !== c.socket) return;
        if (!success) {
          // (Bun may report a failure more than once before the reset takes effect: count it once.)
          o.stats.tlsHandshakeError("failed");
          if (o.log) this.cause(c, "close", "tls_handshake_failed");
          return this.reset(c);
        }
        // Counted by how the SNI name matched (the serverName handler's socket carries no Conn yet).
        const name = s.getServername();
        o.stats.tlsHandshake(typeof name === "string" && name ? o.tls!.pick(name).match : "none");
        // A client may close right after its handshake (openssl s_time -new does): Bun then no longer knows its
        // address, which the session reads as it starts. Nothing to serve; `close` follows, as at accept.
        if (!s.remoteAddress) return this.reset(c);
        this.start(c, EMPTY);
      },
      // The raw socket of an upgraded connection sees the ciphertext: only Conn.socket's events count.
      data: (s: Socket<Conn>, chunk: Uint8Array) => {
        const c = s.data;
        if (!c || s !== c.socket) return;
        if (c.stage === Stage.Protocol) return c.session!.clientData(chunk);
        if (c.stage === Stage.Header) this.headerData(c, chunk);
      },
      drain: (s: Socket<Conn>) => {
        const c = s.data;
        if (c?.stage === Stage.Protocol && s === c.socket) c.session!.clientDrain();
      },
      end: (s: Socket<Conn>) => {
        const c = s.data;
        if (c && s !== c.socket) return;
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
      // Either socket's close (the raw one's comes first): the descriptor is gone.
      close: (s: Socket<Conn>, error?: Error) => this.closed(s, error),
      error: (s: Socket<Conn>, error: Error) => this.closed(s, error),
    };
    const store = o.tls;
    if (store) {
      // The TLS sockets' handlers: the same, but `open` (admission happened at accept), and SNI.
      this.tlsHandlers = {
        ...h,
        open: () => {},
        // RFC 6066 §3: the client's server_name picks the certificate; undefined keeps the default (the first).
        serverName: (_s: Socket<Conn>, name: string) => store.pick(name).context,
      };
    }
    return h;
  }

  private tlsHandlers: object | undefined;

  /** The TLS stage: upgrade the plain socket in place; the handshake deadline runs from now. */
  private upgrade(c: Conn, paused = false): void {
    c.stage = Stage.Handshake;
    c.deadline = this.o.clock.now + this.o.deadlines.handshakeMs;
    let tls: Socket<Conn>;
    try {
      tls = (c.socket as any).upgradeTLS({ isServer: true, data: c, tls: this.o.tls!.options, socket: this.tlsHandlers })[1];
    } catch {
      this.o.stats.tlsHandshakeError("failed");
      if (this.o.log) this.cause(c, "close", "tls_handshake_failed");
      return this.reset(c);
    }
    c.socket = tls;
    // A socket paused for the PROXY header peek: TLS reads from here on.
    if (paused) tls.resume();
  }

  /** A balancer's PROXY header before TLS, by peeking; retried with backoff until the header deadline. */
  private peek(c: Conn): void {
    if (c.stage !== Stage.Header) return;
    const r = peekHeader(c.socket, c.ends!);
    if (r === "more") {
      const delay = Math.min(1 << c.peeks++, 50);
      setTimeout(() => this.peek(c), delay);
      return;
    }
    if (r === "eof") {
      // A balancer's TCP health check: connected and closed without a byte.
      c.stage = Stage.Ending;
      return void c.socket.end();
    }
    this.headerDone(c, r);
  }

  private headerData(c: Conn, chunk: Uint8Array): void {
    const r = c.header!.feed(chunk, c.ends!);
    if (r === "more") return;
    this.headerDone(c, r);
  }

  private headerDone(c: Conn, r: { error: string } | { ends: Ends; rest: Uint8Array }): void {
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
    // With TLS the header was peeked (the socket is paused) and nothing after it taken.
    if (this.o.tls) return this.upgrade(c, true);
    this.start(c, r.rest);
  }

  private start(c: Conn, rest: Uint8Array): void {
    c.stage = Stage.Protocol;
    c.session = this.protocol.start(c.socket, c.ends, rest, c.names);
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
    c.header = undefined;
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
      ...(c.ends ? { client: formatEndpoint(c.ends.client), edge: formatEndpoint(c.ends.edge) } : c.names ? { client: c.names.client, edge: c.names.edge } : {}),
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
