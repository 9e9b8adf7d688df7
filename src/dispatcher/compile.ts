import { maskAddress, type Prefix } from "../config/address";
import { ConfigError } from "../errors";
import { formatBinding, type Binding, type Protocol } from "./binding";

/** One entry of a compiled port table (mirrors struct ep_port_range). */
export interface PortRangeEntry {
  readonly start: number;
  readonly service: number;
}

/** The answer for every port at one prefix: what the trie value points at. */
export interface PortTable {
  readonly protocol: Protocol;
  readonly prefix: Prefix;
  /** Sorted by start, first start 0, adjacent entries differ in service. */
  readonly ranges: PortRangeEntry[];
}

const prefixId = (p: Prefix) => `${p.length}/${p.addr.join(".")}`;

/*
 * Precedence (issue 2): the longest prefix wins; at an equal prefix the
 * narrowest port range wins; holes (service 0, from already-listening sockets)
 * win ties so edgeproxy never takes a port it promised to leave alone.
 */
function outranks(a: Binding, b: Binding): boolean {
  if (a.prefix.length !== b.prefix.length) return a.prefix.length > b.prefix.length;
  const wa = a.ports.hi - a.ports.lo;
  const wb = b.ports.hi - b.ports.lo;
  if (wa !== wb) return wa < wb;
  return a.service === 0 && b.service !== 0;
}

function rejectAmbiguous(bindings: Binding[]): void {
  const groups = new Map<string, Binding[]>();
  for (const b of bindings) {
    if (b.service === 0) continue;
    const k = `${b.protocol} ${prefixId(b.prefix)} ${b.ports.hi - b.ports.lo}`;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(b);
  }
  for (const g of groups.values()) {
    g.sort((x, y) => x.ports.lo - y.ports.lo);
    for (let i = 1; i < g.length; i++) {
      const a = g[i - 1]!;
      const b = g[i]!;
      if (b.ports.lo <= a.ports.hi && a.service !== b.service) {
        const same = a.ports.lo === b.ports.lo;
        throw new ConfigError(
          "bindings",
          same
            ? `${formatBinding(a)} is bound by both ${a.owner} and ${b.owner}`
            : `${formatBinding(a)} (${a.owner}) and ${formatBinding(b)} (${b.owner}) overlap with equal precedence`,
        );
      }
    }
  }
}

/** Binary max-heap of bindings by precedence. */
class PrecedenceHeap {
  private items: Binding[] = [];
  get top(): Binding | undefined {
    return this.items[0];
  }
  push(b: Binding): void {
    const a = this.items;
    a.push(b);
    for (let i = a.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!outranks(a[i]!, a[p]!)) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  pop(): void {
    const a = this.items;
    const last = a.pop()!;
    if (a.length === 0) return;
    a[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && outranks(a[l]!, a[m]!)) m = l;
      if (r < a.length && outranks(a[r]!, a[m]!)) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m]!, a[i]!];
      i = m;
    }
  }
}

/** Sweep the port axis once; the top of the heap covering a segment owns it. */
function sweep(candidates: Binding[]): PortRangeEntry[] {
  const byLo = [...candidates].sort((a, b) => a.ports.lo - b.ports.lo);
  const bounds = new Set<number>([0, 65536]);
  for (const b of candidates) bounds.add(b.ports.lo).add(b.ports.hi + 1);
  const points = [...bounds].sort((a, b) => a - b);
  const heap = new PrecedenceHeap();
  const out: PortRangeEntry[] = [];
  let next = 0;
  for (let i = 0; i < points.length - 1; i++) {
    const at = points[i]!;
    while (next < byLo.length && byLo[next]!.ports.lo <= at) heap.push(byLo[next++]!);
    while (heap.top && heap.top.ports.hi < at) heap.pop();
    const service = heap.top?.service ?? 0;
    if (out.length === 0 || out[out.length - 1]!.service !== service) out.push({ start: at, service });
  }
  return out;
}

/**
 * Compile bindings into one port table per distinct (protocol, prefix), so the
 * BPF program needs one LPM lookup and one binary search. Because an LPM
 * match on prefix P means every other matching prefix contains P, P's table
 * folds in the bindings of P and of all its ancestors: a more specific prefix
 * whose ranges do not cover a port falls back to the broader binding that does.
 */
export function compileBindings(bindings: readonly Binding[]): PortTable[] {
  const unique = new Map<string, Binding>();
  for (const b of bindings) {
    unique.set(`${b.protocol} ${prefixId(b.prefix)} ${b.ports.lo}-${b.ports.hi} ${b.service}`, b);
  }
  const all = [...unique.values()];
  rejectAmbiguous(all);

  const byPrefix = new Map<string, Binding[]>();
  for (const b of all) {
    const k = `${b.protocol} ${prefixId(b.prefix)}`;
    let g = byPrefix.get(k);
    if (!g) byPrefix.set(k, (g = []));
    g.push(b);
  }
  const tables: PortTable[] = [];
  for (const group of byPrefix.values()) {
    const { protocol, prefix } = group[0]!;
    const candidates: Binding[] = [];
    for (let len = 0; len <= prefix.length; len++) {
      const ancestor = byPrefix.get(`${protocol} ${prefixId({ family: prefix.family, addr: maskAddress(prefix.addr, len), length: len })}`);
      if (ancestor) candidates.push(...ancestor);
    }
    tables.push({ protocol, prefix, ranges: sweep(candidates) });
  }
  return tables;
}

/** The service a table gives a port (what the BPF binary search computes). */
export function serviceForPort(table: PortTable, port: number): number {
  let lo = 0;
  let hi = table.ranges.length;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (table.ranges[mid]!.start <= port) lo = mid;
    else hi = mid;
  }
  return table.ranges[lo]!.service;
}
