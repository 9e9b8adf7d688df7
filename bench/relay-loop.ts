// The skeleton the epoll-driven standalone relays share (bench/epoll-relay.ts,
// sockmap-relay.ts): the listening socket, each client's origin socket made
// and connecting at accept, the pairs by descriptor, closes deferred to the
// end of a loop turn (a later event of the same turn may name the fd), and
// the loop itself. What a relay does with a pair's events is its own.
import { EPOLLIN, Epoll } from "../src/system/epoll";
import type { Fd } from "../src/system/fd";
import { libc } from "../src/system/libc";
import { encodeSockaddr, type Endpoint } from "../src/system/sockaddr";
import { acceptFrom, openTcpListener, startConnect, tcpSocket } from "../src/system/tcp";

export class PairLoop<P> {
  readonly ep = new Epoll(256);
  private readonly listener: Fd;
  private readonly originSa: Uint8Array;
  private readonly byFd: (P | undefined)[] = [];
  private toClose: number[] = [];

  constructor(
    private readonly name: string,
    at: Endpoint,
    origin: Endpoint,
  ) {
    this.listener = openTcpListener(at, `${name} listener`);
    this.ep.watch(this.listener.raw, EPOLLIN);
    this.originSa = encodeSockaddr(origin);
  }

  /**
   * Up to 64 connections: each gets an origin socket, connecting, and the pair `make` builds, its two sockets
   * watched for `clientEvents` and `originEvents`; one that cannot be watched or connected goes to `failed`.
   */
  accept(make: (c: number, o: number) => P, clientEvents: number, originEvents: number, failed: (x: P) => void): void {
    for (let i = 0; i < 64; i++) {
      const c = acceptFrom(this.listener.raw, undefined);
      if (c < 0) return;
      const o = tcpSocket(4);
      if (o < 0) {
        libc.close(c);
        continue;
      }
      const x = make(c, o);
      this.byFd[c] = this.byFd[o] = x;
      if (!this.ep.tryWatch(c, clientEvents) || !this.ep.tryWatch(o, originEvents) || startConnect(o, this.originSa) < 0) failed(x);
    }
  }

  /** close(2) `fd` at the end of this turn. */
  close(fd: number): void {
    this.toClose.push(fd);
  }

  /**
   * Say ready (the bench waits for the line) and run: `accepted` at the listener's readiness, `event` for a
   * pair's socket, `turn` after each turn's events; a wait is at most `waitMs()` (bounded: a signal may land on
   * another of Bun's threads and not interrupt it).
   */
  async run(ready: string, accepted: () => void, event: (x: P, fd: number, ev: number) => void, turn: () => void = () => {}, waitMs: () => number = () => 100): Promise<never> {
    process.on("SIGTERM", () => process.exit(0));
    console.log(`${this.name}: ready on ${ready}`);
    let yielded = performance.now();
    for (;;) {
      const n = this.ep.wait(waitMs());
      for (let i = 0; i < n; i++) {
        const fd = this.ep.fdAt(i);
        if (fd === this.listener.raw) accepted();
        else {
          const x = this.byFd[fd];
          if (x !== undefined) event(x, fd, this.ep.eventsAt(i));
        }
      }
      turn();
      if (this.toClose.length) {
        for (const fd of this.toClose) {
          this.byFd[fd] = undefined;
          libc.close(fd);
        }
        this.toClose = [];
      }
      if (n === 0 || performance.now() - yielded > 20) {
        // Idle: a timer turn, which also runs signal handlers (an immediate does not); busy: an immediate, no 1 ms clamp.
        await new Promise((r) => (n === 0 ? setTimeout(r, 0) : setImmediate(r)));
        yielded = performance.now();
      }
    }
  }
}
