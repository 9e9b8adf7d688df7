import { readFileSync } from "node:fs";
import type { AdmissionShare } from "../engine/admission";

/** File descriptors kept for everything but connections: the runtime, listeners, BPF objects, logs. */
export const FD_RESERVE = 100;

/** The soft RLIMIT_NOFILE of this process (after Bun's own raise to the hard limit). */
export function openFileLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
  return !m || m[1] === "unlimited" ? 1 << 20 : Number(m[1]);
}

/** Connections the open-file limit allows: a relayed connection holds two descriptors. */
export function connectionCapacity(nofile = openFileLimit()): number {
  return Math.max(0, Math.floor((nofile - FD_RESERVE) / 2));
}

/**
 * Connections a worker keeps for what the kernel already gave it when it
 * leaves the first tier of the selection (bpf/reuseport.h): the SYNs hashed
 * to it between the one that reaches its soft mark and its update of the map
 * in admit(), about a burst's share (its accept queue when an event-loop turn
 * begins). Measured (2 workers, the worker one under its soft mark, 15 bursts
 * of concurrent newcomers each): with a headroom of 8, bursts of 16 gave it at
 * most 8 more (none reset), bursts of 32 more than 8 (57 reset); with 16,
 * bursts of 16 none reset, bursts of 32 up to 17 more (7 reset), bursts of 64
 * at a share of 512 none. So it is about a burst's share per worker. 1/8 of
 * the cap, at most 16: the first tier still covers 7/8 of a small cap (the
 * range where nothing is reset while another worker is below its soft mark),
 * and a larger headroom would only unbalance large caps. At least 1; a cap of
 * 1 has none (its soft mark is its cap).
 */
export function headroom(max: number): number {
  return max <= 1 ? 0 : Math.max(1, Math.min(16, Math.floor(max / 8)));
}

/**
 * A cap on open connections for the whole process, so accept() never meets
 * EMFILE: Bun retries a failing accept at once and spins a core. Two marks
 * steer (bpf/reuseport.h, steering.ts): at `soft` (the cap minus its
 * headroom) `onSoft(false)` takes the process out of the selection's first
 * tier, so the kernel prefers workers further from their caps, while it still
 * admits up to the cap; at the cap `onChange(false)` takes it out of the
 * second too (the kernel then refuses new connections itself when no worker
 * has room). Each comes back with hysteresis: tier 2 below `resumeAt`
 * (`onChange(true)`), tier 1 below `firstResumeAt` (`onSoft(true)`), which is
 * the same mark when that is under the soft mark already (caps from about
 * 300) and one under the soft mark otherwise. A connection admitted over the
 * cap (already queued in the kernel) is refused by the caller.
 */
export class Admission {
  /**
   * [active, refused], shared with the data plane's thread: tcp services on
   * the engine (src/engine/admission.ts) count in the same cap, and tell this
   * thread when they cross a mark (recheck).
   */
  private readonly counts = new Int32Array(new SharedArrayBuffer(12));
  private full = false;
  private soft = false;
  /** Past this many open connections the process leaves the first tier. */
  readonly softMark: number;
  readonly resumeAt: number;
  readonly firstResumeAt: number;

  constructor(
    readonly max: number,
    private readonly onChange: (accepting: boolean) => void,
    private readonly onSoft: (first: boolean) => void = () => {},
  ) {
    this.softMark = max - headroom(max);
    this.resumeAt = max - Math.max(1, Math.floor(max / 20));
    this.firstResumeAt = Math.max(0, Math.min(this.resumeAt, this.softMark - 1));
  }

  get active(): number {
    return Atomics.load(this.counts, 0);
  }

  get refused(): number {
    return Atomics.load(this.counts, 1);
  }

  /** What the engine's thread needs to count in this cap. */
  share(): AdmissionShare {
    return { shared: this.counts.buffer as SharedArrayBuffer, max: this.max, softMark: this.softMark, resumeAt: this.resumeAt, firstResumeAt: this.firstResumeAt };
  }

  admit(): boolean {
    const n = Atomics.add(this.counts, 0, 1) + 1;
    if (n > this.max) {
      Atomics.sub(this.counts, 0, 1);
      Atomics.add(this.counts, 1, 1);
      return false;
    }
    this.recheck();
    return true;
  }

  leave(): void {
    Atomics.sub(this.counts, 0, 1);
    this.recheck();
  }

  /** The engine crossed a mark: steer by the count now, then let it go on (src/engine/admission.ts). */
  steeredForEngine(): void {
    this.recheck();
    Atomics.store(this.counts, 2, 1);
    Atomics.notify(this.counts, 2);
  }

  /** Steer by the count as it is now (after an admit or leave here, or a mark the engine crossed). */
  recheck(): void {
    const n = this.active;
    if (n >= this.softMark && !this.soft) {
      this.soft = true;
      this.onSoft(false);
    }
    if (n >= this.max && !this.full) {
      this.full = true;
      this.onChange(false);
    }
    if (this.full && n <= this.resumeAt) {
      this.full = false;
      this.onChange(true);
    }
    if (this.soft && n <= this.firstResumeAt) {
      this.soft = false;
      this.onSoft(true);
    }
  }

  get accepting(): boolean {
    return !this.full;
  }
}
