// A stream socket of an http service on the engine: a raw descriptor on the
// data plane's epoll loop behind the same interface (HttpSocket) the HTTP/1.1
// exchange uses over Bun's sockets, so one HTTP implementation serves both
// transports (src/proxy/http/socket.ts). Registered edge-triggered for input
// and output once at creation (as pair.ts); a read is one recv into the
// engine's buffer and one copy for the exchange (which may keep the chunk:
// a pipelined head, a queued write). Backpressure: pause() stops reading, so
// the kernel's receive window closes on the sender.
import { ptr } from "bun:ffi";
import { formatAddress } from "../config/address";
import { EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP } from "../system/epoll";
import { decodeSockaddr, type Endpoint } from "../system/sockaddr";
import { EAGAIN, EINTR, localAddress, recvInto, resetOnClose, sendFrom, shutdownWrite, socketError } from "../system/tcp";
import type { HttpSocket } from "../proxy/http/socket";
import { errnoName, libc } from "../system/libc";

/** A sockaddr of family AF_UNSPEC (0): connect(2) to it dissolves the association (connect(2), "AF_UNSPEC"). */
const UNSPEC = new Uint8Array(16);

/** What a socket tells its owner (a client connection or an origin connection). */
export interface SocketEvents {
  data(chunk: Uint8Array): void;
  drain(): void;
  /** The peer's FIN: reading is over, writing may go on (half-open, as Bun's allowHalfOpen). */
  end(): void;
  /** Closed, by us or by an error (`error`: the peer reset or the send failed). Once, and last. */
  close(error?: Error): void;
  /** An origin socket's connect finished: `error` when it failed (then close does not follow). */
  connected?(error?: Error): void;
}

/** What the socket needs of its engine: the read buffer, a later read, and the deferred close(2). */
export interface SocketLoop {
  readonly readBuf: Uint8Array;
  readonly readAt: number;
  /** Read `s` after the current event (a resume must not re-enter the exchange that called it). */
  later(s: EngineSocket): void;
  /** Run `fn` after the current event (as Bun reports a close: not from inside the call that caused it). */
  defer(fn: () => void): void;
  /** The socket is done: close(2) its descriptor after the current batch of events (a later event may name it). */
  closed(s: EngineSocket): void;
}

export function errnoError(errno: number, what: string): Error {
  // The name Bun's errors carry as their code (ECONNREFUSED…), which the HTTP code classifies (context.ts originCause).
  const code = errnoName(errno) ?? `errno ${errno}`;
  return Object.assign(new Error(`${what}: ${code}`), { code });
}

export class EngineSocket implements HttpSocket {
  events: SocketEvents | undefined;
  /** Connect under way (origin sockets). */
  connecting = false;
  private paused = false;
  /** Unread input may be waiting (edge-triggered: set by an event, cleared by a short read). */
  private readable = false;
  private finSeen = false;
  private eof = false;
  private shut = false;
  private wantDrain = false;
  /** Bytes may be held for our FIN (writeLast). */
  private corked = false;
  done = false;
  /** An origin's socket: a failed send reads what the peer sent before it closes (sendFailed). */
  readFirst = false;
  /** A send failed with this errno while the peer's last bytes are read: the socket closes with it after them. */
  private sendErrno = 0;
  private local: Endpoint | undefined;
  /** The peer's address as text when the engine made it already (accept: the busiest-clients count's). */
  remoteText: string | undefined;

  constructor(
    private readonly loop: SocketLoop,
    readonly fd: number,
    /** The peer (accept4's address; the origin's target). */
    private readonly peer: Endpoint | undefined,
    /** The service whose connection it is (its counters are reported when it has events). */
    readonly svc: { touched: boolean },
  ) {}

  /** An epoll event for the descriptor. */
  event(ev: number): void {
    if (this.done) return;
    if (this.connecting) {
      if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
      this.connecting = false;
      const err = socketError(this.fd);
      if (err !== 0 || ev & EPOLLERR) {
        this.done = true;
        this.loop.closed(this);
        return this.events?.connected?.(errnoError(err || 111, "connect"));
      }
      this.events?.connected?.();
      if (this.done) return;
    } else if (ev & EPOLLOUT && this.wantDrain) {
      this.wantDrain = false;
      this.events?.drain();
      if (this.done) return;
    }
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) this.finSeen = true;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) this.readable = true;
    if (this.readable && !this.paused) this.read();
  }

  /** Read until the socket would block, is paused, ends or closes. */
  read(): void {
    const loop = this.loop;
    const size = loop.readBuf.length;
    while (this.readable && !this.paused && !this.eof && !this.done) {
      const n = recvInto(this.fd, loop.readAt, size);
      if (n > 0) {
        // A short read drained the socket, unless a FIN is pending: then read on to the 0.
        if (n < size && !this.finSeen) this.readable = false;
        this.events?.data(loop.readBuf.slice(0, n));
        continue;
      }
      if (n === 0) {
        if (this.sendErrno) return this.fail(this.sendErrno, "send");
        this.eof = true;
        this.readable = false;
        this.events?.end();
        return;
      }
      if (n === -EAGAIN) {
        this.readable = false;
        return;
      }
      if (n === -EINTR) continue;
      return this.fail(-n, "recv");
    }
  }

  write(bytes: Uint8Array, more = false): number {
    if (this.done || this.shut) return -1;
    if (bytes.length === 0) return 0;
    const n = sendFrom(this.fd, ptr(bytes), bytes.length, more);
    if (n === bytes.length) return n;
    if (n >= 0 || n === -EAGAIN) {
      this.wantDrain = true;
      return n > 0 ? n : 0;
    }
    if (n === -EINTR) return this.write(bytes, more);
    // The peer is gone (EPIPE, ECONNRESET): closed with the error, as Bun reports it; the Outbox takes -1 as "closing".
    this.sendFailed(-n);
    return -1;
  }

  /**
   * A send failed: the peer is gone. An origin may have answered before it went (an early 413 or 401 to
   * an upload it would not read, then its close, which the unread bytes make an RST): its answer waits in
   * the receive queue and is read first, as Bun's sockets do, then the socket closes with the error.
   * Otherwise the client got a 502 "connection reset" for an origin that had answered. A client's socket,
   * one paused (its reader is slow), or one whose FIN was read (nothing more to read: read() would not
   * run, and the socket would never close) closes at once.
   */
  private sendFailed(errno: number): void {
    if (!this.readFirst || this.paused || this.eof || this.done) return this.fail(errno, "send");
    this.shut = true;
    this.sendErrno = errno;
    this.readable = this.finSeen = true;
    this.loop.later(this);
  }

  /**
   * The response before the connection's end (HttpSocket.writeLast): sent
   * with MSG_MORE, so the kernel holds a short one until end() or
   * shutdown() (which follow before the loop runs again) sends our FIN in
   * the same segment. One packet and one ACK fewer per connection, and the
   * client's FIN comes after ours, so the TIME_WAIT is set up on its
   * processing, not in our close (bench/profiles/http.md).
   */
  writeLast(bytes: Uint8Array): number {
    const n = this.write(bytes, true);
    if (n > 0) this.corked = true;
    return n;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.readable && !this.done) this.loop.later(this);
  }

  shutdown(): void {
    if (this.done || this.shut) return;
    this.shut = true;
    shutdownWrite(this.fd);
  }

  /** FIN and close (unread input makes the kernel send an RST instead: the exchange lingers first when that matters). */
  end(): void {
    // Held bytes (writeLast) go now with the FIN, not at close(2) after the batch: there, input that
    // came meanwhile would turn the FIN into an RST and the held response would never be sent.
    if (this.corked) this.shutdown();
    this.finish(undefined);
  }

  terminate(): void {
    if (this.done) return;
    // The RST now, not at close(2) after the batch (the descriptor's number stays ours until then:
    // a later event of the batch may name it): connect(2) to AF_UNSPEC disconnects a TCP socket,
    // with an RST where its state needs one (tcp_disconnect). So the peer hears of the abort before
    // anything this batch still sends elsewhere, as with Bun's terminate (a 502 to the client after
    // its origin connection was cut; the origin sees the cut first).
    if (libc.connect(this.fd, UNSPEC, UNSPEC.length) !== 0) resetOnClose(this.fd);
    this.finish(undefined);
  }

  private fail(errno: number, what: string): void {
    if (this.done) return;
    resetOnClose(this.fd);
    this.finish(errnoError(errno, what));
  }

  private finish(error: Error | undefined): void {
    if (this.done) return;
    this.done = true;
    this.loop.closed(this);
    const ev = this.events;
    this.events = undefined;
    // A connect that never completed: no close event (OriginConn gave it up already).
    if (!this.connecting && ev) this.loop.defer(() => ev.close(error));
  }

  get remoteAddress(): string {
    return this.remoteText ?? (this.peer ? formatAddress(this.peer.addr) : "");
  }

  get remotePort(): number {
    return this.peer?.port ?? 0;
  }

  private get localEnd(): Endpoint | undefined {
    if (!this.local && !this.done) {
      const at = localAddress(this.fd);
      this.local = at && decodeSockaddr(at);
    }
    return this.local;
  }

  get localAddress(): string {
    const l = this.localEnd;
    return l ? formatAddress(l.addr) : "";
  }

  get localPort(): number {
    return this.localEnd?.port ?? 0;
  }
}
