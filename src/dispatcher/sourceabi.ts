// TypeScript mirrors of bpf/dispatcher.h's per-client limit structs (sizes,
// offsets and constants are in abi.ts, checked by abi.test.ts).
import { AF_INET, AF_INET6 } from "../system/sockaddr";
import { EP_SOURCE_LIMIT_EXEMPT, sizes } from "./abi";

const le = true;

/** A client as the per-client limits see it: its address cut to the service's grouping prefix. */
export interface SourceKey {
  readonly service: number;
  /** 4 or 16 bytes, network order (unmasked: the encoder masks it). */
  readonly addr: Uint8Array;
  /** Grouping prefix length for this address's family. */
  readonly prefixLen: number;
}

/** struct ep_source_key, written at `at` in `b` (the program's key and the first field of ep_source_op). */
export function writeSourceKey(b: Uint8Array, x: SourceKey, at = 0): void {
  const v = new DataView(b.buffer, b.byteOffset);
  const bits = Math.min(x.prefixLen, x.addr.length * 8);
  v.setUint32(at, x.service, le);
  b[at + 4] = x.addr.length === 4 ? AF_INET : AF_INET6;
  b[at + 5] = bits;
  v.setUint16(at + 6, 0, le);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - 8 * i));
    b[at + 8 + i] = i < x.addr.length ? x.addr[i]! & ((0xff00 >> keep) & 0xff) : 0;
  }
}

export function encodeSourceKey(x: SourceKey): Uint8Array {
  const b = new Uint8Array(sizes.ep_source_key);
  writeSourceKey(b, x);
  return b;
}

/** A service's per-client limits as the program takes them (struct ep_source_limit); zero fields: none. */
export interface SourceLimitEntry {
  readonly connections: number;
  readonly prefixV4: number;
  readonly prefixV6: number;
  /** EP_SOURCE_LIMIT_* */
  readonly flags: number;
  readonly rateIntervalNs: bigint;
  readonly rateToleranceNs: bigint;
}

export { EP_SOURCE_LIMIT_EXEMPT };

export const NO_SOURCE_LIMIT: SourceLimitEntry = { connections: 0, prefixV4: 32, prefixV6: 128, flags: 0, rateIntervalNs: 0n, rateToleranceNs: 0n };

/** struct ep_source_limit */
export function encodeSourceLimit(x: SourceLimitEntry): Uint8Array {
  const b = new Uint8Array(sizes.ep_source_limit);
  const v = new DataView(b.buffer);
  v.setUint32(0, x.connections, le);
  b[4] = x.prefixV4;
  b[5] = x.prefixV6;
  v.setUint16(6, x.flags, le);
  v.setBigUint64(8, x.rateIntervalNs, le);
  v.setBigUint64(16, x.rateToleranceNs, le);
  return b;
}

export function decodeSourceLimit(b: Uint8Array): SourceLimitEntry {
  const v = new DataView(b.buffer, b.byteOffset);
  return { connections: v.getUint32(0, le), prefixV4: b[4]!, prefixV6: b[5]!, flags: v.getUint16(6, le), rateIntervalNs: v.getBigUint64(8, le), rateToleranceNs: v.getBigUint64(16, le) };
}

/** struct ep_limit_counters summed over CPUs: SYNs refused at lookup by a per-client limit. */
export interface LimitCounters {
  connections: bigint;
  rate: bigint;
}

export function decodeLimitCounters(perCpu: Uint8Array, cpus: number): LimitCounters {
  const v = new DataView(perCpu.buffer, perCpu.byteOffset, perCpu.byteLength);
  const c: LimitCounters = { connections: 0n, rate: 0n };
  for (let cpu = 0; cpu < cpus; cpu++) {
    const o = cpu * sizes.ep_limit_counters;
    c.connections += v.getBigUint64(o, le);
    c.rate += v.getBigUint64(o + 8, le);
  }
  return c;
}

/**
 * struct ep_source_op, written in place: the context ep_source runs on. The
 * key is written separately (writeSourceKey at offset 0), so a caller can
 * keep one buffer and change only what differs per call.
 */
export function writeSourceOp(b: Uint8Array, op: number, owner: number, delta: number): void {
  const v = new DataView(b.buffer, b.byteOffset);
  v.setUint32(24, op, le);
  v.setUint32(28, owner, le);
  v.setInt32(32, delta, le);
  v.setUint32(36, 0, le);
}

/** result of an ep_source_op the kernel copied back. */
export const sourceOpResult = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset).getUint32(36, le);
