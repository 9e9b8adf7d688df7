// epoll(7) and eventfd(2) through bun:ffi: Bun's own event loop cannot watch
// a file descriptor it did not create, so the UDP data plane runs its own.
import { ptr, type Pointer } from "bun:ffi";
import { EdgeError } from "../errors";
import { errno, errnoText, libc } from "./libc";
import { Fd } from "./fd";

const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLLRDHUP = 0x2000;
export const EPOLLET = 1 << 31;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EINTR = 4;

// struct epoll_event is packed on x86_64 (12 bytes, data at 4) and naturally
// aligned elsewhere (16 bytes, data at 8): include/uapi/linux/eventpoll.h.
const PACKED = process.arch === "x64";
export const EPOLL_EVENT_SIZE = PACKED ? 12 : 16;
const DATA_AT = PACKED ? 4 : 8;
/** The same layout in 32-bit words (both fields are 4-byte aligned in either layout; native byte order, as the kernel writes them). */
const STRIDE = EPOLL_EVENT_SIZE / 4;
const DATA_WORD = DATA_AT / 4;

/** One epoll instance; the owner of its fd. Only `data` (the watched fd) is kept per event. */
export class Epoll {
  private readonly fd: Fd;
  private readonly events: Uint8Array;
  private readonly eventsPtr: Pointer;
  /** The ready events as words: read with a typed-array load, not an FFI call per field (two per event). */
  private readonly words: Uint32Array;
  private readonly one = new Uint8Array(EPOLL_EVENT_SIZE);
  private readonly oneView = new DataView(this.one.buffer);

  constructor(readonly capacity = 256) {
    this.fd = Fd.from(libc.epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
    // Its own ArrayBuffer: the address must not move (small typed arrays live in the GC heap).
    this.events = new Uint8Array(new ArrayBuffer(capacity * EPOLL_EVENT_SIZE));
    this.eventsPtr = ptr(this.events);
    this.words = new Uint32Array(this.events.buffer);
  }

  /**
   * Watch fd for input; events report fd as their data. Level-triggered by
   * default; `edge` asks for an event only when new input arrives, so the
   * reader must drain fd until it would block (epoll(7)).
   */
  add(fd: number, edge = false): void {
    this.watch(fd, (edge ? EPOLLET : 0) | EPOLLIN);
  }

  /** Watch fd for `events` (EPOLLIN | EPOLLOUT | EPOLLET ...); events report fd as their data. */
  watch(fd: number, events: number): void {
    this.oneView.setUint32(0, events >>> 0, true);
    this.oneView.setUint32(DATA_AT, fd, true);
    this.oneView.setUint32(DATA_AT + 4, 0, true);
    if (libc.epoll_ctl(this.fd.raw, EPOLL_CTL_ADD, fd, this.one) !== 0) throw new EdgeError(`epoll add fd ${fd}`, errnoText(errno()), "kernel");
  }

  /** watch(), but false instead of an exception (ENOMEM, ENOSPC: max_user_watches): for per-connection calls. */
  tryWatch(fd: number, events: number): boolean {
    this.oneView.setUint32(0, events >>> 0, true);
    this.oneView.setUint32(DATA_AT, fd, true);
    this.oneView.setUint32(DATA_AT + 4, 0, true);
    return libc.epoll_ctl(this.fd.raw, EPOLL_CTL_ADD, fd, this.one) === 0;
  }

  /**
   * Stop watching fd. Only needed while another descriptor still refers to
   * the same open file: close(2) of the last one removes it by itself (epoll(7), Q6).
   */
  remove(fd: number): void {
    libc.epoll_ctl(this.fd.raw, EPOLL_CTL_DEL, fd, this.one);
  }

  /** Wait up to timeoutMs; returns how many events are ready (0 on timeout or signal). */
  wait(timeoutMs: number): number {
    const n = libc.epoll_wait(this.fd.raw, this.eventsPtr, this.capacity, timeoutMs);
    if (n < 0) {
      if (errno() === EINTR) return 0;
      throw new EdgeError("epoll_wait", errnoText(errno()), "kernel");
    }
    return n;
  }

  /** The fd of ready event i (0 ≤ i < the count wait returned). */
  fdAt(i: number): number {
    return this.words[i * STRIDE + DATA_WORD]!;
  }

  /** The event bits of ready event i. */
  eventsAt(i: number): number {
    return this.words[i * STRIDE]!;
  }

  /** Idempotent. */
  close(): void {
    this.fd.close();
  }
}

/**
 * A non-blocking eventfd: one side signals, the epoll side drains. The owner
 * of its fd; the other thread only reads the number (drainEventFd) and never
 * closes it.
 */
export class EventFd {
  private readonly own = Fd.from(libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
  private readonly word = new BigUint64Array([1n]);

  /** The number, for the reading side; throws once closed. */
  get fd(): number {
    return this.own.raw;
  }

  /** A signal after close is dropped: the reading side has stopped by then. */
  signal(): void {
    if (this.own.closed) return;
    this.word[0] = 1n;
    libc.write(this.own.raw, this.word, 8);
  }

  /** Idempotent. */
  close(): void {
    this.own.close();
  }
}

const drained = new BigUint64Array(1);

/** Reset an eventfd's counter (it is another thread's EventFd; this side only reads). */
export function drainEventFd(fd: number): void {
  libc.read(fd, drained, 8);
}
