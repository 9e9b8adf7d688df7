// The member selection of edgeproxy's TCP reuseport groups (bpf/reuseport.h,
// ep_migrate): which workers' listeners are offered for new connections, the
// groups' sizes, the listeners' groups by cookie, and the selector's counters.
import { KernelError } from "../ebpf/libbpf";
import { type BpfMap } from "../ebpf/map";
import * as abi from "./abi";
import { decodeReuseCounters, decodeReuseGroup, decodeReuseTierCounters, encodeReuseGroup, encodeReuseKey, type ReuseCounters, reuseGroupId } from "./reuseabi";
import { DispatcherError, type MapName } from "./dispatcher";

const EEXIST = 17;
const BPF_NOEXIST = 1;

const cookieKey = (cookie: bigint) => new Uint8Array(new BigUint64Array([cookie]).buffer);

/**
 * A group is named by its listeners' loopback port and family
 * (ep_reuse_group_id()); position p of a group's tier 1 holds worker p's
 * listener while that worker is below its soft mark, of its tier 2 while
 * it is below its connection cap (bpf/reuseport.h).
 */
export type Tier = 1 | 2;

export class Selection {
  constructor(
    private readonly maps: Readonly<Record<MapName, BpfMap>>,
    private readonly cpus: number,
  ) {}

  /** Record a TCP group's size (its registrant's worker count) and service, which the selector needs. */
  setGroup(family: 4 | 6, port: number, members: number, service: number): void {
    try {
      this.maps.ep_reuse_groups.update(abi.u32(reuseGroupId(family, port)), encodeReuseGroup(members, service));
    } catch (cause) {
      throw new DispatcherError(`record the reuseport group of ipv${family} port ${port} (service ${service})`, { cause });
    }
  }

  group(family: 4 | 6, port: number): { members: number; service: number } | undefined {
    const v = this.maps.ep_reuse_groups.lookup(abi.u32(reuseGroupId(family, port)), new Uint8Array(abi.sizes.ep_reuse_group));
    return v && decodeReuseGroup(v);
  }

  /** Forget a group: its port may go to another service's group later. */
  removeGroup(family: 4 | 6, port: number): void {
    this.maps.ep_reuse_groups.delete(abi.u32(reuseGroupId(family, port)));
  }

  /**
   * Offer the listener open at fd at `position` of its group (SOCKHASH takes
   * its own reference). With `ifEmpty` (BPF_NOEXIST) a position another
   * socket holds is left to it: false then.
   */
  offer(family: 4 | 6, port: number, position: number, fd: number, ifEmpty = false, tier: Tier = 1): boolean {
    try {
      this.maps.ep_reuse_members.update(encodeReuseKey(reuseGroupId(family, port), position, tier), abi.u64(fd), ifEmpty ? BPF_NOEXIST : 0);
      return true;
    } catch (cause) {
      if (ifEmpty && cause instanceof KernelError && cause.errno === EEXIST) return false;
      throw new DispatcherError(`offer the ipv${family} listener on port ${port} for selection (position ${position}, tier ${tier})`, { cause });
    }
  }

  /** Empty a position; false when it was empty. */
  remove(family: 4 | 6, port: number, position: number, tier: Tier = 1): boolean {
    return this.maps.ep_reuse_members.delete(encodeReuseKey(reuseGroupId(family, port), position, tier));
  }

  /** The cookie of the listener at the position, or undefined when it is empty. */
  cookieAt(family: 4 | 6, port: number, position: number, tier: Tier = 1): bigint | undefined {
    const v = this.maps.ep_reuse_members.lookup(encodeReuseKey(reuseGroupId(family, port), position, tier), new Uint8Array(8));
    return v && new DataView(v.buffer).getBigUint64(0, true);
  }

  /** Record which group the listener with this cookie is in: a migration finds its group by it. */
  setListener(cookie: bigint, family: 4 | 6, port: number): void {
    try {
      this.maps.ep_reuse_listeners.update(cookieKey(cookie), abi.u32(reuseGroupId(family, port)));
    } catch (cause) {
      throw new DispatcherError(`record the group of the ipv${family} listener on port ${port}`, { cause });
    }
  }

  /** The listener cookies recorded. */
  listeners(): bigint[] {
    return this.maps.ep_reuse_listeners.keys(8).map((k) => new DataView(k.buffer).getBigUint64(0, true));
  }

  removeListener(cookie: bigint): void {
    this.maps.ep_reuse_listeners.delete(cookieKey(cookie));
  }

  /** The selector's counters of a service, summed over CPUs. */
  counters(service: number): ReuseCounters {
    const v = this.maps.ep_reuse_counters.lookup(abi.u32(service), new Uint8Array(abi.sizes.ep_reuse_counters * this.cpus));
    if (!v) throw new KernelError(`read reuseport counters of service ${service}`, 2);
    const t = this.maps.ep_reuse_tier_counters.lookup(abi.u32(service), new Uint8Array(abi.sizes.ep_reuse_tier_counters * this.cpus));
    if (!t) throw new KernelError(`read reuseport tier counters of service ${service}`, 2);
    return { ...decodeReuseCounters(v, this.cpus), secondTier: decodeReuseTierCounters(t, this.cpus) };
  }

  /** Zero a service's counters (a new service must not inherit a removed one's). */
  resetCounters(service: number): void {
    this.maps.ep_reuse_counters.update(abi.u32(service), new Uint8Array(abi.sizes.ep_reuse_counters * this.cpus));
    this.maps.ep_reuse_tier_counters.update(abi.u32(service), new Uint8Array(abi.sizes.ep_reuse_tier_counters * this.cpus));
  }
}
