import { existsSync } from "node:fs";
import { join } from "node:path";
import { decodeServiceInfo, EP_SOCKET_MEMBERS, sizes, u32 } from "./abi";
import type { Protocol } from "./binding";
import { MAPS, type Dispatcher } from "./dispatcher";
import { netnsInode, tryPinLock } from "./pins";
import type { Registry } from "./registry";
import { toldToLeave, type InstanceClaim, type SteeringCheck } from "./claims";
import type { ControlPlane } from "./controlplane";
import { mapInfo, withPinned } from "../ebpf/map";
import { linkInfo, programInfo } from "../ebpf/object";
import { localResourceOfError } from "../system/lack";
import { IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF, IN_MOVED_FROM, IN_MOVED_TO, PathWatch } from "../system/inotify";

/*
 * The reads behind the steering watchdog (src/server/watchdog.ts): is what
 * steers a serving process's traffic still in place? Only ControlPlane calls
 * these, under the pin lock, so they never see a change half-made; the
 * look itself (steeringLook, at the end) takes the lock for its full look.
 */

/** A service a process runs, as far as its steering is concerned. */
export interface SteeredService {
  readonly id: number;
  readonly svc: { readonly protocol: Protocol };
  readonly sockets: readonly { readonly family: 4 | 6; readonly port: number }[];
}

/**
 * Maps the programs only count into: where a connection goes never depends
 * on them, so another map (or none) pinned under such a name is no loss of
 * steering. That happens without anyone tampering: pins of a version that
 * lacked a counters map (ep_reuse_tier_counters came with the two tiers)
 * get it created by the serve that upgrades them (pins.ts upgradeProgram),
 * while the processes already serving hold their own.
 */
const COUNTERS_ONLY: ReadonlySet<string> = new Set(["ep_counters", "ep_limit_counters", "ep_reuse_counters", "ep_reuse_tier_counters"]);

/** The kernel ids of the maps this process holds that steering depends on, by pin name. */
export function heldMapIds(d: Dispatcher): Map<string, number> {
  return new Map(MAPS.filter((m) => !COUNTERS_ONLY.has(m)).map((m) => [m, mapInfo(d.maps[m].fd, `read info of map ${m}`).id]));
}

/**
 * Are the maps pinned in `dir` the ones `d` holds? A process whose pins were
 * removed, and then re-created by another start, holds orphaned maps: it must
 * not remove the new pins when its own services are gone from them.
 */
export function pinsAreOurs(d: Dispatcher, dir: string): boolean {
  try {
    return withPinned(join(dir, "ep_services"), "pinned map ep_services", (fd) => mapInfo(fd).id) === mapInfo(d.maps.ep_services.fd).id;
  } catch {
    return false;
  }
}

/**
 * What is missing of the steering of `running` (undefined: all in place):
 * the pinned directory, the link attached to this namespace and running the
 * pinned program, every pinned map being the map this process holds (by
 * kernel id), each running service still registered under its id, and each
 * of its slots recording our reuseport group and holding a socket. Any
 * socket in the slot will do: any member entry reaches the whole group
 * (members.ts), and an upgrade's successor overwrites ours on purpose.
 */
export function missingSteering(d: Dispatcher, registry: Registry, dir: string, heldIds: ReadonlyMap<string, number>, running: ReadonlyMap<string, SteeredService>): { why: string; settling?: true } | undefined {
  const why = missingPins(dir, heldIds);
  if (why) return { why };
  return missingServices(d, registry, running);
}

/** The services part of missingSteering: maps this process holds, looked up (no pin opened). */
export function missingServices(d: Dispatcher, registry: Registry, running: ReadonlyMap<string, SteeredService>): { why: string; settling?: true } | undefined {
  for (const [name, r] of running) {
    // One lookup per service of ours, not a walk of every service.
    const info = d.maps.ep_services.lookup(u32(r.id), new Uint8Array(sizes.ep_service_info));
    if (!info || decodeServiceInfo(info).name !== name) return { why: `service ${name} is no longer registered in the dispatcher` };
    for (const s of r.sockets) {
      const slot = () => `service ${name} ${r.svc.protocol}/ipv${s.family}`;
      // A sibling worker that reloaded first moved a restarted UDP service to a new group (reload.ts): transient.
      if (registry.groupPort(r.id, r.svc.protocol, s.family) !== s.port) return { why: `${slot()}: the dispatcher records another socket group than ours (port ${s.port})`, settling: true };
      let any = false;
      for (let m = 0; m < EP_SOCKET_MEMBERS && !any; m++) any = d.hasSocket(r.id, r.svc.protocol, s.family, m);
      if (!any) return { why: `${slot()}: no socket registered (its connections are refused)` };
    }
  }
  return undefined;
}

/** What inotify reports of the pin directory: a pin made, removed or renamed there, or the directory itself gone or moved. */
const PIN_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF;

/**
 * The steering watchdog's cheap look. A pin is removed or replaced only
 * through its directory: an unlink, a new pin (BPF_OBJ_PIN makes a dentry
 * there through vfs_mkobj, kernel/bpf/inode.c), a rename; each an inotify
 * event on the directory (fsnotify is in the VFS, bpffs included; checked
 * by test/steering.test.ts), and what no event on it tells (a bpffs
 * mounted over it, a parent renamed) shows as its path naming another
 * inode (PathWatch.changed). So while nothing changed since the last full
 * look found all in place, every pin is still the object it verified. The
 * link's pin stays as it was when the link is detached (BPF_LINK_DETACH)
 * or given another program (BPF_LINK_UPDATE): so at every look the link is
 * opened for its namespace and program (BPF_PROG_QUERY on the namespace
 * would spare the descriptor but needs CAP_NET_ADMIN, which a serving
 * process no longer holds). Anything else (a change, the link elsewhere or
 * running another program, no watch at all) is for a full look
 * (missingSteering, under the pin lock), which alone names a loss: a look
 * without the lock can only say "in place".
 */
export class PinWatch {
  /** undefined: inotify could not watch the directory; every look is then a full one. */
  private events: PathWatch | undefined;
  /** The program pinned when the last full look found all in place. */
  private progId: number | undefined;
  /** This process's network namespace (a process never changes it): a stat of /proc/self/ns/net less per look. */
  private readonly netns = netnsInode();
  private readonly link: string;
  private closed = false;
  /** Whether a refused watch was said (once per process: the checks go on correct, only dearer). */
  private said = false;

  constructor(private readonly dir: string) {
    this.link = join(dir, "link");
    this.watch();
  }

  /** Watch the directory the path names now; undefined (said once) when inotify refuses. */
  private watch(): void {
    try {
      this.events = new PathWatch(this.dir, PIN_EVENTS);
    } catch (e) {
      this.events = undefined;
      // Still correct (every look a full one, under the pin lock), but dearer: said once, with the likely cause.
      if (this.said) return;
      this.said = true;
      process.stderr.write(`edgeproxy: steering watchdog: cannot watch ${this.dir} with inotify (${(e as Error).message}); every check reads the pins under their lock (fs.inotify.max_user_instances may be too low)\n`);
    }
  }

  /**
   * Before a full look: forget what changed until now (the look sees it;
   * what comes after is for the next cheap look). false: no watch.
   *
   * A directory replaced at the path (removed and made again, renamed
   * away and another put there, a bpffs mounted over it) is watched no
   * more: no event of the new one comes. So the path is watched afresh
   * here, before the full look that vouches for what it names, and the
   * looks after it can be cheap again. Likewise a watch inotify refused
   * is asked for again (said the first time it is refused).
   */
  begin(): boolean {
    // Only verified() after this look may vouch again: not what an earlier look found.
    this.progId = undefined;
    if (this.closed) return false;
    if (!this.events || this.events.moved()) {
      this.events?.close();
      this.watch();
    }
    if (!this.events) return false;
    this.events.changed();
    return true;
  }

  /** The full look that followed begin() (true) found everything in place. */
  verified(began: boolean): void {
    if (!began) return;
    try {
      // The program pinned now: if it is another than the one the look saw, its pin was an event after begin().
      this.progId = withPinned(join(this.dir, "prog"), "pinned program", (fd) => programInfo(fd).id);
    } catch {
      this.progId = undefined;
    }
  }

  /** Is the steering in place as the last full look found it? false: look fully (also when nothing was verified yet). */
  unchanged(): boolean {
    const progId = this.progId;
    if (progId === undefined || this.events === undefined || this.events.changed()) return (this.progId = undefined), false;
    try {
      const link = withPinned(this.link, "pinned link", (fd) => linkInfo(fd));
      return link.netnsIno === this.netns && link.progId === progId;
    } catch {
      return false;
    }
  }

  close(): void {
    this.closed = true;
    this.events?.close();
    this.events = undefined;
    this.progId = undefined;
  }
}

/** The pins: the directory, the link in this namespace running the pinned program, the maps this process holds. */
function missingPins(dir: string, heldIds: ReadonlyMap<string, number>): string | undefined {
  if (!existsSync(dir)) return `the pinned dispatcher ${dir} was removed`;
  try {
    const progId = withPinned(join(dir, "prog"), "pinned program", (fd) => programInfo(fd).id);
    const link = withPinned(join(dir, "link"), "pinned link", (fd) => linkInfo(fd));
    if (link.netnsIno !== netnsInode()) return `the sk_lookup link ${join(dir, "link")} is detached from this network namespace`;
    if (link.progId !== progId) return `the sk_lookup link runs program id ${link.progId}, not the pinned ${progId}`;
    for (const [name, id] of heldIds) {
      const pinned = withPinned(join(dir, name), `pinned map ${name}`, (fd) => mapInfo(fd).id);
      if (pinned !== id) return `map ${name} pinned in ${dir} is another map (id ${pinned}, ours ${id})`;
    }
  } catch (e) {
    // A pin this process could not open for its own lack (EMFILE, ENOMEM) is no finding about the pins: the caller skips the look.
    if (localResourceOfError(e)) throw e;
    return `${(e as Error).message}`;
  }
  return undefined;
}

/** The cookies registered in `running`'s slots now (ours and our sibling workers'). */
export function slotCookies(d: Dispatcher, running: ReadonlyMap<string, SteeredService>): Set<bigint> {
  const out = new Set<bigint>();
  for (const r of running.values()) {
    for (const s of r.sockets) {
      for (let m = 0; m < EP_SOCKET_MEMBERS; m++) {
        const c = d.socketCookie(r.id, r.svc.protocol, s.family, m);
        if (c !== undefined) out.add(c);
      }
    }
  }
  return out;
}

/**
 * The steering watchdog's look (src/server/watchdog.ts, through
 * ControlPlane.verifySteering): what of `running`'s steering is missing,
 * whether a socket not `known` joined its slots, and why `claim`'s instance
 * must leave. Reads only; the watchdog never opens a pin itself.
 *
 * With `watch`, first a cheap look without the lock: every pin still the
 * object the last full look verified (nothing changed in their directory
 * since, PinWatch), the link still attached here running the pinned program, our
 * services and sockets registered, no takeover recorded, no new socket in
 * our slots: in place,
 * and that is all a look without the lock may conclude (a change half-made
 * by another process can only look like a loss, which the full look then
 * judges). Otherwise, and without `watch`, the full look: under the pin
 * lock when it is free now (undefined when another process holds it: the
 * next look sees), opening every pin.
 */
export function steeringLook(
  plane: Pick<ControlPlane, "bpffs" | "dispatcher" | "registry" | "pinned" | "instances">,
  running: ReadonlyMap<string, SteeredService>,
  heldIds: ReadonlyMap<string, number>,
  claim: InstanceClaim,
  known?: ReadonlySet<bigint>,
  watch?: PinWatch,
): SteeringCheck | undefined {
  const d = plane.dispatcher;
  if (watch?.unchanged() && !missingServices(d, plane.registry, running) && !toldToLeave(claim, plane.instances.get(claim.name)) && !joined(d, running, known)) return { replaced: false };
  const look = tryPinLock(plane.bpffs, (): SteeringCheck => {
    // Before the look, so a pin replaced after the look read it is an event for the next cheap look.
    const began = watch?.begin() ?? false;
    const lost = missingSteering(d, plane.registry, plane.pinned.dir, heldIds, running);
    if (lost) return { lost: lost.why, replaced: false, ...(lost.settling ? { settling: true } : {}) };
    const leave = toldToLeave(claim, plane.instances.get(claim.name));
    const replaced = joined(d, running, known);
    if (!leave && !replaced) watch?.verified(began);
    return { replaced, ...(leave ? { leave } : {}) };
  });
  if (look === "busy") return undefined;
  if (look === "gone") return { lost: `${plane.bpffs}/edgeproxy was removed`, replaced: false };
  return look;
}

/** A socket not `known` is in `running`'s slots (false when nothing is known). */
function joined(d: Dispatcher, running: ReadonlyMap<string, SteeredService>, known: ReadonlySet<bigint> | undefined): boolean {
  if (!known) return false;
  for (const c of slotCookies(d, running)) if (!known.has(c)) return true;
  return false;
}
