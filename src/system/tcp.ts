// TCP sockets as raw descriptors through bun:ffi, for the engine's event
// loop (src/engine/): listeners, accepts, non-blocking connects, half-close
// and reset. Each call returns what the kernel said; the owner decides.
import type { Pointer } from "bun:ffi";
import type { Family } from "../config/address";
import { errno, libc } from "./libc";
import { Fd } from "./fd";
import { AF_INET, AF_INET6, SOCKADDR_IN6_SIZE, encodeSockaddr, type Endpoint } from "./sockaddr";
import { bindTo, IPV6_V6ONLY, setIntOption, SocketError, SOL_IPV6, SOL_SOCKET, SO_REUSEPORT } from "./udp";

const SOCK_STREAM = 1;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
const SO_LINGER = 13;
const SHUT_WR = 1;
/** send(2): no SIGPIPE when the peer is gone; EPIPE instead. */
export const MSG_NOSIGNAL = 0x4000;
/** send(2): more follows; the kernel holds a partial segment (as TCP_CORK) until then, or until our FIN goes with it. */
export const MSG_MORE = 0x8000;
export const EAGAIN = 11;
export const EINTR = 4;
export const EINPROGRESS = 115;
/** The kernel's backlog bound (net.core.somaxconn) applies; the same as Bun's listeners ask. */
const BACKLOG = 4096;

/** A non-blocking, close-on-exec TCP listener on `at`, in its SO_REUSEPORT group. The caller owns it. */
export function openTcpListener(at: Endpoint, where: string): Fd {
  const rc = libc.socket(at.family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (rc < 0) throw new SocketError(`${where}: socket`, errno(), "kernel");
  const fd = new Fd(rc, where);
  try {
    if (at.family === 6) setIntOption(rc, SOL_IPV6, IPV6_V6ONLY, 1, where);
    setIntOption(rc, SOL_SOCKET, SO_REUSEPORT, 1, where);
    bindTo(rc, at, where);
    if (libc.listen(rc, BACKLOG) !== 0) throw new SocketError(`${where}: listen`, errno(), "kernel");
    return fd;
  } catch (e) {
    fd.close();
    throw e;
  }
}

/** A new non-blocking TCP socket for a connect; -errno when socket(2) failed. */
export function tcpSocket(family: Family): number {
  const rc = libc.socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return rc < 0 ? -errno() : rc;
}

/** Start a non-blocking connect: 0 (connected or in progress) or -errno. */
export function startConnect(fd: number, sockaddr: Uint8Array): number {
  if (libc.connect(fd, sockaddr, sockaddr.length) === 0) return 0;
  const e = errno();
  return e === EINPROGRESS ? 0 : -e;
}

export { encodeSockaddr };

/** Room for one peer address from accept4 (sockaddr_in6 holds either family). */
export class AcceptAddress {
  readonly bytes = new Uint8Array(new ArrayBuffer(SOCKADDR_IN6_SIZE));
  readonly len = new Uint32Array(new ArrayBuffer(4));
}

/** accept4 (non-blocking, close-on-exec): the new fd, or -errno (EAGAIN: none queued). */
export function acceptFrom(listener: number, peer: AcceptAddress | undefined): number {
  let rc: number;
  if (peer) {
    peer.len[0] = SOCKADDR_IN6_SIZE;
    rc = libc.accept4(listener, peer.bytes, peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } else rc = libc.accept4(listener, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
  return rc < 0 ? -errno() : rc;
}

/** Accepts per listener per wakeup: bounded, so one busy listener cannot starve the connections already open. */
export const ACCEPT_BATCH = 64;
/** Turns in a row a listener must be ready before it is taken ACCEPT_BATCH at a time (AcceptPace). */
const ACCEPT_STREAK = 8;

/**
 * How many connections to take at one readiness of a level-triggered
 * listener: what one readiness leaves in its queue is reported by the next
 * wait, which then does not block. So one connection at a time (as nginx's
 * default, multi_accept off): no accept4 ends in EAGAIN, which costs the
 * kernel a socket inode and file made and freed (do_accept allocates before
 * it looks at the queue; 0.6 per connection with batches, one connection per
 * request). Measured (http engine): 0.95–0.97 of the CPU per request of a
 * batch of 64 (a batch of 4 is no better than 64). But one per wait would
 * bound the accept rate by the loop's turns, slow when each turn is full of
 * other events (a flood of connections next to busy ones): a listener ready
 * for ACCEPT_STREAK turns in a row is taken ACCEPT_BATCH at a time until a
 * turn finds it empty. One per listener, owned by its engine. The http
 * engine paces its listeners so; the tcp engine keeps batches of 64, where
 * pacing measured no different (tcp, one connection per request, 7 pairs:
 * 0.996–1.017).
 */
export class AcceptPace {
  /** The loop's turn at the last readiness (none yet: not the turn before the first), and how many turns in a row it was ready. */
  private readyTurn = -2;
  private streak = 0;

  /** The batch for a readiness in loop turn `turn` (the engine counts a turn per batch of events). */
  batch(turn: number): number {
    this.streak = this.readyTurn === turn - 1 ? this.streak + 1 : 0;
    this.readyTurn = turn;
    return this.streak >= ACCEPT_STREAK ? ACCEPT_BATCH : 1;
  }
}
const ECONNABORTED = 103;

/**
 * Accept up to ACCEPT_BATCH (or `max`) connections from a level-triggered listener
 * (what is left is reported again), each handed to `start` with its peer's
 * address in `peer` (accept4 writes it: no getpeername). ECONNABORTED and
 * EINTR skip one; EAGAIN ends the batch (0). Any other errno (EMFILE, ENFILE,
 * ENOBUFS) is returned: the listener stays ready, so the caller stops
 * watching it for a while instead of spinning.
 */
export function acceptBatch(listener: number, peer: AcceptAddress, start: (fd: number) => void, max = ACCEPT_BATCH): number {
  for (let i = 0; i < max; i++) {
    const c = acceptFrom(listener, peer);
    if (c >= 0) start(c);
    else if (c === -EAGAIN) return 0;
    else if (c !== -ECONNABORTED && c !== -EINTR) return -c;
  }
  return 0;
}

/** recv into [at, at+len): bytes read, 0 at the peer's FIN, or -errno. */
export function recvInto(fd: number, at: number, len: number): number {
  const n = Number(libc.recv(fd, at as Pointer, len, 0));
  return n < 0 ? -errno() : n;
}

/** send from [at, at+len): bytes taken, or -errno. `more`: MSG_MORE (see there). */
export function sendFrom(fd: number, at: number, len: number, more = false): number {
  const n = Number(libc.send(fd, at as Pointer, len, more ? MSG_NOSIGNAL | MSG_MORE : MSG_NOSIGNAL));
  return n < 0 ? -errno() : n;
}

/** Our FIN: no more bytes to this peer (a half-close; RFC 9293 §3.6). */
export function shutdownWrite(fd: number): void {
  libc.shutdown(fd, SHUT_WR);
}

const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const ONE = new Int32Array([1]);

/**
 * Send small segments at once (TCP_NODELAY, tcp(7)): no Nagle wait for the
 * peer's ACK of the previous one, which its delayed ACK holds back ~40 ms.
 * For every relayed or proxied stream, where a write can follow an
 * unacknowledged one (a request in two writes, pipelined answers, a body
 * after its head); Bun sets it on its sockets, nginx (tcp_nodelay) and
 * HAProxy on theirs. Set on a listener, it holds for what it accepts.
 * Best effort: a socket without it is slower, not wrong.
 */
export function noDelay(fd: number): void {
  libc.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4);
}

const LINGER_ZERO = new Int32Array(new ArrayBuffer(8)); // struct linger { l_onoff = 1, l_linger = 0 }
LINGER_ZERO[0] = 1;

/**
 * Make the next close(2) send an RST instead of a FIN (SO_LINGER on with a
 * zero timeout, socket(7)): how a reset from one peer is passed to the other.
 */
export function resetOnClose(fd: number): void {
  libc.setsockopt(fd, SOL_SOCKET, SO_LINGER, LINGER_ZERO, 8);
}

const soError = new Int32Array(new ArrayBuffer(4));
const soErrorLen = new Uint32Array(new ArrayBuffer(4));
const SO_ERROR = 4;

/** The socket's pending error (SO_ERROR), e.g. why a connect failed; 0 for none. */
export function socketError(fd: number): number {
  soErrorLen[0] = 4;
  if (libc.getsockopt(fd, SOL_SOCKET, SO_ERROR, soError, soErrorLen) !== 0) return errno();
  return soError[0]!;
}

const local = new AcceptAddress();
const peer = new AcceptAddress();

/**
 * The local address of a connected socket (getsockname): with sk_lookup, the address the client dialled.
 * The bytes are this module's, valid until the next call.
 */
export function localAddress(fd: number): Uint8Array | undefined {
  local.len[0] = SOCKADDR_IN6_SIZE;
  if (libc.getsockname(fd, local.bytes, local.len) !== 0) return undefined;
  return local.bytes;
}

/** The peer of a connected socket (getpeername); undefined once it is gone (ENOTCONN). Valid until the next call. */
export function peerAddress(fd: number): Uint8Array | undefined {
  peer.len[0] = SOCKADDR_IN6_SIZE;
  if (libc.getpeername(fd, peer.bytes, peer.len) !== 0) return undefined;
  return peer.bytes;
}
