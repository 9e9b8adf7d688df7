import { formatAddress, prefixContains, type Family } from "../config/address";
import { isWildcard, type Listener } from "../system/listeners";
import type { Binding } from "./binding";

/**
 * Holes (service 0) for every (address, port) the bindings cover where another
 * socket of this namespace already listens, on that address or a wildcard. A
 * hole at the listener's exact address, or at the binding's prefix for a
 * wildcard listener, outranks the binding (compile.ts), so the kernel's own
 * lookup reaches that socket. "[::]" listeners may be dual-stack, so they
 * keep IPv4 ports too.
 */
export function holesForListeners(bindings: readonly Binding[], listening: readonly Listener[]): { holes: Binding[]; skipped: string[] } {
  const holes: Binding[] = [];
  const skipped: string[] = [];
  // Sorted by port, then address, so the report does not follow the kernel's hash order.
  const ordered = [...listening].sort((a, b) => a.port - b.port || a.family - b.family || Buffer.compare(a.addr, b.addr));
  for (const l of ordered) {
    const wildcard = isWildcard(l.addr);
    const families: Family[] = wildcard && l.family === 6 ? [4, 6] : [l.family];
    const owner = `listener ${l.family === 6 ? `[${formatAddress(l.addr)}]` : formatAddress(l.addr)}:${l.port}`;
    let hit = false;
    for (const b of bindings) {
      if (b.service === 0 || b.protocol !== l.protocol || !families.includes(b.prefix.family)) continue;
      if (l.port < b.ports.lo || l.port > b.ports.hi) continue;
      const ports = { lo: l.port, hi: l.port };
      if (wildcard) {
        holes.push({ protocol: b.protocol, prefix: b.prefix, ports, service: 0, owner });
        hit = true;
      } else if (prefixContains(b.prefix, l.addr)) {
        holes.push({ protocol: b.protocol, prefix: { family: l.family, addr: l.addr, length: l.addr.length * 8 }, ports, service: 0, owner });
        hit = true;
      }
    }
    if (hit) skipped.push(`${l.protocol} ${owner.slice("listener ".length)}`);
  }
  return { holes, skipped: [...new Set(skipped)] };
}
