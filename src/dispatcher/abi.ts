// TypeScript mirrors of bpf/dispatcher.h. abi.test.ts checks every size,
// offset and constant here against the header compiled by a C compiler.
import type { Prefix } from "../config/address";
import type { Protocol } from "./binding";

export const EP_MAX_SERVICES = 1024;
export const EP_RANGES_PER_GEN = 1 << 17;
export const EP_SOCKET_SLOTS = EP_MAX_SERVICES * 4;
export const EP_PREFIX_KEY_HEADER_BITS = 32;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const ipProtocol = (p: Protocol) => (p === "udp" ? IPPROTO_UDP : IPPROTO_TCP);

export const sizes = {
  ep_prefix_key: 24,
  ep_prefix_table: 8,
  ep_port_range: 8,
  ep_service_counters: 32,
  ep_state: 8,
} as const;

export const offsets = {
  "ep_prefix_key.gen": 4,
  "ep_prefix_key.protocol": 5,
  "ep_prefix_key.family": 6,
  "ep_prefix_key.addr": 8,
  "ep_prefix_table.count": 4,
  "ep_port_range.service": 4,
  "ep_service_counters.steered": 8,
  "ep_service_counters.missing_socket": 16,
  "ep_service_counters.assign_error": 24,
} as const;

const le = true;

/** struct ep_prefix_key */
export function encodePrefixKey(gen: number, protocol: Protocol, prefix: Prefix): Uint8Array {
  const b = new Uint8Array(sizes.ep_prefix_key);
  const v = new DataView(b.buffer);
  v.setUint32(0, EP_PREFIX_KEY_HEADER_BITS + prefix.length, le);
  b[4] = gen;
  b[5] = ipProtocol(protocol);
  b[6] = prefix.family === 4 ? AF_INET : AF_INET6;
  b.set(prefix.addr, 8);
  return b;
}

/** Generation byte of an encoded struct ep_prefix_key. */
export const prefixKeyGen = (key: Uint8Array): number => key[4]!;

function twoU32(a: number, b: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = new DataView(out.buffer);
  v.setUint32(0, a, le);
  v.setUint32(4, b, le);
  return out;
}

/** struct ep_prefix_table */
export const encodePrefixTable = (first: number, count: number): Uint8Array => twoU32(first, count);

/** struct ep_port_range */
export const encodePortRange = (start: number, service: number): Uint8Array => twoU32(start, service);

/** struct ep_state */
export function encodeState(gen: number): Uint8Array {
  const b = new Uint8Array(sizes.ep_state);
  new DataView(b.buffer).setUint32(0, gen, le);
  return b;
}

export function decodeState(b: Uint8Array): { gen: number } {
  return { gen: new DataView(b.buffer, b.byteOffset).getUint32(0, le) };
}

/** struct ep_service_counters, summed over the per-CPU copies of a PERCPU_ARRAY value. */
export interface ServiceCounters {
  lookups: bigint;
  steered: bigint;
  missingSocket: bigint;
  assignError: bigint;
}

export function decodeServiceCounters(perCpu: Uint8Array, cpus: number): ServiceCounters {
  const v = new DataView(perCpu.buffer, perCpu.byteOffset, perCpu.byteLength);
  const c: ServiceCounters = { lookups: 0n, steered: 0n, missingSocket: 0n, assignError: 0n };
  // Each per-CPU value is padded to 8 bytes; ours already is (kernel: bpf_map_value_size).
  for (let cpu = 0; cpu < cpus; cpu++) {
    const o = cpu * sizes.ep_service_counters;
    c.lookups += v.getBigUint64(o, le);
    c.steered += v.getBigUint64(o + 8, le);
    c.missingSocket += v.getBigUint64(o + 16, le);
    c.assignError += v.getBigUint64(o + 24, le);
  }
  return c;
}

/** ep_socket_slot() */
export function socketSlot(service: number, protocol: Protocol, family: 4 | 6): number {
  return service * 4 + (protocol === "udp" ? 2 : 0) + (family === 6 ? 1 : 0);
}

export function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, le);
  return b;
}

export function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), le);
  return b;
}
