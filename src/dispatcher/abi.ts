// TypeScript mirrors of bpf/dispatcher.h (its per-client limit structs are
// sourceabi.ts's, its SO_REUSEPORT group structs reuseabi.ts's). abi.test.ts
// checks every size, offset and constant here against the header compiled by
// a C compiler.
import type { Prefix } from "../config/address";
import type { Protocol } from "./binding";
import { AF_INET, AF_INET6 } from "../system/sockaddr";

export const EP_MAX_SERVICES = 1024;
export const EP_RANGES_PER_GEN = 1 << 17;
export const EP_SOCKET_SLOTS = EP_MAX_SERVICES * 4;
export const EP_SOCKET_MEMBERS = 4;
export const EP_PREFIX_KEY_HEADER_BITS = 32;
export const EP_ACCESS_KEY_HEADER_BITS = 64;
export const EP_MAX_ACCESS_RULES = 65536;
export const EP_SERVICE_HAS_RULES = 1;
export const EP_SERVICE_DEFAULT_DENY = 2;
export const EP_SERVICE_TAKE_OVER = 1;
export const EP_VERDICT_ALLOW = 1;
export const EP_VERDICT_DENY = 2;
export const EP_STATE_HOSTS = 1;
export const EP_SOURCE_OWNERS = 32;
export const EP_SOURCE_OP_ADD = 1;
export const EP_SOURCE_OP_RECLAIM = 2;
export const EP_SOURCE_OP_RATE = 3;
export const EP_SOURCE_LIMIT_EXEMPT = 1;
export const EP_REUSE_MAX_MEMBERS = 256;
export const EP_REUSE_MAX_ENTRIES = 65536;
export const EP_REUSE_TIERS = 2;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const ipProtocol = (p: Protocol) => (p === "udp" ? IPPROTO_UDP : IPPROTO_TCP);

export const sizes = {
  ep_prefix_key: 24,
  ep_prefix_table: 8,
  ep_port_range: 8,
  ep_service_counters: 40,
  ep_state: 8,
  ep_access_key: 28,
  ep_service_info: 72,
  ep_binding: 28,
  ep_rule: 24,
  ep_owner: 8,
  ep_group: 8,
  ep_source_key: 24,
  ep_source_limit: 24,
  ep_source_count: 8 * EP_SOURCE_OWNERS,
  ep_limit_counters: 16,
  ep_source_op: 40,
  ep_reuse_key: 8,
  ep_reuse_group: 8,
  ep_reuse_counters: 32,
  ep_reuse_tier_counters: 8,
  // The kernel's sk_lookup context (linux/bpf.h), for BPF_PROG_TEST_RUN.
  bpf_sk_lookup: 72,
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
  "ep_service_counters.denied": 32,
  "ep_access_key.gen": 4,
  "ep_access_key.family": 5,
  "ep_access_key.service": 8,
  "ep_access_key.addr": 12,
  "ep_service_info.flags": 64,
  "ep_binding.protocol": 4,
  "ep_binding.family": 5,
  "ep_binding.prefix_len": 6,
  "ep_binding.port_lo": 8,
  "ep_binding.port_hi": 10,
  "ep_binding.addr": 12,
  "ep_rule.family": 4,
  "ep_rule.prefix_len": 5,
  "ep_rule.verdict": 6,
  "ep_rule.addr": 8,
  "ep_owner.fd": 4,
  "ep_state.flags": 4,
  "ep_source_key.family": 4,
  "ep_source_key.prefix_len": 5,
  "ep_source_key.addr": 8,
  "ep_source_limit.prefix_v4": 4,
  "ep_source_limit.prefix_v6": 5,
  "ep_source_limit.flags": 6,
  "ep_source_limit.rate_interval_ns": 8,
  "ep_source_limit.rate_tolerance_ns": 16,
  "ep_limit_counters.rate": 8,
  "ep_source_op.op": 24,
  "ep_source_op.owner": 28,
  "ep_source_op.delta": 32,
  "ep_source_op.result": 36,
  "ep_reuse_key.position": 4,
  "ep_reuse_group.service": 4,
  "ep_reuse_counters.full": 8,
  "ep_reuse_counters.migrated": 16,
  "ep_reuse_counters.migrated_unselected": 24,
  "bpf_sk_lookup.family": 8,
  "bpf_sk_lookup.protocol": 12,
  "bpf_sk_lookup.remote_ip4": 16,
  "bpf_sk_lookup.remote_ip6": 20,
  "bpf_sk_lookup.remote_port": 36,
  "bpf_sk_lookup.local_ip4": 40,
  "bpf_sk_lookup.local_ip6": 44,
  "bpf_sk_lookup.local_port": 60,
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

/** Two little-endian u32s: the 8-byte structs (here and in reuseabi.ts). */
export function twoU32(a: number, b: number): Uint8Array {
  const out = new Uint8Array(8);
  const v = new DataView(out.buffer);
  v.setUint32(0, a, le);
  v.setUint32(4, b, le);
  return out;
}

/** twoU32's reverse: the two u32s of an 8-byte struct (at its own offset in a larger buffer too). */
export function readTwoU32(b: Uint8Array): [number, number] {
  const v = new DataView(b.buffer, b.byteOffset);
  return [v.getUint32(0, le), v.getUint32(4, le)];
}

/** struct ep_prefix_table */
export const encodePrefixTable = (first: number, count: number): Uint8Array => twoU32(first, count);

/** struct ep_port_range, back to back: the values of one ep_ranges batch update. */
export function encodePortRanges(ranges: readonly { start: number; service: number }[]): Uint8Array {
  const b = new Uint8Array(ranges.length * sizes.ep_port_range);
  const v = new DataView(b.buffer);
  ranges.forEach((r, i) => {
    v.setUint32(i * sizes.ep_port_range, r.start, le);
    v.setUint32(i * sizes.ep_port_range + offsets["ep_port_range.service"], r.service, le);
  });
  return b;
}

/** One connection's view for the program, as BPF_PROG_TEST_RUN takes it. */
export interface SkLookupInput {
  readonly protocol: Protocol;
  /** Local (destination) address: 4 or 16 bytes; the family follows from it. */
  readonly local: Uint8Array;
  readonly localPort: number;
  /** Remote (source) address, same family as `local`. */
  readonly remote: Uint8Array;
  readonly remotePort: number;
}

/**
 * struct bpf_sk_lookup (linux/bpf.h) as ctx_in of a test run: the kernel
 * rejects a set `sk` and anything after local_port (net/bpf/test_run.c). Its
 * remote_port is in network byte order, local_port in host order.
 */
export function encodeSkLookup(x: SkLookupInput): Uint8Array {
  const b = new Uint8Array(sizes.bpf_sk_lookup);
  const v = new DataView(b.buffer);
  const v6 = x.local.length === 16;
  v.setUint32(8, v6 ? AF_INET6 : AF_INET, le);
  v.setUint32(12, ipProtocol(x.protocol), le);
  b.set(x.remote, v6 ? 20 : 16);
  v.setUint16(36, x.remotePort, false);
  b.set(x.local, v6 ? 44 : 40);
  v.setUint32(60, x.localPort, le);
  return b;
}

/** The cookie of the socket a test run assigned (0: none), from the context it wrote back. */
export const skLookupCookie = (ctxOut: Uint8Array): bigint => new DataView(ctxOut.buffer, ctxOut.byteOffset).getBigUint64(0, le);

/** struct ep_state */
export function encodeState(gen: number, flags = 0): Uint8Array {
  const b = new Uint8Array(sizes.ep_state);
  const v = new DataView(b.buffer);
  v.setUint32(0, gen, le);
  v.setUint32(4, flags, le);
  return b;
}

export function decodeState(b: Uint8Array): { gen: number; flags: number } {
  const [gen, flags] = readTwoU32(b);
  return { gen, flags };
}

/** struct ep_service_counters, summed over the per-CPU copies of a PERCPU_ARRAY value. */
export interface ServiceCounters {
  lookups: bigint;
  steered: bigint;
  missingSocket: bigint;
  assignError: bigint;
  denied: bigint;
}

export function decodeServiceCounters(perCpu: Uint8Array, cpus: number): ServiceCounters {
  const v = new DataView(perCpu.buffer, perCpu.byteOffset, perCpu.byteLength);
  const c: ServiceCounters = { lookups: 0n, steered: 0n, missingSocket: 0n, assignError: 0n, denied: 0n };
  // Each per-CPU value is padded to 8 bytes; ours already is (kernel: bpf_map_value_size).
  for (let cpu = 0; cpu < cpus; cpu++) {
    const o = cpu * sizes.ep_service_counters;
    c.lookups += v.getBigUint64(o, le);
    c.steered += v.getBigUint64(o + 8, le);
    c.missingSocket += v.getBigUint64(o + 16, le);
    c.assignError += v.getBigUint64(o + 24, le);
    c.denied += v.getBigUint64(o + 32, le);
  }
  return c;
}

/** ep_socket_slot() */
export function socketSlot(service: number, protocol: Protocol, family: 4 | 6): number {
  return service * 4 + (protocol === "udp" ? 2 : 0) + (family === 6 ? 1 : 0);
}

/** ep_member_key() */
export function memberKey(slot: number, member: number): number {
  return slot * EP_SOCKET_MEMBERS + member;
}

/** The (slot, member) an ep_sockets / ep_owners key names. */
export function splitMemberKey(key: number): { service: number; protocol: Protocol; family: 4 | 6; member: number } {
  const slot = Math.floor(key / EP_SOCKET_MEMBERS);
  return { service: slot >> 2, protocol: slot & 2 ? "udp" : "tcp", family: slot & 1 ? 6 : 4, member: key % EP_SOCKET_MEMBERS };
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

const familyCode = (f: 4 | 6) => (f === 4 ? AF_INET : AF_INET6);
const familyOf = (code: number): 4 | 6 => (code === AF_INET6 ? 6 : 4);

/** struct ep_access_key */
export function encodeAccessKey(gen: number, service: number, prefix: Prefix): Uint8Array {
  const b = new Uint8Array(sizes.ep_access_key);
  const v = new DataView(b.buffer);
  v.setUint32(0, EP_ACCESS_KEY_HEADER_BITS + prefix.length, le);
  b[4] = gen;
  b[5] = familyCode(prefix.family);
  v.setUint32(8, service, false); // network order: the trie compares bytes
  b.set(prefix.addr, 12);
  return b;
}

/** Generation byte of an encoded struct ep_access_key. */
export const accessKeyGen = (key: Uint8Array): number => key[4]!;

/** struct ep_service_info */
export function encodeServiceInfo(name: string, flags: number): Uint8Array {
  const b = new Uint8Array(sizes.ep_service_info);
  const bytes = new TextEncoder().encode(name);
  if (bytes.length > 63) throw new RangeError(`service name longer than 63 bytes: ${name}`);
  b.set(bytes, 0);
  new DataView(b.buffer).setUint32(64, flags, le);
  return b;
}

export function decodeServiceInfo(b: Uint8Array): { name: string; flags: number } {
  const end = b.indexOf(0);
  return { name: new TextDecoder().decode(b.subarray(0, end < 0 ? 64 : Math.min(end, 64))), flags: new DataView(b.buffer, b.byteOffset).getUint32(64, le) };
}

/** A configured binding as stored in ep_bindings. */
export interface StoredBinding {
  service: number;
  protocol: Protocol;
  prefix: Prefix;
  lo: number;
  hi: number;
  /** Steer it even where another socket already listens (`bind --take-over`): kept in the entry's value, per binding. */
  takeOver?: boolean;
}

/** struct ep_binding */
export function encodeBinding(x: StoredBinding): Uint8Array {
  const b = new Uint8Array(sizes.ep_binding);
  const v = new DataView(b.buffer);
  v.setUint32(0, x.service, le);
  b[4] = ipProtocol(x.protocol);
  b[5] = familyCode(x.prefix.family);
  b[6] = x.prefix.length;
  v.setUint16(8, x.lo, le);
  v.setUint16(10, x.hi, le);
  b.set(x.prefix.addr, 12);
  return b;
}

export function decodeBinding(b: Uint8Array): StoredBinding {
  const v = new DataView(b.buffer, b.byteOffset);
  const family = familyOf(b[5]!);
  return {
    service: v.getUint32(0, le),
    protocol: b[4] === IPPROTO_UDP ? "udp" : "tcp",
    prefix: { family, addr: b.slice(12, family === 4 ? 16 : 28), length: b[6]! },
    lo: v.getUint16(8, le),
    hi: v.getUint16(10, le),
  };
}

/** A configured access rule as stored in ep_rules. */
export interface StoredRule {
  service: number;
  prefix: Prefix;
  verdict: "allow" | "deny";
}

/** struct ep_rule */
export function encodeRule(x: StoredRule): Uint8Array {
  const b = new Uint8Array(sizes.ep_rule);
  new DataView(b.buffer).setUint32(0, x.service, le);
  b[4] = familyCode(x.prefix.family);
  b[5] = x.prefix.length;
  b[6] = x.verdict === "allow" ? EP_VERDICT_ALLOW : EP_VERDICT_DENY;
  b.set(x.prefix.addr, 8);
  return b;
}

export function decodeRule(b: Uint8Array): StoredRule {
  const family = familyOf(b[4]!);
  return {
    service: new DataView(b.buffer, b.byteOffset).getUint32(0, le),
    prefix: { family, addr: b.slice(8, family === 4 ? 12 : 24), length: b[5]! },
    verdict: b[6] === EP_VERDICT_ALLOW ? "allow" : "deny",
  };
}

/** struct ep_owner */
export const encodeOwner = (pid: number, fd: number): Uint8Array => twoU32(pid, fd);

export function decodeOwner(b: Uint8Array): { pid: number; fd: number } {
  const [pid, fd] = readTwoU32(b);
  return { pid, fd };
}
