// The UDP plane's sends of one loop turn, submitted together: one
// io_uring_enter(2) per turn instead of one send(2) per datagram (every
// exchange sends two). Measured side by side (bench/profiles/udp.md): ~5%
// less CPU per exchange on the data plane's thread; reading through the ring
// as well bought nothing more, as io_uring's own work per request is about
// what a system call's entry costs. Each datagram is copied into a staging
// area first (the receive batch is reused by the next socket's read), so the
// payload it sends from is stable until the turn's flush, which comes before
// the loop waits again: a datagram waits at most the rest of its turn.
//
// Every send carries MSG_DONTWAIT: io_uring then completes it inline with the
// socket's answer (-EAGAIN included) instead of arming a poll and sending
// later (io_uring/net.c: MSG_DONTWAIT sets REQ_F_NOWAIT), so after flush()
// every send is done, the staging area is free and ordering per socket is the
// order of queue().
//
// The one rule for the owner: flush() before closing a descriptor that
// queued sends may name, or the SQE would go to whatever socket gets the
// number next.
import { Ring, OP } from "../../system/uring";

const MSG_DONTWAIT = 0x40;
const EIO = 5;
/** SQEs per turn by default: a flush when they are all used. */
const ENTRIES = 256;
/** How long flush() waits for completions that were not inline (none are expected; see above). */
const STRAGGLER_MS = 1000;

/** What the owner learns of each send at flush(): its result (bytes, or -errno). */
export type SendResult<T> = (owner: T, toClient: boolean, length: number, res: number) => void;

export class SendRing<T> {
  private readonly ring: Ring;
  private readonly owners: (T | undefined)[] = [];
  private readonly lengths: Int32Array;
  private readonly toClient: Uint8Array;
  /** Which of the flush's sends have been reported. */
  private readonly reported: Uint8Array;
  private count = 0;
  /** Bytes of the staging area in use. */
  private used = 0;
  /** Sends and flushes (io_uring_enter calls) made, for the profile. */
  sends = 0;
  flushes = 0;
  /** Flushes the kernel refused (their unsent datagrams reported as EIO), and the last refusal. */
  failures = 0;
  lastFailure = "";
  /** A flush ended with sends not completed: the owner must stop using the ring (close it, send directly). */
  broken = false;

  /**
   * `data` is the pinned buffer sends copy from and stage in; bytes
   * [stageAt, stageAt + stageBytes) of it are this ring's; `address` is
   * data's address. Throws when io_uring is unavailable (old kernel,
   * kernel.io_uring_disabled, a seccomp filter): the caller then sends directly.
   */
  constructor(
    private readonly data: Uint8Array,
    private readonly address: number,
    private readonly stageAt: number,
    private readonly stageBytes: number,
    private readonly result: SendResult<T>,
    /** Sends per flush at most (a power of two). */
    private readonly entries = ENTRIES,
  ) {
    this.lengths = new Int32Array(entries);
    this.toClient = new Uint8Array(entries);
    this.reported = new Uint8Array(entries);
    this.ring = new Ring(entries);
  }

  get queued(): number {
    return this.count;
  }

  /** `length` more bytes can be queued without a flush first. */
  fits(length: number): boolean {
    return this.count < this.entries && this.used + length <= this.stageBytes;
  }

  /**
   * Queue `length` bytes at `at` in data for connected socket fd; flushes
   * first when the turn's room is used up. That flush reports results, which
   * may close descriptors (fd among them): a caller that cannot tell flushes
   * first itself (fits()) and checks its descriptor is still open.
   */
  queue(fd: number, at: number, length: number, owner: T, toClient: boolean): void {
    if (this.count === this.entries || this.used + length > this.stageBytes) this.flush();
    const to = this.stageAt + this.used;
    this.data.copyWithin(to, at, at + length);
    // 8-byte aligned copies.
    this.used += (length + 7) & ~7;
    const i = this.count++;
    this.owners[i] = owner;
    this.lengths[i] = length;
    this.toClient[i] = toClient ? 1 : 0;
    const r = this.ring;
    const w = r.prep(OP.SEND, fd, i);
    r.setAddr(w, this.address + to);
    r.setLen(w, length);
    r.setOpFlags(w, MSG_DONTWAIT);
  }

  /** Submit the queued sends (one io_uring_enter) and report each one's result, in completion order (queue order: each is completed inline). */
  flush(): void {
    const n = this.count;
    if (n === 0) return;
    // Reset first: a result handler may close a flow, which flushes again (with nothing queued).
    this.count = 0;
    this.used = 0;
    this.sends += n;
    this.flushes++;
    const r = this.ring;
    const got = this.reported;
    got.fill(0, 0, n);
    let done = 0;
    try {
      r.enter(0, true);
      const deadline = performance.now() + STRAGGLER_MS;
      for (;;) {
        done += this.reap(got);
        if (done >= n) return;
        if (performance.now() > deadline) throw new Error(`${n - done} of ${n} sends not completed within ${STRAGGLER_MS} ms`);
        r.enter(n - done, true, STRAGGLER_MS);
      }
    } catch (e) {
      // The kernel refused the submission (EAGAIN, ENOMEM: io_uring_enter(2)): none of what it did not take may go
      // later with stale bytes; what it did not complete is reported failed.
      r.discard();
      done += this.reap(got);
      this.failures++;
      this.lastFailure = (e as Error).message;
      // Sends not completed may still be the kernel's: a late completion would be credited to the next turn's
      // tag, and their bytes in the staging area would be overwritten under them. The ring is not used again.
      if (done < n) this.broken = true;
      for (let i = 0; i < n && done < n; i++) {
        if (got[i]) continue;
        done++;
        const owner = this.owners[i]!;
        this.owners[i] = undefined;
        this.result(owner, this.toClient[i] === 1, this.lengths[i]!, -EIO);
      }
    }
  }

  // Report the completions posted so far; returns how many.
  private reap(got: Uint8Array): number {
    const r = this.ring;
    const k = r.ready();
    for (let j = 0; j < k; j++) {
      const c = r.cqe(j);
      const i = r.tagOf(c);
      if (got[i]) continue;
      got[i] = 1;
      const owner = this.owners[i]!;
      this.owners[i] = undefined;
      this.result(owner, this.toClient[i] === 1, this.lengths[i]!, r.resOf(c));
    }
    r.advance(k);
    return k;
  }

  close(): void {
    this.ring.close();
  }
}
