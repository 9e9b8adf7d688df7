import { lookup } from "node:dns/promises";
import { formatAddress, formatPrefix, parseAddress, prefixContains, type Family } from "../config/address";
import { formatPorts } from "../config/ports";
import type { ServiceConfig } from "../config/service";
import { formatBinding, type Binding } from "../dispatcher/binding";
import { compileBindings, serviceForPort } from "../dispatcher/compile";
import { ConfigError } from "../errors";
import { isWildcard, type Listener } from "../system/listeners";

/** Service i of the config is dispatcher service i + 1 (0 means "not bound"). */
export function serviceBindings(services: readonly ServiceConfig[]): Binding[] {
  return services.flatMap((s, i) =>
    s.bindings.flatMap(({ protocol, prefixes, ports }) =>
      prefixes.flatMap((prefix) => ports.map((range) => ({ protocol, prefix, ports: range, service: i + 1, owner: `service ${s.name}` }))),
    ),
  );
}

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

async function resolve(host: string): Promise<Uint8Array[]> {
  const literal = parseAddress(host);
  if (literal) return [literal];
  try {
    return (await lookup(host, { all: true })).map((a) => parseAddress(a.address)!).filter(Boolean);
  } catch (e) {
    throw new ConfigError(`origin ${host}`, `cannot resolve: ${(e as { code?: string }).code ?? (e as Error).message}`);
  }
}

/**
 * Refuse origins that the bindings would steer back to edgeproxy itself: the
 * connection to the origin would be dispatched to our own listener, forever.
 */
export async function rejectLoops(services: readonly ServiceConfig[], bindings: readonly Binding[]): Promise<void> {
  const tables = compileBindings(bindings.filter((b) => b.service !== 0 && b.protocol === "tcp"));
  for (const s of services) {
    if (!s.origin) continue;
    for (const addr of await resolve(s.origin.host)) {
      const table = tables
        .filter((t) => prefixContains(t.prefix, addr))
        .sort((a, b) => b.prefix.length - a.prefix.length)[0];
      if (!table) continue;
      let port: number | undefined;
      if (s.origin.port !== undefined) {
        if (serviceForPort(table, s.origin.port) !== 0) port = s.origin.port;
      } else {
        // Port-preserving: any dialled port that is itself steered at the origin's address loops.
        port = s.bindings
          .filter((b) => b.protocol === "tcp")
          .flatMap((b) => b.ports)
          .map((r) => firstSteered(table.ranges, r.lo, r.hi))
          .find((p) => p !== undefined);
      }
      if (port !== undefined) {
        const where = addr.length === 16 ? `[${formatAddress(addr)}]:${port}` : `${formatAddress(addr)}:${port}`;
        throw new ConfigError(
          `service ${s.name}`,
          `origin ${where} is inside edgeproxy's own bindings (tcp ${formatPrefix(table.prefix)}), so connections would loop back; exclude it from --ports/--prefix`,
        );
      }
    }
  }
}

function firstSteered(ranges: readonly { start: number; service: number }[], lo: number, hi: number): number | undefined {
  for (let i = 0; i < ranges.length; i++) {
    const start = ranges[i]!.start;
    const end = (ranges[i + 1]?.start ?? 65536) - 1;
    if (ranges[i]!.service !== 0 && start <= hi && end >= lo) return Math.max(start, lo);
  }
  return undefined;
}

export function describeBindings(services: readonly ServiceConfig[]): string[] {
  return services.map((s) =>
    `service ${s.name} (${s.mode}): ${s.bindings.map((b) => `${b.protocol} ${b.prefixes.map(formatPrefix).join(",")} ports ${b.ports.map(formatPorts).join(",")}`).join("; ")} -> ${
      s.origin ? `${s.origin.host}${s.origin.port ? `:${s.origin.port}` : " (port-preserving)"}` : "built-in responder"
    }`,
  );
}

export { formatBinding };
