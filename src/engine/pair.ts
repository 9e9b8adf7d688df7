// One relayed TCP connection on the engine: client <-> origin, both raw
// descriptors the engine owns, registered edge-triggered for input and
// output once (nginx's ngx_epoll_add_connection does the same), so a
// keep-alive request costs one recv and one send per direction and no
// epoll_ctl.
//
// Backpressure: a direction holds at most one pool buffer, and only while
// its send is partial; until that buffer is flushed the source is not read,
// so the kernel's receive window closes on the sender. When the pool is
// empty no direction reads at all until a buffer comes back (the engine
// keeps the waiters).
// Half-close: the source's FIN becomes shutdown(SHUT_WR) of the destination
// once its pending bytes are sent (RFC 9293 §3.6); the pair closes when both
// directions are shut.
// Resets: a reset (recv/send error) on one side becomes an RST on the other
// (SO_LINGER 0 close).
import { ptr } from "bun:ffi";
import { EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP } from "../system/epoll";
import { EAGAIN, EINTR, recvInto, resetOnClose, sendFrom, shutdownWrite } from "../system/tcp";
import type { WorkerEndpoint } from "../proxy/udp/origins";
import type { FlowRecord } from "../proxy/udp/flowlog";
import type { TcpEngine } from "./engine";
import type { EngineService } from "./spec";
import { T } from "./stats";
import type { SourceKey } from "../dispatcher/sourceabi";
import type { Ends, HeaderReader } from "../proxy/inbound";
import { headerEvent } from "./header";
import { originConnected, originFailed } from "./dial";

export class Direction {
  /** Bytes not yet sent: [off, len) of pool buffer `buf`, or of `own` when the pool ran low (buf -1). len 0: none. */
  buf = -1;
  own: Uint8Array | undefined;
  off = 0;
  len = 0;
  /** The source may have unread bytes (edge-triggered: set by an event, cleared by a short read). */
  readable = false;
  /** The source reported its FIN (EPOLLRDHUP): read until recv returns 0, a short read does not mean drained. */
  finSeen = false;
  /** The source's FIN was read. */
  eof = false;
  /** Our FIN went to the destination. */
  shut = false;
  /** The log's reason when this direction's FIN ends the pair (made once, not per connection). */
  readonly fin: string;
  constructor(
    readonly from: "client" | "origin",
  ) {
    this.fin = from === "client" ? "client_fin" : "origin_fin";
  }
}

export class Pair {
  readonly up = new Direction("client");
  readonly down = new Direction("origin");
  /** -1 until the origin socket exists. */
  o = -1;
  connecting = true;
  done = false;
  /** Waiting in the engine's queue for a free buffer. */
  waiting = false;
  lastActive: number;
  /** Set when the origin is dialled (after a PROXY header, if any). */
  connectDeadline: number;
  bytesIn = 0;
  bytesOut = 0;
  endpoint: WorkerEndpoint | undefined;
  originPort = 0;
  /** The PROXY-header stage (header.ts): the reader while the header is incomplete, and its deadline. */
  header: HeaderReader | undefined;
  headerDeadline = 0;
  /** The connection's ends: the socket's, then the PROXY header's. */
  ends: Ends | undefined;
  /** The client's count this connection holds (source_connections), given back at close. */
  source: SourceKey | undefined;
  /** The client's address as the busiest-clients count has it (undefined: not counted, e.g. a balancer's header was not read yet). */
  tracked: string | undefined;
  /** Access log only. */
  record: FlowRecord | undefined;
  event: string | undefined;
  why: string | undefined;

  constructor(
    readonly engine: TcpEngine,
    readonly svc: EngineService,
    readonly c: number,
    readonly startedAt: number,
  ) {
    this.lastActive = startedAt;
    this.connectDeadline = startedAt + svc.spec.connectTimeoutMs;
  }

  /**
   * Why it ends, for the log line: the first cause wins, except that a failed origin connect (`force`)
   * is always the reason (as on Bun's path, relay.ts): a client's FIN while the connect was under way
   * (a client that only reads) did not end the connection.
   */
  cause(event: string, why: string, force = false): void {
    if (force) {
      this.event = event;
      this.why = why;
      return;
    }
    this.event ??= event;
    this.why ??= why;
  }

  /** An epoll event on one of the pair's descriptors. */
  event_(fd: number, ev: number): void {
    if (this.done) return;
    if (this.header) return headerEvent(this, ev);
    if (fd === this.o && this.connecting) {
      if (ev & (EPOLLERR | EPOLLHUP)) return originFailed(this.engine, this, "connect");
      if (!(ev & EPOLLOUT)) return;
      originConnected(this.engine, this);
      this.flush(this.up);
    }
    const src = fd === this.c ? this.up : this.down;
    const dst = fd === this.c ? this.down : this.up;
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) src.finSeen = true;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) src.readable = true;
    if (ev & EPOLLOUT && dst.len > 0) this.flush(dst);
    if (!this.done && src.readable) this.pump(src);
  }

  /** Read from the direction's source and send to its destination until either would block. */
  pump(d: Direction): void {
    const e = this.engine;
    const pool = e.pool;
    const size = pool.size;
    const src = d === this.up ? this.c : this.o;
    const dst = d === this.up ? this.o : this.c;
    while (d.readable && !d.eof && d.len === 0 && !this.done) {
      // Before the origin connects, one buffer of the client's bytes is held; then the client waits.
      const b = pool.acquire();
      if (b < 0) return e.waitForBuffer(this);
      const n = recvInto(src, pool.address(b), size);
      if (n > 0) {
        this.lastActive = e.now;
        if (d === this.up) {
          this.bytesIn += n;
          this.svc.bump(T.bytesIn, n);
        } else {
          this.bytesOut += n;
          this.svc.bump(T.bytesOut, n);
        }
        // A short read drained the socket (as nginx reads it), unless a FIN is pending: then read on to the 0.
        if (n < size && !d.finSeen) d.readable = false;
        if (this.connecting) return this.hold(d, b, 0, n);
        const s = sendFrom(dst, pool.address(b), n);
        if (s === n) {
          pool.release(b);
          continue;
        }
        if (s >= 0 || s === -EAGAIN) return this.hold(d, b, s > 0 ? s : 0, n);
        pool.release(b);
        return this.broken(d === this.up ? "origin" : "client");
      }
      pool.release(b);
      if (n === 0) {
        d.eof = true;
        d.readable = false;
        this.cause("close", d.fin);
        if (!this.connecting) this.shutIfFlushed(d);
        return;
      }
      if (n === -EAGAIN) {
        d.readable = false;
        return;
      }
      if (n === -EINTR) continue;
      return this.reset(d.from);
    }
  }

  /** Send what the direction holds; then read on. */
  flush(d: Direction): void {
    if (d.len > 0) {
      const pool = this.engine.pool;
      const dst = d === this.up ? this.o : this.c;
      const rest = d.len - d.off;
      const s = sendFrom(dst, d.buf >= 0 ? pool.address(d.buf, d.off) : ptr(d.own!, d.off), rest);
      if (s === rest) {
        this.drop(d);
        this.engine.bufferFreed();
      } else if (s >= 0 || s === -EAGAIN) {
        if (s > 0) d.off += s;
        return;
      } else return this.broken(d === this.up ? "origin" : "client");
    }
    if (d.eof) return this.shutIfFlushed(d);
    if (d.readable) this.pump(d);
  }

  private shutIfFlushed(d: Direction): void {
    if (d.len > 0 || d.shut) return;
    d.shut = true;
    // The other direction is done too: close(2) sends this FIN itself (each
    // side's EOF was read, so no unread bytes turn it into an RST), a call fewer.
    if ((d === this.up ? this.down : this.up).shut) return this.engine.finish(this, false);
    shutdownWrite(d === this.up ? this.o : this.c);
  }

  /** A recv on `side` failed (ECONNRESET and the like): reset the other side too. */
  reset(side: "client" | "origin"): void {
    if (side === "client") this.svc.bump(T.clientResets);
    else this.svc.originError("reset");
    this.cause(side === "client" ? "close" : "origin_error", `${side}_reset`);
    this.engine.finish(this, true);
  }

  /** A send to `side` failed (EPIPE, ECONNRESET): it is gone; reset the other. */
  private broken(side: "client" | "origin"): void {
    this.reset(side);
  }

  /** Give back what the pair holds (buffers); the engine closes the descriptors. */
  releaseBuffers(): void {
    const pool = this.engine.pool;
    // Each by name: no array and iterator per connection.
    this.drop(this.up);
    this.drop(this.down);
  }

  /**
   * Keep bytes [off, len) of pool buffer b until the destination takes them.
   * While a quarter of the pool is free the buffer itself is kept; below
   * that the bytes move to an allocation of their own size and the buffer
   * goes back, so connections that stall (a slow or hostile reader) cannot
   * drain the pool and stop everyone else's reads. What a connection holds is
   * bounded either way: at most one read per direction.
   */
  hold(d: Direction, b: number, off: number, len: number): void {
    const pool = this.engine.pool;
    if (pool.count - pool.inUse >= pool.count >> 2) {
      d.buf = b;
      d.off = off;
      d.len = len;
      return;
    }
    // Its own ArrayBuffer, so its address is stable for send(2) (see BufferPool).
    d.own = new Uint8Array(new ArrayBuffer(len - off));
    d.own.set(pool.view(b, off, len));
    pool.release(b);
    d.buf = -1;
    d.off = 0;
    d.len = len - off;
    this.engine.spilled(len - off);
  }

  private drop(d: Direction): void {
    if (d.buf >= 0) this.engine.pool.release(d.buf);
    d.buf = -1;
    d.own = undefined;
    d.len = d.off = 0;
  }

  /** Close with an RST: SO_LINGER 0 on both before the engine closes them. */
  armReset(): void {
    resetOnClose(this.c);
    if (this.o >= 0) resetOnClose(this.o);
  }
}
