// The standalone relay of bench/uring-relay.ts on epoll instead of io_uring,
// so the bench compares the two event mechanisms and nothing else: the same
// primitives (src/system/epoll.ts, tcp.ts, buffers.ts), the same relay contract
// and the same absence of service plumbing. The I/O is the engine's
// (src/engine/pair.ts): both sockets edge-triggered for in and out once,
// recv into a pool buffer, send at once, a direction holds its buffer only
// while a send is partial (and is not read meanwhile: backpressure).
//
// bun bench/epoll-relay.ts --listen 192.0.2.10:8080 --origin 127.0.0.1:9000
import { parseArgs } from "node:util";
import { BufferPool } from "../src/system/buffers";
import { EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, Epoll } from "../src/system/epoll";
import { libc } from "../src/system/libc";
import { encodeSockaddr } from "../src/system/sockaddr";
import { acceptFrom, EAGAIN, EINTR, openTcpListener, recvInto, resetOnClose, sendFrom, shutdownWrite, startConnect, tcpSocket } from "../src/system/tcp";

const { values } = parseArgs({ options: { listen: { type: "string" }, origin: { type: "string" } } });
function endpoint(s: string | undefined, what: string) {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)$/.exec(s ?? "");
  if (!m) {
    console.error(`epoll-relay: --${what} wants IPv4:port, got ${JSON.stringify(s)}`);
    process.exit(2);
  }
  return { family: 4 as const, addr: new Uint8Array(m.slice(1, 5).map(Number)), port: Number(m[5]) };
}
const at = endpoint(values.listen, "listen");
const originSa = encodeSockaddr(endpoint(values.origin, "origin"));
const SIZE = 16384;
const pool = new BufferPool(1024, SIZE);
const ep = new Epoll(256);
const listener = openTcpListener(at, "epoll relay listener");
ep.watch(listener.raw, EPOLLIN);
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
const byFd: (Conn | undefined)[] = [];
let toClose: number[] = [];

function finish(x: Conn, rst: boolean): void {
  if (x.done) return;
  x.done = true;
  if (rst) {
    resetOnClose(x.c);
    resetOnClose(x.o);
  }
  for (const d of [x.up, x.down]) if (d.buf >= 0) pool.release(d.buf);
  toClose.push(x.c, x.o);
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

function accept(): void {
  for (let i = 0; i < 64; i++) {
    const c = acceptFrom(listener.raw, undefined);
    if (c < 0) return;
    const o = tcpSocket(4);
    if (o < 0) {
      libc.close(c);
      continue;
    }
    const x = new Conn(c, o);
    byFd[c] = byFd[o] = x;
    if (!ep.tryWatch(c, CONN) || !ep.tryWatch(o, CONN) || startConnect(o, originSa) < 0) finish(x, true);
  }
}

process.on("SIGTERM", () => process.exit(0));
// The bench waits for this line before it sends load (bench/load.ts).
console.log(`epoll-relay: ready on ${values.listen}`);
let yielded = performance.now();
for (;;) {
  // Bounded: a signal may land on another of Bun's threads and not interrupt this wait.
  const n = ep.wait(100);
  for (let i = 0; i < n; i++) {
    const fd = ep.fdAt(i);
    if (fd === listener.raw) accept();
    else {
      const x = byFd[fd];
      if (x) event(x, fd, ep.eventsAt(i));
    }
  }
  if (toClose.length) {
    for (const fd of toClose) {
      byFd[fd] = undefined;
      libc.close(fd);
    }
    toClose = [];
  }
  if (n === 0 || performance.now() - yielded > 20) {
    // Idle: a timer turn, which also runs signal handlers (an immediate does not); busy: an immediate, no 1 ms clamp.
    await new Promise((r) => (n === 0 ? setTimeout(r, 0) : setImmediate(r)));
    yielded = performance.now();
  }
}
