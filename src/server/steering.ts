import type { Selection, Tier } from "../dispatcher/selection";
import type { ServiceSocket } from "../proxy/service";
import { listeners } from "../system/listeners";
import { socketCookie } from "../system/sockets";
import { every } from "./housekeeping";

const REPAIR_MS = 1000;

/** A TCP service this process runs, as steering sees it. */
interface SteeredService {
  readonly svc: { readonly protocol: "tcp" | "udp" };
  readonly sockets: readonly ServiceSocket[];
}

/**
 * This worker's place in the member selection of its TCP services' reuseport
 * groups (bpf/reuseport.h, ep_migrate): its listeners are offered at
 * position `position` (its worker index) of the first tier while it is
 * below its soft mark and of the second while it is below its connection
 * cap (admission.ts), and taken out at each, so the kernel gives newcomers to
 * a worker with room instead of to this one, which would reset them, and
 * prefers workers below their soft marks, so what it gave this one before it
 * left fits in its headroom. The SOCKMAP
 * member entries (ep_sockets) are left alone: any live member of a group
 * reaches the selection, and a worker at its cap still belongs to its group.
 * When no worker of a group has room the selector refuses the newcomer in
 * the kernel (counted as kernel_drops_total{reason="full"}).
 */
export class CapSteering {
  /** Below the cap: the listeners are offered in tier 2. */
  accepting = true;
  /** Below the soft mark: the listeners are offered in tier 1 too. */
  first = true;
  /** Times this worker left the selection at its cap, and came back below its resume mark. */
  left = 0;
  rejoined = 0;
  private stopped = false;

  constructor(
    private readonly selection: Selection,
    /** This worker's position in every group: its index, < `workers`. */
    readonly position: number,
    /** The group size recorded for the selector: the worker count of this process's instance. */
    readonly workers: number,
    private readonly running: () => Iterable<SteeredService>,
    private readonly say: (line: string) => void,
  ) {}

  /**
   * Record the TCP sockets' groups (size and service, for the selector) and
   * offer them when below the cap. A socket registered while this worker is
   * at its cap (a reload's new listener) waits for the resume like the rest.
   * Under the pin lock; a successor of an upgrade overwrites our positions,
   * as it does the SOCKMAP members.
   */
  register(service: number, sockets: readonly ServiceSocket[]): void {
    for (const s of sockets) {
      this.selection.setGroup(s.family, s.port, this.workers, service);
      this.selection.setListener(s.cookie, s.family, s.port);
      if (this.stopped) continue;
      if (this.first) this.selection.offer(s.family, s.port, this.position, s.fd, false, 1);
      if (this.accepting) this.selection.offer(s.family, s.port, this.position, s.fd, false, 2);
    }
  }

  /**
   * Drop the listener records (ep_reuse_listeners) of sockets that no longer
   * listen: a killed process leaves its own. The namespace's listeners come
   * from sock_diag (one dump), so this bounds the map by the live listeners.
   * Under the pin lock, before registering (start, reload).
   */
  prune(): void {
    const live = new Set(listeners("tcp").map((l) => l.cookie));
    for (const cookie of this.selection.listeners()) if (!live.has(cookie)) this.selection.removeListener(cookie);
  }

  /** Take our listeners out of the selection (a service withdrawn, a drain): only entries that still hold them. */
  withdraw(sockets: readonly ServiceSocket[]): void {
    for (const s of sockets) {
      this.takeOut(s, 1);
      this.takeOut(s, 2);
    }
  }

  private takeOut(s: ServiceSocket, tier: Tier): void {
    if (this.selection.cookieAt(s.family, s.port, this.position, tier) === s.cookie) this.selection.remove(s.family, s.port, this.position, tier);
  }

  private stopRepair: (() => void) | undefined;

  /**
   * Every second, below the cap, fill our positions that are empty. change()
   * leaves a position another socket holds alone; when that socket leaves
   * (a predecessor draining, a successor at its own cap), nothing else would
   * put ours back. One map lookup per listener.
   */
  start(): void {
    // On the process's housekeeping timer (housekeeping.ts): its wake-ups shared with the watchdog's.
    this.stopRepair ??= every(REPAIR_MS, () => {
      // Quiet: a failure here is retried in a second, and a cap crossing says why.
      if (this.stopped) return;
      if (this.first) this.forEachListener((s) => this.offer(s, 1));
      if (this.accepting) this.forEachListener((s) => this.offer(s, 2));
    });
  }

  /** No more offers: the listeners are closing (drain, stop). */
  stop(): void {
    this.stopped = true;
    this.stopRepair?.();
  }

  /**
   * The connection cap's change callback (Admission's onChange): at the cap
   * leave the selection's tier 2, below the resume mark come back. Runs outside the
   * pin lock, so it only touches its own position: leaving removes the entry
   * only while it holds our listener (by cookie); coming back fills the
   * position only when it is empty (BPF_NOEXIST), so a successor that took it
   * meanwhile keeps it. The listener's fd is checked to still be that
   * listener (by its cookie) before it is offered.
   */
  change(accepting: boolean): void {
    if (this.stopped || accepting === this.accepting) return;
    this.accepting = accepting;
    if (accepting) this.rejoined++;
    else this.left++;
    this.forEachListener((s) => (accepting ? this.offer(s, 2) : this.takeOut(s, 2)), accepting ? "rejoin" : "leave");
  }

  /** The soft mark's callback (Admission's onSoft): the same for tier 1, at the soft mark and below the resume mark. */
  soft(first: boolean): void {
    if (this.stopped || first === this.first) return;
    this.first = first;
    this.forEachListener((s) => (first ? this.offer(s, 1) : this.takeOut(s, 1)), first ? "rejoin tier 1 of" : "leave tier 1 of");
  }

  private forEachListener(fn: (s: ServiceSocket) => void, what?: string): void {
    for (const { svc, sockets } of this.running()) {
      if (svc.protocol !== "tcp") continue;
      for (const s of sockets) {
        try {
          fn(s);
        } catch (e) {
          if (what) this.say(`${what} the selection of ipv${s.family} group port ${s.port}: ${(e as Error).message}`);
        }
      }
    }
  }

  /** Fill our position of a tier when it is empty (BPF_NOEXIST), with the listener the fd still is (by cookie). */
  private offer(s: ServiceSocket, tier: Tier): void {
    if (this.selection.cookieAt(s.family, s.port, this.position, tier) !== undefined) return;
    if (socketCookie(s.fd) === s.cookie) this.selection.offer(s.family, s.port, this.position, s.fd, true, tier);
  }
}
