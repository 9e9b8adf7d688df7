// The process's connection cap (src/proxy/admission.ts) as the data plane's
// thread takes it: the count lives in shared memory, so connections on Bun's
// sockets and on the engine share one cap. Crossing a mark upwards or
// downwards posts one message; the main thread then re-steers
// (Admission.recheck), since the steering map belongs to it.

import { type SockaddrTexts, sockaddrString } from "../log/line";
import { localAddress } from "../system/tcp";

/**
 * The access log's line for a connection refused at the cap, as Bun's path
 * writes it (pipeline.ts logCapped): `peer` the accepted sockaddr, `fd` the
 * connection (its edge asked of the kernel: only at the cap, no cost per connection).
 */
export function capLine(peer: Uint8Array, fd: number, edges: SockaddrTexts): Record<string, unknown> {
  const at = localAddress(fd);
  const client = sockaddrString(peer);
  const edge = at && edges.text(at);
  return { event: "limited", ...(client && edge ? { client, edge } : {}), bytes_in: 0, bytes_out: 0, duration_ms: 0, reason: "cap" };
}

/** What the main thread's Admission shares with the engine. */
export interface AdmissionShare {
  /** Int32 [active, refused, steered]: `steered` is set by the main thread once it has re-steered after a mark. */
  readonly shared: SharedArrayBuffer;
  readonly max: number;
  readonly softMark: number;
  readonly resumeAt: number;
  readonly firstResumeAt: number;
}

/**
 * The longest the engine waits for the main thread to re-steer after a mark.
 * Long enough for a main thread slowed by a loaded machine (20 ms was not:
 * the full worker then kept taking a killed worker's migrated queue and reset
 * it); a wait happens only at a crossing, so it is no per-connection cost.
 */
const STEER_WAIT_MS = 250;

export class EngineAdmission {
  private readonly counts: Int32Array;

  constructor(
    private readonly share: AdmissionShare,
    private readonly onMark: () => void,
  ) {
    this.counts = new Int32Array(share.shared);
  }

  admit(): boolean {
    const n = Atomics.add(this.counts, 0, 1) + 1;
    if (n > this.share.max) {
      Atomics.sub(this.counts, 0, 1);
      Atomics.add(this.counts, 1, 1);
      return false;
    }
    // Atomics.add hands out every value once, so each mark is crossed by exactly one admit.
    if (n === this.share.softMark || n === this.share.max) this.mark();
    return true;
  }

  leave(): void {
    const n = Atomics.sub(this.counts, 0, 1) - 1;
    if (n === this.share.resumeAt || n === this.share.firstResumeAt) this.mark();
  }

  /**
   * Tell the main thread and wait (bounded) until it has re-steered: on Bun's
   * path admission and steering are one step, and without the wait the kernel
   * would keep steering SYNs here for a message's latency after the cap was
   * reached, which this process would then have to reset. Marks are crossed
   * rarely (hysteresis), so the wait costs nothing per connection.
   */
  private mark(): void {
    Atomics.store(this.counts, 2, 0);
    this.onMark();
    Atomics.wait(this.counts, 2, 0, STEER_WAIT_MS);
  }
}
