import { parseAddress, prefixContains } from "../config/address";
import { ConfigError } from "../errors";
import { EP_SOCKET_MEMBERS } from "./abi";
import type { Dispatcher } from "./dispatcher";
import { InstanceMaps, leaderAlive, sameLeader, TOLD_TO_LEAVE, type InstanceRecord } from "./instances";
import { claimRecord, describeBinding, describeInstance, isMine, liveLeaders, overlaps, type InstanceClaim, type InstanceView, type SteeringCheck, type WantedBinding, type WantedService } from "./claims";
import { openPinned, pinDir, removePinned, upgradeProgram, withPinLock, type Pinned, type ProgramUpgrade } from "./pins";
import { Registry, type RegistrySnapshot } from "./registry";
import { heldMapIds, PinWatch, pinsAreOurs, slotCookies, steeringLook, type SteeredService } from "./verify";

/*
 * The one owner of the namespace's pinned state. Every change goes through
 * a whole operation here, under the pin lock: it checks first (names,
 * bindings, conflicts with live instances), then writes the stored state
 * (services, bindings, rules, sockets, instance records), then rebuilds the
 * lookup tables in one generation switch (Registry.commit); a failure at any
 * step puts the stored state back and rebuilds again, so the live tables are
 * never left half-changed. As cloudflare/tubular's Dispatcher, bindings are
 * applied as the difference between what is wanted and what is installed
 * (Registry.setBindings); unlike it, the switch is atomic (generations).
 */

export { describeBinding, describeInstance, overlaps, type InstanceClaim, type InstanceView, type SteeringCheck, type WantedBinding, type WantedService } from "./claims";

export class ControlPlane {
  private constructor(
    readonly bpffs: string,
    readonly pinned: Pinned,
    readonly registry: Registry,
    readonly instances: InstanceMaps,
  ) {}

  get dispatcher(): Dispatcher {
    return this.pinned.dispatcher;
  }

  /**
   * Under the pin lock: open the namespace's pinned state (created when
   * `create` and absent; a serve's `upgrade` switches a differing program),
   * then run `fn` with it. When fn throws, pins this call created are
   * removed and the plane closed; otherwise the plane is fn's to keep or close.
   */
  static with<T>(bpffs: string, image: Uint8Array, options: { create: boolean; upgrade?: boolean }, fn: (plane: ControlPlane) => T): T | undefined {
    return withPinLock(bpffs, () => {
      const pinned = openPinned(bpffs, image, options.create, options.upgrade ?? options.create);
      if (!pinned) return undefined;
      let plane: ControlPlane;
      try {
        plane = new ControlPlane(bpffs, pinned, new Registry(pinned.dispatcher), InstanceMaps.open(pinned.dir));
      } catch (e) {
        pinned.dispatcher.close();
        if (pinned.created) removePinned(bpffs);
        throw e;
      }
      try {
        return fn(plane);
      } catch (e) {
        plane.close();
        if (pinned.created) removePinned(bpffs);
        throw e;
      }
    });
  }

  /**
   * Refuse, in one line and before anything is written, a start that a live
   * instance is in the way of (serve's and a supervisor's early check; the
   * start checks again under the same lock as its changes). Pins this
   * edgeproxy cannot open as they are are left to the start, which may
   * upgrade them.
   */
  static refuseConflict(bpffs: string, image: Uint8Array, claim: InstanceClaim, wanted: readonly WantedService[]): void {
    let line: string | undefined;
    try {
      line = ControlPlane.with(bpffs, image, { create: false, upgrade: false }, (plane) => {
        try {
          return plane.conflictLocked(claim, wanted)?.line;
        } finally {
          plane.close();
        }
      });
    } catch {
      return;
    }
    if (line) throw new ConfigError(`instance ${claim.name}`, `refused, nothing changed: ${line}`);
  }

  /** The live instances of the namespace (none when nothing is pinned): for `down`, control commands and health. */
  static live(bpffs: string, image: Uint8Array): InstanceView[] {
    return (
      ControlPlane.with(bpffs, image, { create: false, upgrade: false }, (plane) => {
        try {
          return plane.liveInstances();
        } finally {
          plane.close();
        }
      }) ?? []
    );
  }

  /**
   * `down`: remove every pin of the namespace (steering stops), under one
   * lock with the look at who serves through them. Refused, with one line
   * naming them, while instances are live (they would go on running with
   * nothing steered to them), or when this edgeproxy cannot read the pins to
   * tell; `force` removes anyway (each live instance's watchdog notices within
   * a second and exits 1). removed: false when nothing was pinned.
   */
  static down(bpffs: string, image: Uint8Array, force: boolean): { removed: boolean; live: InstanceView[] } {
    return withPinLock(bpffs, () => {
      let live: InstanceView[] = [];
      let unreadable: string | undefined;
      try {
        const pinned = openPinned(bpffs, image, false, false);
        if (!pinned) return { removed: false, live };
        try {
          const maps = InstanceMaps.openIfPinned(pinned.dir);
          if (maps) {
            const plane = new ControlPlane(bpffs, pinned, new Registry(pinned.dispatcher), maps);
            live = plane.liveInstances();
            maps.close();
          }
        } finally {
          pinned.dispatcher.close();
        }
      } catch (e) {
        // Maps this edgeproxy cannot use (another version's): the instance records are
        // ours to read still; a live leader among them refuses, as above.
        try {
          live = liveLeaders(pinDir(bpffs));
        } catch {
          unreadable = (e as Error).message;
        }
      }
      const dir = pinDir(bpffs);
      if (!force && unreadable) throw new ConfigError("down", `cannot tell which instances serve here (${unreadable}); --force removes ${dir} anyway`);
      if (!force && live.length) {
        const them = live.length === 1 ? "it" : "them";
        throw new ConfigError("down", `refused: ${live.length === 1 ? "an instance serves" : "instances serve"} here: ${live.map(describeInstance).join(", ")}; stop ${them} first, or --force (${live.length === 1 ? "it then exits" : "they then exit"} 1 within a second)`);
      }
      return { removed: removePinned(bpffs), live };
    });
  }

  /** Switch the pinned program to `image`'s, keeping the maps (pins.ts upgradeProgram), under the lock. */
  static upgradeProgram(bpffs: string, image: Uint8Array): ProgramUpgrade {
    return withPinLock(bpffs, () => upgradeProgram(bpffs, image));
  }

  /** Run fn holding the pin lock (fn calls the *Locked operations). */
  locked<T>(fn: () => T): T {
    return withPinLock(this.bpffs, fn);
  }

  /**
   * Change the stored state as one operation (caller holds the lock): snapshot
   * `names`' services and every instance record, run `change`, commit (unless
   * `change` commits itself, `commits`); on any failure put them back and
   * commit again, then rethrow.
   */
  transactionLocked<T>(names: Iterable<string>, own: () => ReadonlySet<number>, change: () => T, commits = false): T & { skipped: string[] } {
    const before = this.snapshot(names);
    try {
      const out = change();
      const skipped = commits ? [] : this.registry.commit(own()).skipped;
      return Object.assign(out as object, commits ? {} : { skipped }) as T & { skipped: string[] };
    } catch (e) {
      this.restore(before);
      this.registry.commit(own());
      throw e;
    }
  }

  private snapshot(names: Iterable<string>): { registry: RegistrySnapshot; records: InstanceRecord[]; owners: Map<number, string> } {
    return { registry: this.registry.snapshot(names), records: this.instances.all(), owners: this.instances.ownership() };
  }

  private restore(s: ReturnType<ControlPlane["snapshot"]>): void {
    this.registry.restore(s.registry);
    for (const r of this.instances.all()) if (!s.records.some((x) => x.name === r.name)) this.instances.remove(r.name);
    for (const r of s.records) this.instances.put(r);
    const ids = new Map(this.registry.services().map((e) => [e.id, e.name]));
    for (const [id] of this.instances.ownership()) if (!s.owners.has(id)) this.instances.setOwner(id, undefined);
    for (const [id, name] of s.owners) if (ids.has(id)) this.instances.setOwner(id, name);
  }

  /** Does any of the service's slots hold a socket (the kernel drops closed ones)? */
  private hasSockets(id: number): boolean {
    for (const protocol of ["tcp", "udp"] as const) {
      for (const family of [4, 6] as const) for (let m = 0; m < EP_SOCKET_MEMBERS; m++) if (this.dispatcher.hasSocket(id, protocol, family, m)) return true;
    }
    return false;
  }

  private servicesOf(instance: string): { id: number; name: string }[] {
    const owners = this.instances.ownership();
    return this.registry.services().filter((s) => owners.get(s.id) === instance);
  }

  /**
   * Live: its leader is alive (same PID namespace: pid and start time), or,
   * where that cannot be told or the leader is gone, one of its services
   * still has a registered socket (which names an open socket, whatever its
   * owner's namespace: see members.ts).
   */
  private isLive(r: InstanceRecord): boolean {
    if (leaderAlive(r) === true) return true;
    return this.servicesOf(r.name).some((s) => this.hasSockets(s.id));
  }

  /** Every instance record, live or not (call under the lock, or accept a racy view). */
  instanceViews(): InstanceView[] {
    return this.instances.all().map((r) => ({ ...r, live: this.isLive(r), services: this.servicesOf(r.name).map((s) => s.name) }));
  }

  /** The instances that are live now (for `down`, control commands and health). */
  liveInstances(): InstanceView[] {
    return this.instanceViews().filter((r) => r.live);
  }

  /**
   * The one line that refuses `claim` wanting `wanted`, or undefined: a live
   * instance (not this one, nor the one it upgrades) of the same name, or one
   * owning a service of the same name or a binding that overlaps a wanted one.
   */
  conflictLocked(claim: InstanceClaim, wanted: readonly WantedService[]): { record: InstanceRecord; line: string } | undefined {
    for (const r of this.instances.all()) {
      if (isMine(claim, r) || !this.isLive(r)) continue;
      // Its leader (supervisor) is known dead while its orphaned workers still serve: a crash, not a
      // stop. The same instance started again takes their place (they drain when its sockets join
      // their reuseport groups), as an upgrade's successor does; no --take-over needed.
      if (r.name === claim.name && leaderAlive(r) === false) continue;
      const who = `instance ${r.name} (pid ${r.pid}${r.config ? `, config ${r.config}` : ""})`;
      const fix = "stop it first, or start with --take-over to replace it";
      if (r.name === claim.name) return { record: r, line: `${who} is running: ${fix}` };
      const theirs = this.servicesOf(r.name);
      for (const w of wanted) {
        if (theirs.some((s) => s.name === w.name)) return { record: r, line: `${who} serves service ${w.name} already: ${fix}` };
      }
      for (const s of theirs) {
        for (const b of this.registry.bindings(s.id)) {
          const mine = wanted.flatMap((w) => w.bindings.map((x) => ({ w, x }))).find(({ x }) => overlaps(x, b));
          if (mine) return { record: r, line: `${who} serves ${describeBinding(b)} (service ${s.name}), which overlaps ${describeBinding(mine.x)} of service ${mine.w.name}: ${fix}` };
        }
      }
    }
    return undefined;
  }

  /**
   * Make `claim` an instance here, as part of a start (caller holds the lock
   * and runs this inside a transaction, after conflictLocked): records of
   * dead instances go with their services; live conflicting ones are refused,
   * or with `takeOver` told to leave (their record flagged), their services
   * of wanted names handed over and their overlapping bindings removed; then
   * this instance's record is written.
   */
  joinLocked(claim: InstanceClaim, wanted: readonly WantedService[], takeOver: boolean): string[] {
    const told: string[] = [];
    // Each round hands one instance's conflicts over, so this ends: bounded anyway.
    for (let round = 0; round <= this.instances.all().length; round++) {
      const c = this.conflictLocked(claim, wanted);
      if (!c) break;
      if (!takeOver) throw new ConfigError(`instance ${claim.name}`, `refused, nothing changed: ${c.line}`);
      this.takeOverLocked(claim, c.record, wanted);
      told.push(`${c.record.name} (pid ${c.record.pid})`);
    }
    for (const r of this.instances.all()) if (!isMine(claim, r) && !this.isLive(r)) this.removeInstanceLocked(r.name);
    this.instances.put(claimRecord(claim));
    return told;
  }

  private takeOverLocked(claim: InstanceClaim, r: InstanceRecord, wanted: readonly WantedService[]): void {
    const names = new Set(wanted.map((w) => w.name));
    const all = wanted.flatMap((w) => w.bindings);
    for (const s of this.servicesOf(r.name)) {
      if (names.has(s.name)) this.instances.setOwner(s.id, claim.name);
      else for (const b of this.registry.bindings(s.id)) if (all.some((x) => overlaps(x, b))) this.registry.removeBinding(b);
    }
    // Same name: this record replaces it (the leaver sees another leader in it); else flag it.
    if (r.name === claim.name) this.instances.put(claimRecord(claim));
    else this.instances.put({ ...r, flags: r.flags | TOLD_TO_LEAVE, byPid: claim.leader.pid, by: claim.name });
  }

  /** Forget an instance: its record, and its services that no socket serves any more. */
  removeInstanceLocked(name: string): void {
    for (const s of this.servicesOf(name)) {
      if (!this.hasSockets(s.id)) this.registry.remove(s.id);
      this.instances.setOwner(s.id, undefined);
    }
    this.instances.remove(name);
  }

  /** Mark service `id` as `instance`'s, or (`owns` false) as no instance's. Caller holds the lock. */
  ownLocked(instance: string, id: number, owns = true): void {
    this.instances.setOwner(id, owns ? instance : undefined);
  }

  /**
   * An instance's process leaves: after its sockets were withdrawn, services
   * no socket serves any more are removed, and its record with its last
   * service when the record is still its own. With no service left the pins
   * go (steering stops); otherwise the tables are rebuilt. Caller holds the lock.
   */
  leaveLocked(claim: InstanceClaim, emptied: readonly number[], own: ReadonlySet<number>): void {
    for (const id of emptied) {
      this.registry.remove(id);
      this.instances.setOwner(id, undefined);
    }
    const r = this.instances.get(claim.name);
    if (r && sameLeader(r, claim.leader) && this.servicesOf(claim.name).length === 0) this.instances.remove(claim.name);
    // Only pins whose maps are ours: after ours were removed (down --force), a newer start may have pinned its own.
    if (this.registry.services().length === 0) {
      if (pinsAreOurs(this.dispatcher, this.pinned.dir)) removePinned(this.bpffs);
    } else this.registry.commit(own);
  }

  /** The kernel ids of the maps this plane holds (what verifySteering compares the pins with). */
  heldMapIds(): Map<string, number> {
    return heldMapIds(this.dispatcher);
  }

  /** The socket cookies in `running`'s slots now (a process's and its sibling workers'). */
  slotCookies(running: ReadonlyMap<string, SteeredService>): Set<bigint> {
    return slotCookies(this.dispatcher, running);
  }

  /** What the watchdog's cheap looks compare the pins with (verifySteering's `watch`). */
  pinWatch(): PinWatch {
    return new PinWatch(this.pinned.dir);
  }

  /** The steering watchdog's look (verify.ts steeringLook, which says what it reads and when it takes the lock). */
  verifySteering(running: ReadonlyMap<string, SteeredService>, heldIds: ReadonlyMap<string, number>, claim: InstanceClaim, known?: ReadonlySet<bigint>, watch?: PinWatch): SteeringCheck | undefined {
    return steeringLook(this, running, heldIds, claim, known, watch);
  }

  /**
   * Refuse bindings that overlap a live instance's other than `instance`'s
   * (an admin API or `bind` change must not steal another's traffic).
   */
  checkBindingsLocked(instance: string | undefined, service: string, list: readonly WantedBinding[]): void {
    for (const r of this.instances.all()) {
      if (r.name === instance || !this.isLive(r)) continue;
      for (const s of this.servicesOf(r.name)) {
        if (s.name === service) continue;
        for (const b of this.registry.bindings(s.id)) {
          const hit = list.find((x) => overlaps(x, b));
          if (hit) throw new ConfigError(`bind ${service}`, `${describeBinding(hit)} overlaps ${describeBinding(b)} of service ${s.name} of instance ${r.name} (pid ${r.pid}); nothing changed`);
        }
      }
    }
  }

  /**
   * Refuse bindings that would steer a live instance's TCP admin listener
   * (its record names it): the admin API is never on a steered port, on any
   * change path, not only at start (bindings.ts rejectAdminReach).
   */
  checkAdminReachLocked(service: string, list: readonly WantedBinding[]): void {
    for (const r of this.instances.all()) {
      const at = r.admin.lastIndexOf(":");
      if (at < 0 || r.admin.startsWith("/") || !this.isLive(r)) continue;
      const addr = parseAddress(r.admin.slice(0, at).replace(/^\[|\]$/g, ""));
      const port = Number(r.admin.slice(at + 1));
      if (!addr) continue;
      const hit = list.find((b) => b.protocol === "tcp" && b.lo <= port && port <= b.hi && prefixContains(b.prefix, addr));
      if (hit) throw new ConfigError(`bind ${service}`, `${describeBinding(hit)} would steer the admin API of instance ${r.name} (pid ${r.pid}) on ${r.admin}; the admin API must not be reachable from steered ports; nothing changed`);
    }
  }

  close(): void {
    this.instances.close();
    this.dispatcher.close();
  }
}
