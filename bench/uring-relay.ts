// A standalone TCP relay on io_uring (src/system/uring.ts), for the bench's
// epoll-versus-io_uring comparison (issue 19): the same relay contract as the
// engine's epoll Pair (src/engine/pair.ts: bytes passed unchanged, the
// source's FIN becomes shutdown(SHUT_WR) of the destination once its bytes
// are sent, a reset on one side resets the other, close when both directions
// are shut) and the same primitives (BufferPool's pinned slab, tcp.ts's
// sockets), without the engine's service plumbing (stats, admission,
// deadlines, access log). Per loop turn: ONE io_uring_enter submits every
// SQE the turn prepared and waits for the next completions.
//   multishot accept (IORING_ACCEPT_MULTISHOT): one SQE for every connection;
//   origin connect: socket(2) then IORING_OP_CONNECT;
//   multishot recv (IORING_RECV_MULTISHOT) into the provided-buffer ring, one
//     SQE per direction for the connection's life (re-armed only when the
//     kernel ends it: out of buffers, or a full CQ);
//   send from the buffer the recv filled (MSG_WAITALL: io_uring retries a
//     partial send itself), the buffer going back to the ring when it is sent;
//   shutdown and close as SQEs too.
// Backpressure: the pool is the bound (a direction whose recv finds no buffer
// stops until one comes back: ENOBUFS ends the multishot). Unlike the epoll
// Pair there is no per-connection bound yet: one fast sender to a slow reader
// can hold many buffers (see bench/profiles/tcp.md).
//
// bun bench/uring-relay.ts --listen 192.0.2.10:8080 --origin 127.0.0.1:9000
import { ptr } from "bun:ffi";
import { BufferPool } from "../src/system/buffers";
import { libc } from "../src/system/libc";
import { relayArgs } from "./relay-args";
import { encodeSockaddr } from "../src/system/sockaddr";
import { MSG_NOSIGNAL, openTcpListener, resetOnClose, SOCK_CLOEXEC, SOCK_NONBLOCK, tcpSocket } from "../src/system/tcp";
import * as U from "../src/system/uring";

const { listen: at, listenText, origin, values } = relayArgs("uring-relay", { buffers: { type: "string", default: "1024" }, "buffer-size": { type: "string", default: "16384" } });
const BUFFERS = Number(values.buffers);
const SIZE = Number(values["buffer-size"]);

const MSG_WAITALL = 0x100;
const SHUT_WR = 1;
const ENOBUFS = 105;
const BGID = 1;
const MAX = 1 << 15;
// Tags (user_data): slot * 16 + kind.
const K_ACCEPT = 0,
  K_CONNECT = 1,
  K_RECV = 2, // + direction
  K_SEND = 4, // + direction
  K_SHUT = 6, // + direction
  K_CANCEL = 8,
  K_CLOSE = 9;
const UP = 0; // client -> origin
const DOWN = 1; // origin -> client

const ring = new U.Ring(4096);
const pool = new BufferPool(BUFFERS, SIZE);
const bufs = new U.BufferRing(ring, BGID, BUFFERS);
for (let i = 0; i < BUFFERS; i++) bufs.provide(i, pool.address(i), SIZE);
bufs.publish();
const listener = openTcpListener(at, "uring relay listener");
// Its own ArrayBuffer; IORING_OP_CONNECT copies it at submission anyway.
const sa = encodeSockaddr(origin);
const originSa = new Uint8Array(new ArrayBuffer(sa.length));
originSa.set(sa);
const originSaAt = ptr(originSa);

class Dir {
  /** Buffers read and not yet sent, as [bid, len] pairs; the head may be partly sent (off). */
  readonly q: number[] = [];
  off = 0;
  sending = false;
  armed = false;
  eof = false;
  shut = false;
}
class Conn {
  c = -1;
  o = -1;
  connected = false;
  dead = false;
  closed = false;
  inflight = 0;
  readonly d: Dir[] = [new Dir(), new Dir()];
}
const conns: (Conn | undefined)[] = [];
const freeSlots: number[] = [];
for (let i = MAX - 1; i >= 1; i--) freeSlots.push(i);
/** Directions whose multishot recv ended for want of a buffer: slot * 2 + direction. */
const starved: number[] = [];
let released = 0;

function armAccept(): void {
  const w = ring.prep(U.OP.ACCEPT, listener.raw, K_ACCEPT);
  ring.setIoprio(w, U.IORING_ACCEPT_MULTISHOT);
  ring.setOpFlags(w, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

function armRecv(s: number, x: Conn, d: number): void {
  const w = ring.prep(U.OP.RECV, d === UP ? x.c : x.o, s * 16 + K_RECV + d);
  ring.setIoprio(w, U.IORING_RECV_MULTISHOT);
  ring.setFlags(w, U.IOSQE_BUFFER_SELECT);
  ring.setBufGroup(w, BGID);
  x.d[d]!.armed = true;
  x.inflight++;
}

function giveBack(bid: number): void {
  bufs.provide(bid, pool.address(bid), SIZE);
  released++;
}

function trySend(s: number, x: Conn, d: number): void {
  const dir = x.d[d]!;
  if (dir.sending || !x.connected || dir.q.length === 0 || x.dead) return;
  const bid = dir.q[0]!;
  const len = dir.q[1]!;
  const w = ring.prep(U.OP.SEND, d === UP ? x.o : x.c, s * 16 + K_SEND + d);
  ring.setAddr(w, pool.address(bid, dir.off));
  ring.setLen(w, len - dir.off);
  ring.setOpFlags(w, MSG_NOSIGNAL | MSG_WAITALL);
  dir.sending = true;
  x.inflight++;
}

/** The direction's source sent its FIN and every byte went on: pass the FIN (RFC 9293 §3.6), or close when both are done. */
function maybeShut(s: number, x: Conn, d: number): void {
  const dir = x.d[d]!;
  if (dir.shut || !dir.eof || dir.sending || dir.q.length > 0 || x.dead || !x.connected) return;
  dir.shut = true;
  if (x.d[1 - d]!.shut) return; // both done: close (maybeClose) sends the last FIN itself
  const w = ring.prep(U.OP.SHUTDOWN, d === UP ? x.o : x.c, s * 16 + K_SHUT + d);
  ring.setLen(w, SHUT_WR);
  x.inflight++;
}

function reset(s: number, x: Conn): void {
  if (x.dead) return;
  x.dead = true;
  for (const dir of x.d) {
    // The head of a queue being sent comes back with its (cancelled) send.
    for (let i = dir.sending ? 2 : 0; i < dir.q.length; i += 2) giveBack(dir.q[i]!);
    dir.q.length = dir.sending ? 2 : 0;
  }
  resetOnClose(x.c);
  if (x.o >= 0) resetOnClose(x.o);
  // A descriptor with a request in flight stays open in the kernel until the request ends: cancel them, close after.
  for (const fd of [x.c, x.o]) {
    if (fd < 0) continue;
    const w = ring.prep(U.OP.ASYNC_CANCEL, fd, s * 16 + K_CANCEL);
    ring.setOpFlags(w, U.IORING_ASYNC_CANCEL_FD | U.IORING_ASYNC_CANCEL_ALL);
    x.inflight++;
  }
}

function maybeClose(s: number, x: Conn): void {
  if (x.closed || x.inflight > 0 || !(x.dead || (x.d[0]!.shut && x.d[1]!.shut))) return;
  x.closed = true;
  for (const fd of [x.c, x.o]) if (fd >= 0) ring.prep(U.OP.CLOSE, fd, s * 16 + K_CLOSE);
  conns[s] = undefined;
  freeSlots.push(s);
}

function accepted(fd: number): void {
  const s = freeSlots.pop();
  if (s === undefined) {
    libc.close(fd);
    return;
  }
  const x = new Conn();
  conns[s] = x;
  x.c = fd;
  const o = tcpSocket(4);
  if (o < 0) {
    x.dead = true;
    return maybeClose(s, x);
  }
  x.o = o;
  const w = ring.prep(U.OP.CONNECT, o, s * 16 + K_CONNECT);
  ring.setAddr(w, originSaAt);
  ring.setOff(w, originSa.length);
  x.inflight++;
  // The client's first bytes are read while the connect runs; they wait in the queue.
  armRecv(s, x, UP);
}

function completion(tag: number, res: number, flags: number): void {
  const kind = tag & 15;
  const s = (tag - kind) / 16;
  if (kind === K_ACCEPT) {
    if (res >= 0) accepted(res);
    if (!(flags & U.IORING_CQE_F_MORE)) armAccept();
    return;
  }
  const x = conns[s];
  if (kind === K_CLOSE || !x) return;
  if (kind === K_RECV || kind === K_RECV + 1) {
    const d = kind - K_RECV;
    const dir = x.d[d]!;
    const more = (flags & U.IORING_CQE_F_MORE) !== 0;
    if (!more) {
      dir.armed = false;
      x.inflight--;
    }
    if (res > 0) {
      const bid = flags >>> U.IORING_CQE_BUFFER_SHIFT;
      if (x.dead) giveBack(bid);
      else {
        dir.q.push(bid, res);
        trySend(s, x, d);
        if (!more) armRecv(s, x, d);
      }
    } else if (res === 0) {
      dir.eof = true;
      maybeShut(s, x, d);
    } else if (res === -ENOBUFS && !x.dead) starved.push(s * 2 + d);
    else if (!x.dead) reset(s, x);
  } else if (kind === K_SEND || kind === K_SEND + 1) {
    const d = kind - K_SEND;
    const dir = x.d[d]!;
    x.inflight--;
    dir.sending = false;
    const len = dir.q[1]!;
    if (res >= 0 && dir.off + res < len && !x.dead) {
      dir.off += res;
      trySend(s, x, d);
    } else {
      giveBack(dir.q[0]!);
      dir.q.splice(0, 2);
      dir.off = 0;
      if (res < 0) reset(s, x);
      else {
        trySend(s, x, d);
        maybeShut(s, x, d);
      }
    }
  } else if (kind === K_CONNECT) {
    x.inflight--;
    if (res < 0) reset(s, x);
    else if (!x.dead) {
      x.connected = true;
      armRecv(s, x, DOWN);
      trySend(s, x, UP);
      maybeShut(s, x, UP);
    }
  } else x.inflight--; // K_SHUT, K_CANCEL
  maybeClose(s, x);
}

// SIGTERM (the bench's stop) ends the process with exit 0: its handler runs when the loop yields to Bun's event
// loop through a timer, which it does when a wait ends without completions (interrupted, or IDLE_MS passed: the
// signal may land on another of Bun's threads); under load it yields every YIELD_MS through an immediate.
process.on("SIGTERM", () => process.exit(0));
// The bench waits for this line before it sends load (bench/load.ts).
console.log(`uring-relay: ready on ${listenText}`);
const YIELD_MS = 20;
const IDLE_MS = 100;
armAccept();
let yielded = performance.now();
for (;;) {
  const idle = ring.enter(1, true, IDLE_MS) < 0;
  if (idle || performance.now() - yielded > YIELD_MS) {
    await new Promise((r) => (idle ? setTimeout(r, 0) : setImmediate(r)));
    yielded = performance.now();
  }
  const n = ring.ready();
  for (let k = 0; k < n; k++) {
    const c = ring.cqe(k);
    completion(ring.tagOf(c), ring.resOf(c), ring.flagsOf(c));
  }
  ring.advance(n);
  if (released) {
    bufs.publish();
    // Buffers came back: directions that ran out read again.
    while (starved.length && released > 0) {
      const sd = starved.shift()!;
      const x = conns[sd >> 1];
      if (x && !x.dead && !x.d[sd & 1]!.armed) armRecv(sd >> 1, x, sd & 1);
      released--;
    }
    released = 0;
  }
}
