import { formatPrefix, type Prefix } from "../config/address";
import { formatPorts } from "../config/ports";
import type { Protocol } from "./binding";
import { InstanceMaps, leaderAlive, sameLeader, TOLD_TO_LEAVE, type InstanceRecord, type Leader } from "./instances";

/*
 * What the control plane (controlplane.ts) is asked and answers: the
 * bindings and services an instance wants, who asks (its claim), an
 * instance's view, one steering look; the overlap rule, and the rules that
 * read a claim against the instance records.
 */

/** A binding as an instance wants it, before it has a service id. */
export interface WantedBinding {
  readonly protocol: Protocol;
  readonly prefix: Prefix;
  readonly lo: number;
  readonly hi: number;
}

/** What an instance wants of a service: its name and bindings. */
export interface WantedService {
  readonly name: string;
  readonly bindings: readonly WantedBinding[];
}

/** Who is asking: an instance's name and leader, and the leader it replaces in an upgrade. */
export interface InstanceClaim {
  readonly name: string;
  readonly leader: Leader;
  /** An upgrade's predecessor (same PID namespace): its record is this instance's to take. */
  readonly predecessor?: number;
  readonly config?: string;
  readonly admin?: string;
}

/** An instance's record and whether it is live. */
export interface InstanceView extends InstanceRecord {
  readonly live: boolean;
  readonly services: string[];
}

/** One look of the steering watchdog (ControlPlane.verifySteering). */
export interface SteeringCheck {
  /** What of the steering is missing; undefined: all in place. */
  readonly lost?: string;
  /**
   * `lost` is a slot recording another reuseport group than ours, which is
   * also what a sibling worker's reload looks like for the moment until our
   * own reload joins its new group: act on it only if it persists.
   */
  readonly settling?: boolean;
  /** A socket not known when asked to watch joined our slots: a newer instance's. */
  readonly replaced: boolean;
  /** Why this instance must leave (another took it over), if it must. */
  readonly leave?: string;
}

/**
 * "instance web (pid 1234; service web)"; a leader known dead whose workers
 * still serve: "instance web (pid 1234, its supervisor gone, workers still serve; ...)".
 */
export function describeInstance(r: InstanceView): string {
  const dead = leaderAlive(r) === false ? ", its supervisor gone, workers still serve" : "";
  const services = r.services.length ? `; service${r.services.length > 1 ? "s" : ""} ${r.services.join(", ")}` : "";
  return `instance ${r.name} (pid ${r.pid}${dead}${services})`;
}

/** The records of `dir` whose leader is alive (pins this edgeproxy cannot open whole: no service names, no sockets). */
export function liveLeaders(dir: string): InstanceView[] {
  const maps = InstanceMaps.openIfPinned(dir);
  if (!maps) return [];
  try {
    return maps.all().filter((r) => leaderAlive(r) !== false).map((r) => ({ ...r, live: true, services: [] }));
  } finally {
    maps.close();
  }
}

/** Do two bindings share a (protocol, address, port)? */
export const overlaps = (a: WantedBinding, b: WantedBinding): boolean =>
  a.protocol === b.protocol && a.prefix.family === b.prefix.family && a.lo <= b.hi && b.lo <= a.hi && prefixesMeet(a.prefix, b.prefix);

/** Do two prefixes share an address (one contains the other)? */
function prefixesMeet(a: Prefix, b: Prefix): boolean {
  const bits = Math.min(a.length, b.length);
  for (let i = 0; i < bits; i++) {
    const bit = (x: Uint8Array) => (x[i >> 3]! >> (7 - (i & 7))) & 1;
    if (bit(a.addr) !== bit(b.addr)) return false;
  }
  return true;
}

export const describeBinding = (b: WantedBinding): string => `${b.protocol} ${formatPrefix(b.prefix)} ports ${formatPorts(b)}`;

/** Is `r` the claimant's own record: its leader's, or its upgrade predecessor's (same PID namespace)? */
export function isMine(claim: InstanceClaim, r: InstanceRecord): boolean {
  if (r.name !== claim.name) return false;
  if (sameLeader(r, claim.leader)) return true;
  return claim.predecessor !== undefined && r.pid === claim.predecessor && r.pidns === claim.leader.pidns;
}

/** The record a claimant writes of itself (ControlPlane.joinLocked), nothing flagged. */
export const claimRecord = (claim: InstanceClaim): InstanceRecord => ({ name: claim.name, ...claim.leader, flags: 0, byPid: 0, by: "", config: claim.config ?? "", admin: claim.admin ?? "" });

/**
 * Why the claimant must leave, going by its name's record `r`, or undefined:
 * the record was flagged by an instance that took its bindings over, or now
 * names another leader (a same-named instance took it over, or restarted
 * after its leader died). Read under the lock, or as a cheap look's guess.
 */
export function toldToLeave(claim: InstanceClaim, r: InstanceRecord | undefined): string | undefined {
  if (!r) return undefined;
  if (r.flags & TOLD_TO_LEAVE) return `instance ${r.by} (pid ${r.byPid}) took its bindings over`;
  if (!sameLeader(r, claim.leader)) return `another instance ${r.name} (pid ${r.pid}) took over`;
  return undefined;
}
