import { readFileSync } from "node:fs";

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
 * A cap on open connections for the whole process, so accept() never meets
 * EMFILE: Bun retries a failing accept at once and spins a core. At the cap,
 * `onChange(false)` lets the owner stop steering (the kernel then refuses new
 * connections itself); below `resumeAt` steering comes back with
 * `onChange(true)`. A connection admitted over the cap (already queued in
 * the kernel) is refused by the caller.
 */
export class Admission {
  active = 0;
  refused = 0;
  private full = false;
  readonly resumeAt: number;

  constructor(
    readonly max: number,
    private readonly onChange: (accepting: boolean) => void,
  ) {
    this.resumeAt = max - Math.max(1, Math.floor(max / 20));
  }

  admit(): boolean {
    if (this.active >= this.max) {
      this.refused++;
      return false;
    }
    this.active++;
    if (this.active >= this.max && !this.full) {
      this.full = true;
      this.onChange(false);
    }
    return true;
  }

  leave(): void {
    this.active--;
    if (this.full && this.active <= this.resumeAt) {
      this.full = false;
      this.onChange(true);
    }
  }

  get accepting(): boolean {
    return !this.full;
  }
}
