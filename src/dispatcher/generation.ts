// The lookup tables' generations (bpf/dispatcher.h, ep_state): every
// binding and access rule is written under the idle generation, then one
// write of ep_state switches the program's lookups over, and the old
// generation's entries go. Dispatcher.apply's work; the Dispatcher owns the maps.
import type { Prefix } from "../config/address";
import { ConfigError } from "../errors";
import type { BpfMap } from "../ebpf/map";
import * as abi from "./abi";
import type { Binding } from "./binding";
import { compileBindings, type PortTable } from "./compile";
import { DispatcherError, type MapName } from "./dispatcher";

type Maps = Readonly<Record<MapName, BpfMap>>;

/** A service's source-address rules (see AccessConfig). */
export interface ServiceAccess {
  readonly service: number;
  readonly allow: readonly Prefix[];
  readonly deny: readonly Prefix[];
}

/** What apply() installed. */
export interface AppliedBindings {
  readonly tables: PortTable[];
  readonly gen: number;
}

/*
 * From how many full-length prefixes (/32, /128) on the program looks them up
 * in ep_hosts before the trie. A trie walk grows with the number of entries
 * (about 15 ns with one, 60 ns with 1,000 in bench/lookup.ts) while a hash
 * lookup costs about the same always (20-30 ns), so below this the hash
 * would only add its cost to every lookup.
 */
const HOSTS_MIN = 32;

/**
 * Replace every binding and access rule at once. The new trie entries, port
 * tables and rules are written under the idle generation, then one write of
 * ep_state switches lookups over; a failure before the switch removes what
 * was written and leaves the live generation untouched.
 */
export function applyGeneration(maps: Maps, bindings: readonly Binding[], access: readonly ServiceAccess[]): AppliedBindings {
  for (const b of [...bindings, ...access]) {
    if (b.service < 0 || b.service >= abi.EP_MAX_SERVICES) {
      throw new ConfigError("bindings", `service id ${b.service} is outside 0-${abi.EP_MAX_SERVICES - 1}`);
    }
  }
  const tables = compileBindings(bindings);
  const total = tables.reduce((n, t) => n + t.ranges.length, 0);
  if (total > abi.EP_RANGES_PER_GEN) {
    throw new ConfigError("bindings", `they compile to ${total} port ranges, more than the ${abi.EP_RANGES_PER_GEN} the dispatcher holds`);
  }
  const live = currentGen(maps);
  const gen = live ^ 1;
  try {
    dropGeneration(maps, gen);
    // Every port table in one batch (a syscall per entry cost ~3 µs each,
    // 100,000 bindings about a third of a second); then the trie entries
    // that point at them, which LPM tries only take one at a time.
    const base = gen * abi.EP_RANGES_PER_GEN;
    const keys = Uint32Array.from({ length: total }, (_, i) => base + i);
    maps.ep_ranges.updateBatch(new Uint8Array(keys.buffer), abi.encodePortRanges(tables.flatMap((t) => t.ranges)), total);
    let next = base;
    const hostKeys: Uint8Array[] = [];
    const hostValues: Uint8Array[] = [];
    for (const t of tables) {
      const key = abi.encodePrefixKey(gen, t.protocol, t.prefix);
      const value = abi.encodePrefixTable(next, t.ranges.length);
      maps.ep_prefixes.update(key, value);
      if (t.prefix.length === t.prefix.addr.length * 8) {
        hostKeys.push(key);
        hostValues.push(value);
      }
      next += t.ranges.length;
    }
    // Many full-length prefixes: also put them in the exact-match hash the
    // program then tries first (bpf/dispatcher.h, EP_STATE_HOSTS).
    const hosts = hostKeys.length >= HOSTS_MIN ? hostKeys.length : 0;
    if (hosts) maps.ep_hosts.updateBatch(Buffer.concat(hostKeys), Buffer.concat(hostValues), hosts);
    const flags = new Map<number, number>();
    for (const a of access) {
      if (!a.allow.length && !a.deny.length) continue;
      flags.set(a.service, abi.EP_SERVICE_HAS_RULES | (a.allow.length ? abi.EP_SERVICE_DEFAULT_DENY : 0));
      // Deny is written last: the same prefix in both lists denies.
      for (const p of a.allow) maps.ep_access.update(abi.encodeAccessKey(gen, a.service, p), abi.u32(abi.EP_VERDICT_ALLOW));
      for (const p of a.deny) maps.ep_access.update(abi.encodeAccessKey(gen, a.service, p), abi.u32(abi.EP_VERDICT_DENY));
    }
    // All of the generation's flags in one batch: one syscall instead of 1,023.
    const flagKeys = new Uint32Array(abi.EP_MAX_SERVICES - 1);
    const flagValues = new Uint32Array(abi.EP_MAX_SERVICES - 1);
    for (let s = 1; s < abi.EP_MAX_SERVICES; s++) {
      flagKeys[s - 1] = gen * abi.EP_MAX_SERVICES + s;
      flagValues[s - 1] = flags.get(s) ?? 0;
    }
    maps.ep_service_flags.updateBatch(new Uint8Array(flagKeys.buffer), new Uint8Array(flagValues.buffer), flagKeys.length);
    maps.ep_state.update(abi.u32(0), abi.encodeState(gen, hosts ? abi.EP_STATE_HOSTS : 0));
  } catch (cause) {
    try {
      dropGeneration(maps, gen);
    } catch {
      // The live generation is intact either way; stale idle entries are dropped by the next apply.
    }
    throw new DispatcherError("apply bindings", { cause });
  }
  dropGeneration(maps, live);
  return { tables, gen };
}

function dropGeneration(maps: Maps, gen: number): void {
  for (const map of [maps.ep_prefixes, maps.ep_hosts]) {
    for (const key of map.keys(abi.sizes.ep_prefix_key)) if (abi.prefixKeyGen(key) === gen) map.delete(key);
  }
  for (const key of maps.ep_access.keys(abi.sizes.ep_access_key)) {
    if (abi.accessKeyGen(key) === gen) maps.ep_access.delete(key);
  }
}

function currentGen(maps: Maps): number {
  const v = maps.ep_state.lookup(abi.u32(0), new Uint8Array(abi.sizes.ep_state));
  return v ? abi.decodeState(v).gen : 0;
}
