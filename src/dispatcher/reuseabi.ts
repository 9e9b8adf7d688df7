// TypeScript mirrors of bpf/dispatcher.h's SO_REUSEPORT group structs: a
// socket slot's group (ep_groups) and the reuseport selection's groups,
// members and counters (ep_reuse_*). Sizes, offsets and constants are in
// abi.ts, checked by abi.test.ts.
import { EP_REUSE_MAX_MEMBERS, readTwoU32, sizes, twoU32 } from "./abi";

const le = true;

/** struct ep_group */
export const encodeGroup = (port: number): Uint8Array => twoU32(port, 0);

export const decodeGroup = (b: Uint8Array): { port: number } => ({ port: new DataView(b.buffer, b.byteOffset).getUint32(0, le) });

/** ep_reuse_group_id(): a TCP reuseport group by its loopback port and family. */
export const reuseGroupId = (family: 4 | 6, port: number): number => ((family === 6 ? 1 : 0) << 16) | (port & 0xffff);

/** struct ep_reuse_key: tier 1 is the worker's index, tier 2 EP_REUSE_MAX_MEMBERS past it. */
export const encodeReuseKey = (group: number, position: number, tier: 1 | 2 = 1): Uint8Array => twoU32(group, tier === 2 ? EP_REUSE_MAX_MEMBERS + position : position);

/** struct ep_reuse_group */
export const encodeReuseGroup = (members: number, service: number): Uint8Array => twoU32(members, service);

export function decodeReuseGroup(b: Uint8Array): { members: number; service: number } {
  const [members, service] = readTwoU32(b);
  return { members, service };
}

/** struct ep_reuse_counters, summed over the per-CPU copies. */
export interface ReuseCounters {
  redirected: bigint;
  full: bigint;
  migrated: bigint;
  migratedUnselected: bigint;
  /** struct ep_reuse_tier_counters.second: new connections given to a worker inside its headroom (no worker below its soft mark). */
  secondTier: bigint;
}

export function decodeReuseCounters(perCpu: Uint8Array, cpus: number): Omit<ReuseCounters, "secondTier"> {
  const v = new DataView(perCpu.buffer, perCpu.byteOffset, perCpu.byteLength);
  const c = { redirected: 0n, full: 0n, migrated: 0n, migratedUnselected: 0n };
  for (let cpu = 0; cpu < cpus; cpu++) {
    const o = cpu * sizes.ep_reuse_counters;
    c.redirected += v.getBigUint64(o, le);
    c.full += v.getBigUint64(o + 8, le);
    c.migrated += v.getBigUint64(o + 16, le);
    c.migratedUnselected += v.getBigUint64(o + 24, le);
  }
  return c;
}

/** struct ep_reuse_tier_counters, summed over the per-CPU copies: its `second`. */
export function decodeReuseTierCounters(perCpu: Uint8Array, cpus: number): bigint {
  const v = new DataView(perCpu.buffer, perCpu.byteOffset, perCpu.byteLength);
  let second = 0n;
  for (let cpu = 0; cpu < cpus; cpu++) second += v.getBigUint64(cpu * sizes.ep_reuse_tier_counters, le);
  return second;
}
