// The standalone relay of bench/uring-relay.ts on epoll instead of io_uring,
// so the bench compares the two event mechanisms and nothing else: the same
// primitives (src/system/epoll.ts, tcp.ts, buffers.ts), the same relay contract
// and the same absence of service plumbing. The I/O is the engine's
// (src/engine/pair.ts): both sockets edge-triggered for in and out once,
// recv into a pool buffer, send at once, a direction holds its buffer only
// while a send is partial (and is not read meanwhile: backpressure).
//
// bun bench/epoll-relay.ts --listen 192.0.2.10:8080 --origin 127.0.0.1:9000
import { BufferPool } from "../src/system/buffers";
import { EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP } from "../src/system/epoll";
import { relayArgs } from "./relay-args";
import { PairLoop } from "./relay-loop";
import { EAGAIN, EINTR, recvInto, resetOnClose, sendFrom, shutdownWrite } from "../src/system/tcp";

const { listen: at, listenText, origin } = relayArgs("epoll-relay");
const SIZE = 16384;
const pool = new BufferPool(1024, SIZE);
const loop = new PairLoop<Conn>("epoll-relay", at, origin);
const CONN = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

class Dir {
  buf = -1;
  off = 0;
  len = 0;
  readable = false;
  /** EPOLLRDHUP came: a short read no longer means drained, read on to the 0 (as the engine's Pair does). */
  finSeen = false;
  eof = false;
  shut = false;
}
class Conn {
  connecting = true;
  done = false;
  readonly up = new Dir(); // client -> origin
  readonly down = new Dir();
  constructor(
    readonly c: number,
    readonly o: number,
  ) {}
}

function finish(x: Conn, rst: boolean): void {
  if (x.done) return;
  x.done = true;
  if (rst) {
    resetOnClose(x.c);
    resetOnClose(x.o);
  }
  for (const d of [x.up, x.down]) if (d.buf >= 0) pool.release(d.buf);
  loop.close(x.c);
  loop.close(x.o);
}

function shutIfFlushed(x: Conn, d: Dir): void {
  if (d.len > 0 || d.shut || !d.eof || x.connecting) return;
  d.shut = true;
  if ((d === x.up ? x.down : x.up).shut) return finish(x, false);
  shutdownWrite(d === x.up ? x.o : x.c);
}

function pump(x: Conn, d: Dir): void {
  const src = d === x.up ? x.c : x.o;
  const dst = d === x.up ? x.o : x.c;
  while (d.readable && !d.eof && d.len === 0 && !x.done) {
    const b = pool.acquire();
    if (b < 0) return; // the pool is the bound; a later event reads on
    const n = recvInto(src, pool.address(b), SIZE);
    if (n > 0) {
      if (n < SIZE && !d.finSeen) d.readable = false;
      const s = x.connecting ? 0 : sendFrom(dst, pool.address(b), n);
      if (s === n) {
        pool.release(b);
        continue;
      }
      if (s >= 0 || s === -EAGAIN) {
        d.buf = b;
        d.off = s > 0 ? s : 0;
        d.len = n;
        return;
      }
      pool.release(b);
      return finish(x, true);
    }
    pool.release(b);
    if (n === 0) {
      d.eof = true;
      return shutIfFlushed(x, d);
    }
    if (n === -EAGAIN) d.readable = false;
    else if (n !== -EINTR) return finish(x, true);
  }
}

function flush(x: Conn, d: Dir): void {
  if (d.len > 0) {
    const rest = d.len - d.off;
    const s = sendFrom(d === x.up ? x.o : x.c, pool.address(d.buf, d.off), rest);
    if (s === rest) {
      pool.release(d.buf);
      d.buf = -1;
      d.len = d.off = 0;
    } else if (s >= 0 || s === -EAGAIN) {
      if (s > 0) d.off += s;
      return;
    } else return finish(x, true);
  }
  if (d.eof) return shutIfFlushed(x, d);
  if (d.readable) pump(x, d);
}

function event(x: Conn, fd: number, ev: number): void {
  if (x.done) return;
  if (fd === x.o && x.connecting) {
    if (ev & (EPOLLERR | EPOLLHUP)) return finish(x, true);
    if (!(ev & EPOLLOUT)) return;
    x.connecting = false;
    flush(x, x.up);
  }
  const src = fd === x.c ? x.up : x.down;
  const dst = fd === x.c ? x.down : x.up;
  if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) src.finSeen = true;
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) src.readable = true;
  if (ev & EPOLLOUT && dst.len > 0) flush(x, dst);
  if (!x.done && src.readable) pump(x, src);
}

// The bench waits for the ready line before it sends load (bench/load.ts).
await loop.run(
  listenText,
  () => loop.accept((c, o) => new Conn(c, o), CONN, CONN, (x) => finish(x, true)),
  event,
);
