import type { ControlPlane, InstanceClaim, SteeringCheck } from "../dispatcher/controlplane";
import type { PinWatch, SteeredService } from "../dispatcher/verify";
import { every } from "./housekeeping";
import { localResourceOfError } from "../system/lack";

/*
 * The truth about steering (issue 16, item 4). The pinned dispatcher can go
 * while an instance serves: `edgeproxy down --force`, `rm -rf` of the pins,
 * another tool detaching the link or deleting SOCKMAP entries. The program
 * then no longer runs (the link went with its last reference) or no longer
 * finds our sockets, and every new connection and UDP flow on the steered
 * addresses is refused, while the process itself looks healthy. So every
 * serving process checks, every WATCH_MS, that what steers its traffic is in
 * place, through the ControlPlane (the one owner of the pinned state): a
 * cheap look (no inotify event on the pin directory since the last full
 * look: the pins are the objects it verified; the link opened for its
 * namespace and program; our services' entries looked up), and the full
 * look, under the pin lock, whenever anything differs
 * (src/dispatcher/verify.ts, PinWatch); a loss is always named by a full
 * look. The same look reads
 * the instance's record: another instance that took this one over
 * (--take-over, or the same instance restarted after its supervisor died)
 * says so there.
 *
 * When the steering is gone, the instance stops: it says so in one line, its
 * health check fails from then on, it drains (open connections do not need
 * the steering) and exits 1. It does not put the pins back: `down` and a
 * deleted pin are someone's deliberate act, which a process re-pinning
 * behind their back would undo; a restart (systemd's Restart=on-failure)
 * builds the steering anew through the one start path, with every check of a
 * start. Workers run it (they keep CAP_BPF; a supervisor keeps none) and tell
 * their supervisor over IPC.
 */

/** How often the steering is verified: a loss is noticed within this plus one check, well inside the second promised (a busy machine delays timers). */
export const WATCH_MS = 250;
/**
 * A slot recording another group than ours is acted on only after this:
 * with workers, the one that reloads first moves a restarted UDP service to
 * a new group, and a sibling's look until its own reload joins it (a few
 * ms; longer on a loaded machine) would otherwise take the whole instance
 * down (test/descriptors.test.ts, --workers 2). A real takeover is still
 * noticed within about a second and a quarter.
 */
const SETTLE_MS = 1_000;

/** What the watchdog looks at: a running Server (structurally, so the watchdog needs no Server import). */
export interface Watched {
  readonly plane: ControlPlane;
  readonly claim: InstanceClaim;
  readonly running: ReadonlyMap<string, SteeredService>;
}

/** What the watchdog reports, each at most once. */
export interface WatchdogEvents {
  /** The steering is gone (then the watchdog stops). */
  readonly lost: (why: string) => void;
  /** After watchForSuccessor(): a socket of a newer instance joined our slots (each check while true). */
  readonly replaced?: () => void;
  /** Another instance took this one over (its record says so): true once acted on (not while our own upgrade hands over). */
  readonly leave?: (why: string) => boolean;
}

export class SteeringWatchdog {
  lost: string | undefined;
  private stopTimer: (() => void) | undefined;
  private readonly heldIds: Map<string, number>;
  /** The pins as the last full look verified them: most looks only ask inotify whether they changed (ControlPlane.verifySteering). */
  private readonly pins: PinWatch;
  private known: Set<bigint> | undefined;
  private stopped = false;
  private left = false;
  /** The last look could not be made for lack of descriptors or memory (said once until a look is made). */
  private lacking = false;

  constructor(
    private readonly watched: Watched,
    private readonly on: WatchdogEvents,
  ) {
    this.heldIds = watched.plane.heldMapIds();
    this.pins = watched.plane.pinWatch();
  }

  start(): void {
    // On the process's housekeeping timer (housekeeping.ts), which never keeps a stopped process alive (the serve holds its loop open itself).
    this.stopTimer ??= every(WATCH_MS, () => this.check());
  }

  /** No more checks (the process withdraws its services itself: a stop, a drain). */
  stop(): void {
    this.stopped = true;
    this.stopTimer?.();
    this.pins.close();
  }

  /**
   * From now on report (replaced) a socket that joins our slots: the
   * sockets registered now are ours and our sibling workers', and with our
   * supervisor gone nothing restarts a sibling, so a new one is a newer
   * instance's (which joined our reuseport groups, as an upgrade does).
   */
  watchForSuccessor(): void {
    this.known ??= this.watched.plane.slotCookies(this.watched.running);
  }

  /**
   * For /healthz: undefined when this process's traffic is steered to it
   * (checked now), else why not. A stopped watchdog's process is withdrawing
   * its services (a stop, a drain): not steered either.
   */
  health(): string | undefined {
    const why = this.check();
    if (why) return `steering lost: ${why}`;
    return this.stopped ? "stopping: its services are withdrawn" : undefined;
  }

  /** A settling finding first seen at `since`. */
  private settling: { why: string; since: number } | undefined;

  /** The settling finding `why` has held for SETTLE_MS (a sibling worker's reload is over well within it). */
  private persisted(why: string): boolean {
    const now = performance.now();
    if (this.settling?.why !== why) this.settling = { why, since: now };
    return now - this.settling.since >= SETTLE_MS;
  }

  /** Check now; the reason the steering is gone, or undefined (in place, or not checkable this instant). */
  check(): string | undefined {
    if (this.lost || this.stopped) return this.lost;
    let result: SteeringCheck | undefined;
    try {
      result = this.watched.plane.verifySteering(this.watched.running, this.heldIds, this.watched.claim, this.known, this.pins);
    } catch (e) {
      // Out of descriptors or memory (an admin client flood, a burst of connections): this look could not
      // be made, which says nothing about the steering. No verdict, said once per spell; the next tick looks again.
      const lack = localResourceOfError(e);
      if (!lack) result = { lost: `checking the steering failed: ${(e as Error).message}`, replaced: false };
      else if (!this.lacking) {
        this.lacking = true;
        process.stderr.write(`edgeproxy: steering check skipped: this process is out of ${lack} (${(e as Error).message}); checking again every tick\n`);
      }
      if (lack) return this.lost;
    }
    this.lacking = false;
    if (result?.lost && result.settling && !this.persisted(result.lost)) return undefined;
    // A clean look ends a settling finding; a busy lock (undefined) says nothing either way.
    if (result && !result.lost) this.settling = undefined;
    if (result?.lost) {
      this.lost = result.lost;
      this.stop();
      this.on.lost(result.lost);
      return this.lost;
    }
    if (result?.leave && !this.left) this.left = this.on.leave?.(result.leave) ?? false;
    if (result?.replaced) this.on.replaced?.();
    return this.lost;
  }
}
