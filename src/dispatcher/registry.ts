import { ConfigError } from "../errors";
import { listeners } from "../system/listeners";
import * as abi from "./abi";
import { decodeGroup, encodeGroup } from "./reuseabi";
import type { Binding, Protocol } from "./binding";
import type { Dispatcher } from "./dispatcher";
import type { ServiceAccess } from "./generation";
import { holesForListeners } from "./holes";

/**
 * ep_bindings' value (the program never reads it): bit 0 says this binding
 * steers even where another socket already listens (`bind --take-over`). Per
 * binding, so an unbind takes it away with the binding; a config's
 * `take_over` is its services' flag (EP_SERVICE_TAKE_OVER), set at every start and reload.
 */
const BINDING_TAKE_OVER = 1;

/** A service as stored in ep_services. */
export interface ServiceEntry {
  readonly id: number;
  readonly name: string;
  readonly takeOver: boolean;
}

export interface SocketEntry {
  readonly service: number;
  readonly protocol: Protocol;
  readonly family: 4 | 6;
  /** Which of the slot's EP_SOCKET_MEMBERS entries (one per worker). */
  readonly member: number;
  /** Who registered it, as that process saw itself: for display only (see owner()). */
  readonly pid: number;
  readonly fd: number;
  /** The socket's cookie (SO_COOKIE): unique per boot, whatever namespace the socket's owner is in. */
  readonly cookie: bigint;
}

/** Services' stored state by name; undefined where the service did not exist. */
export type RegistrySnapshot = Map<string, { entry: ServiceEntry; bindings: abi.StoredBinding[]; rules: abi.StoredRule[] } | undefined>;

/**
 * The control plane's stored state (services, bindings, access rules, socket
 * owners), kept in the dispatcher's pinned maps, and commit(), which rebuilds
 * the lookup tables from it. Callers hold the pin lock.
 */
export class Registry {
  constructor(readonly dispatcher: Dispatcher) {}

  private get maps() {
    return this.dispatcher.maps;
  }

  services(): ServiceEntry[] {
    const out: ServiceEntry[] = [];
    for (const key of this.maps.ep_services.keys(4)) {
      const v = this.maps.ep_services.lookup(key, new Uint8Array(abi.sizes.ep_service_info));
      if (!v) continue;
      const info = abi.decodeServiceInfo(v);
      out.push({ id: new DataView(key.buffer).getUint32(0, true), name: info.name, takeOver: (info.flags & abi.EP_SERVICE_TAKE_OVER) !== 0 });
    }
    return out.sort((a, b) => a.id - b.id);
  }

  find(name: string): ServiceEntry | undefined {
    return this.services().find((s) => s.name === name);
  }

  /** The service called `name`, created (lowest free id, zeroed counters) when missing. */
  ensure(name: string, takeOver?: boolean): ServiceEntry {
    if (!/^[a-zA-Z0-9_.-]{1,63}$/.test(name)) throw new ConfigError("service", `"${name}": use 1-63 of a-z A-Z 0-9 _ . -`);
    const all = this.services();
    const found = all.find((s) => s.name === name);
    if (found && (takeOver === undefined || found.takeOver === takeOver)) return found;
    let id = found?.id;
    if (id === undefined) {
      const used = new Set(all.map((s) => s.id));
      id = 1;
      while (used.has(id)) id++;
      if (id >= abi.EP_MAX_SERVICES) throw new ConfigError("service", `no room for service ${name}: ${abi.EP_MAX_SERVICES - 1} services at most`);
      this.dispatcher.resetCounters(id);
    }
    const flags = takeOver ?? found?.takeOver ? abi.EP_SERVICE_TAKE_OVER : 0;
    this.maps.ep_services.update(abi.u32(id), abi.encodeServiceInfo(name, flags));
    return { id, name, takeOver: (flags & abi.EP_SERVICE_TAKE_OVER) !== 0 };
  }

  /** Forget a service: its bindings, rules, sockets, owners and groups too. */
  remove(id: number): void {
    this.setBindings(id, []);
    this.setRules(id, []);
    for (const protocol of ["tcp", "udp"] as const) {
      for (const family of [4, 6] as const) {
        for (let m = 0; m < abi.EP_SOCKET_MEMBERS; m++) this.removeSocket(id, protocol, family, m);
        // The group's port may go to another service's group later: its selection record goes too.
        const port = protocol === "tcp" ? this.groupPort(id, protocol, family) : undefined;
        if (port !== undefined) this.dispatcher.selection.removeGroup(family, port);
        this.maps.ep_groups.delete(abi.u32(abi.socketSlot(id, protocol, family)));
      }
    }
    this.maps.ep_services.delete(abi.u32(id));
  }

  bindings(service?: number): abi.StoredBinding[] {
    const out: abi.StoredBinding[] = [];
    for (const key of this.maps.ep_bindings.keys(abi.sizes.ep_binding)) {
      const b = abi.decodeBinding(key);
      if (service !== undefined && b.service !== service) continue;
      const v = this.maps.ep_bindings.lookup(key, new Uint8Array(4));
      out.push(v && (new DataView(v.buffer).getUint32(0, true) & BINDING_TAKE_OVER) ? { ...b, takeOver: true } : b);
    }
    return out;
  }

  /** Every stored binding, grouped by service: one walk of the map (a syscall per key). */
  bindingsByService(): Map<number, abi.StoredBinding[]> {
    const out = new Map<number, abi.StoredBinding[]>();
    for (const b of this.bindings()) {
      let list = out.get(b.service);
      if (!list) out.set(b.service, (list = []));
      list.push(b);
    }
    return out;
  }

  /** Add (or change its take-over); false when it was there already as it is. One lookup, not a walk of the map. */
  addBinding(b: abi.StoredBinding): boolean {
    const key = abi.encodeBinding(b);
    const had = this.maps.ep_bindings.lookup(key, new Uint8Array(4));
    const value = b.takeOver ? BINDING_TAKE_OVER : 0;
    this.maps.ep_bindings.update(key, abi.u32(value));
    return !had || new DataView(had.buffer).getUint32(0, true) !== value;
  }

  removeBinding(b: abi.StoredBinding): boolean {
    return this.maps.ep_bindings.delete(abi.encodeBinding(b));
  }

  /** Replace a service's bindings with `list`. */
  setBindings(service: number, list: readonly abi.StoredBinding[]): void {
    const keep = new Set(list.map((b) => abi.encodeBinding(b).toString()));
    for (const b of this.bindings(service)) if (!keep.has(abi.encodeBinding(b).toString())) this.removeBinding(b);
    for (const b of list) this.maps.ep_bindings.update(abi.encodeBinding(b), abi.u32(b.takeOver ? BINDING_TAKE_OVER : 0));
  }

  rules(service?: number): abi.StoredRule[] {
    return this.maps.ep_rules
      .keys(abi.sizes.ep_rule)
      .map(abi.decodeRule)
      .filter((r) => service === undefined || r.service === service);
  }

  setRules(service: number, list: readonly abi.StoredRule[]): void {
    for (const r of this.rules(service)) this.maps.ep_rules.delete(abi.encodeRule(r));
    for (const r of list) this.maps.ep_rules.update(abi.encodeRule(r), abi.u32(0));
  }

  /**
   * Register the socket open at fd (in this process) as member `member` of a
   * service's slot; pid/fd name its owner for status.
   */
  setSocket(service: number, protocol: Protocol, family: 4 | 6, fd: number, owner: { pid: number; fd: number }, member = 0): void {
    this.dispatcher.setSocket(service, protocol, family, fd, member);
    this.maps.ep_owners.update(abi.u32(abi.memberKey(abi.socketSlot(service, protocol, family), member)), abi.encodeOwner(owner.pid, owner.fd));
  }

  removeSocket(service: number, protocol: Protocol, family: 4 | 6, member = 0): boolean {
    this.maps.ep_owners.delete(abi.u32(abi.memberKey(abi.socketSlot(service, protocol, family), member)));
    return this.dispatcher.removeSocket(service, protocol, family, member);
  }

  /**
   * The member's socket, if one is registered and still open: its cookie, and
   * who registered it (pid and fd as that process saw them). pid/fd are for
   * display only: processes in different PID namespaces (containers sharing a
   * bpffs) have the same pids and fd numbers; the cookie names the socket.
   */
  owner(service: number, protocol: Protocol, family: 4 | 6, member: number): { pid: number; fd: number; cookie: bigint } | undefined {
    const cookie = this.dispatcher.socketCookie(service, protocol, family, member);
    if (cookie === undefined) return undefined;
    const v = this.maps.ep_owners.lookup(abi.u32(abi.memberKey(abi.socketSlot(service, protocol, family), member)), new Uint8Array(abi.sizes.ep_owner));
    return v && { ...abi.decodeOwner(v), cookie };
  }

  /** Registered sockets that are still open (the kernel drops closed ones from the SOCKMAP). */
  sockets(): SocketEntry[] {
    const out: SocketEntry[] = [];
    for (const key of this.maps.ep_owners.keys(4)) {
      const at = abi.splitMemberKey(new DataView(key.buffer).getUint32(0, true));
      const owner = this.owner(at.service, at.protocol, at.family, at.member);
      if (owner) out.push({ ...at, ...owner });
    }
    return out.sort((a, b) => a.service - b.service || a.member - b.member);
  }

  /** The loopback port of the slot's reuseport group, if one was recorded. */
  groupPort(service: number, protocol: Protocol, family: 4 | 6): number | undefined {
    const v = this.maps.ep_groups.lookup(abi.u32(abi.socketSlot(service, protocol, family)), new Uint8Array(abi.sizes.ep_group));
    return v && decodeGroup(v).port;
  }

  /** Record the port of the slot's reuseport group. */
  setGroupPort(service: number, protocol: Protocol, family: 4 | 6, port: number): void {
    this.maps.ep_groups.update(abi.u32(abi.socketSlot(service, protocol, family)), encodeGroup(port));
  }

  /** Ports recorded for other slots of the same protocol and family: a new group must not join one of them. */
  otherGroupPorts(service: number, protocol: Protocol, family: 4 | 6): Set<number> {
    const mine = abi.socketSlot(service, protocol, family);
    const out = new Set<number>();
    for (const key of this.maps.ep_groups.keys(4)) {
      const slot = new DataView(key.buffer).getUint32(0, true);
      if (slot === mine || (slot & 3) !== (mine & 3)) continue;
      const v = this.maps.ep_groups.lookup(key, new Uint8Array(abi.sizes.ep_group));
      if (v) out.add(decodeGroup(v).port);
    }
    return out;
  }

  /** What the registry holds for these services (undefined: absent), to put back after a failed change. */
  snapshot(names: Iterable<string>): RegistrySnapshot {
    const all = new Map(this.services().map((s) => [s.name, s]));
    return new Map(
      [...names].map((name) => {
        const s = all.get(name);
        return [name, s && { entry: s, bindings: this.bindings(s.id), rules: this.rules(s.id) }];
      }),
    );
  }

  /** Put the snapshot's services back as they were: absent ones removed, others' bindings and rules restored. */
  restore(snapshot: RegistrySnapshot): void {
    for (const [name, was] of snapshot) {
      const now = this.find(name);
      if (!was) {
        if (now) this.remove(now.id);
        continue;
      }
      const entry = this.ensure(name, was.entry.takeOver);
      this.setBindings(entry.id, was.bindings);
      this.setRules(entry.id, was.rules);
    }
  }

  /**
   * Rebuild the lookup tables from the stored bindings and rules. Sockets
   * that already listen where a binding points are left alone (a hole),
   * unless their service takes over; `own` are socket inodes of ours that
   * must not count as someone else's.
   */
  commit(own: ReadonlySet<number> = new Set()): { skipped: string[] } {
    const services = this.services();
    const byId = new Map(services.map((s) => [s.id, s]));
    // A hash map hands keys out in no fixed order; sort so errors name services the same way every time.
    const bindings: (Binding & { takeOver: boolean })[] = this.bindings()
      .filter((b) => byId.has(b.service))
      .sort((a, b) => a.service - b.service || a.lo - b.lo || a.hi - b.hi || a.prefix.length - b.prefix.length)
      .map((b) => ({ protocol: b.protocol, prefix: b.prefix, ports: { lo: b.lo, hi: b.hi }, service: b.service, owner: `service ${byId.get(b.service)!.name}`, takeOver: !!b.takeOver || byId.get(b.service)!.takeOver }));
    const theirs = [...listeners("tcp"), ...listeners("udp")].filter((l) => !own.has(l.inode));
    const { holes, skipped } = holesForListeners(
      bindings.filter((b) => !b.takeOver),
      theirs,
    );
    const rules = this.rules();
    const access: ServiceAccess[] = services.map((s) => ({
      service: s.id,
      allow: rules.filter((r) => r.service === s.id && r.verdict === "allow").map((r) => r.prefix),
      deny: rules.filter((r) => r.service === s.id && r.verdict === "deny").map((r) => r.prefix),
    }));
    this.dispatcher.apply([...bindings.map(({ takeOver: _, ...b }) => b), ...holes], access);
    return { skipped };
  }
}
