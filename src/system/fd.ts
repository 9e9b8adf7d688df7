// One owner per file descriptor. A descriptor number is only meaningful
// while it is open, and once closed the kernel gives the same number to the
// next open(): a second close() of a stale number closes someone else's
// socket, map or epoll set. So every descriptor edgeproxy opens itself has one
// Fd that owns it: close() is idempotent, release() hands the number over
// explicitly (to another thread, a SOCKMAP, a caller that closes it), dup()
// makes a second owner of the same open file, and any use after close or
// release throws a clear error instead of touching a reused number.
// (The model: cilium/ebpf internal/sys/fd.go.)
import { EdgeError, type Fault } from "../errors";
import { errno, errnoText, libc } from "./libc";

const F_DUPFD_CLOEXEC = 1030;
const EINTR = 4;

export class Fd {
  #raw: number;

  /** Own `raw`, which `what` names in errors ("flow socket", "pidfd of 123"). */
  constructor(
    raw: number,
    readonly what: string,
  ) {
    if (!Number.isInteger(raw) || raw < 0) throw new EdgeError(what, `${raw} is not a file descriptor`, "internal");
    this.#raw = raw;
  }

  /**
   * Own what a call that returns a new descriptor returned; when it failed
   * (-1 and errno), throw with errno's name and whose fault it was.
   */
  static from(rc: number, what: string, fault: Fault = "kernel"): Fd {
    if (rc < 0) throw new EdgeError(what, errnoText(errno()), fault);
    return new Fd(rc, what);
  }

  /** The number, for a system call; throws once closed or released. */
  get raw(): number {
    if (this.#raw < 0) throw new EdgeError(this.what, "file descriptor used after close (or after it was handed over)", "internal");
    return this.#raw;
  }

  /** Closed or released: this Fd owns nothing any more. */
  get closed(): boolean {
    return this.#raw < 0;
  }

  /**
   * Close it. Idempotent: a second close is a no-op, never a close of a
   * number the kernel has given out again. The number is forgotten before
   * close(2) runs: Linux releases it even when close reports an error
   * (close(2), "Dealing with error returns"), so it is never retried.
   */
  close(): void {
    const n = this.#raw;
    if (n < 0) return;
    this.#raw = -1;
    libc.close(n);
  }

  /** Hand the number over to a new owner: this Fd no longer closes it (nor may use it). */
  release(): number {
    const n = this.raw;
    this.#raw = -1;
    return n;
  }

  /** A second owner of the same open file (F_DUPFD_CLOEXEC), closed on its own; never number 0, which BPF calls read as "none". */
  dup(what = this.what): Fd {
    for (;;) {
      const rc = libc.fcntl(this.raw, F_DUPFD_CLOEXEC, 1);
      if (rc >= 0) return new Fd(rc, what);
      if (errno() !== EINTR) throw new EdgeError(`${what}: dup of fd ${this.#raw}`, errnoText(errno()), "kernel");
    }
  }

  toString(): string {
    return this.#raw < 0 ? `${this.what} (closed)` : `${this.what} (fd ${this.#raw})`;
  }
}

/**
 * Close a retiring service's listeners on a data-plane thread and drop them
 * from that thread's fd → owner table (the tcp, http and UDP engines' retire):
 * each once, whatever was closed before.
 */
export function closeListeners(listeners: readonly Fd[], byFd: unknown[]): void {
  for (const l of listeners) {
    if (l.closed) continue;
    byFd[l.raw] = undefined;
    l.close();
  }
}
