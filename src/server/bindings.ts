import { lookup } from "node:dns/promises";
import { formatAddress, formatPrefix, parseAddress, prefixContains } from "../config/address";
import { describePool, poolsOf } from "../config/pool";
import { formatPorts } from "../config/ports";
import { transportOf, type ServeConfig, type ServiceConfig } from "../config/service";
import { formatBinding, type Binding } from "../dispatcher/binding";
import { compileBindings, serviceForPort } from "../dispatcher/compile";
import { ConfigError } from "../errors";

/** Service i of the config is dispatcher service i + 1 (0 means "not bound"). */
export function serviceBindings(services: readonly ServiceConfig[]): Binding[] {
  return services.flatMap((s, i) =>
    s.bindings.flatMap(({ protocol, prefixes, ports }) =>
      prefixes.flatMap((prefix) => ports.map((range) => ({ protocol, prefix, ports: range, service: i + 1, owner: `service ${s.name}` }))),
    ),
  );
}

/** Every address of every origin host the services name, by host: resolved once per start or reload. */
export type ResolvedOrigins = ReadonlyMap<string, readonly Uint8Array[]>;

export async function resolveOrigins(services: readonly ServiceConfig[]): Promise<ResolvedOrigins> {
  const out = new Map<string, Uint8Array[]>();
  for (const s of services) for (const p of poolsOf(s)) for (const o of p.origins) if (!out.has(o.host)) out.set(o.host, await resolve(o.host));
  return out;
}

async function resolve(host: string): Promise<Uint8Array[]> {
  const literal = parseAddress(host);
  if (literal) return [literal];
  try {
    const all = (await lookup(host, { all: true })).map((a) => parseAddress(a.address)).filter((a): a is Uint8Array => !!a);
    if (all.length === 0) throw Object.assign(new Error("no address"), { code: "ENODATA" });
    return all;
  } catch (e) {
    throw new ConfigError(`origin ${host}`, `cannot resolve: ${(e as { code?: string }).code ?? (e as Error).message}`);
  }
}

/**
 * Refuse origins that the bindings would steer back to edgeproxy itself: the
 * connection (or datagram) to the origin would be dispatched to our own
 * socket, forever. A service's origin is reached over the service's own
 * protocol, so only bindings of that protocol can loop it.
 */
export function rejectLoops(services: readonly ServiceConfig[], bindings: readonly Binding[], origins: ResolvedOrigins): void {
  const live = bindings.filter((b) => b.service !== 0);
  const tablesOf = { tcp: compileBindings(live.filter((b) => b.protocol === "tcp")), udp: compileBindings(live.filter((b) => b.protocol === "udp")) };
  for (const s of services) {
    const protocol = transportOf(s.mode);
    for (const o of poolsOf(s).flatMap((p) => p.origins)) for (const addr of origins.get(o.host) ?? []) {
      const table = tablesOf[protocol]
        .filter((t) => prefixContains(t.prefix, addr))
        .sort((a, b) => b.prefix.length - a.prefix.length)[0];
      if (!table) continue;
      let port: number | undefined;
      if (o.ports) {
        port = firstSteered(table.ranges, o.ports.lo, o.ports.hi);
      } else if (o.port !== undefined) {
        if (serviceForPort(table, o.port) !== 0) port = o.port;
      } else {
        // Port-preserving: any dialled port that is itself steered at the origin's address loops.
        port = s.bindings
          .filter((b) => b.protocol === protocol)
          .flatMap((b) => b.ports)
          .map((r) => firstSteered(table.ranges, r.lo, r.hi))
          .find((p) => p !== undefined);
      }
      if (port !== undefined) {
        const where = addr.length === 16 ? `[${formatAddress(addr)}]:${port}` : `${formatAddress(addr)}:${port}`;
        throw new ConfigError(
          `service ${s.name}`,
          `origin ${where} is inside edgeproxy's own bindings (${protocol} ${formatPrefix(table.prefix)}), so ${protocol === "udp" ? "datagrams" : "connections"} would loop back; exclude it from --ports/--prefix`,
        );
      }
    }
  }
}

/** Refuse a TCP admin listener that service bindings would capture: nothing admin-facing on steered ports. */
export function rejectAdminInBindings(admin: ServeConfig["admin"], bindings: readonly Binding[]): void {
  if (admin.kind !== "tcp") return;
  const addr = parseAddress(admin.host);
  if (!addr) return;
  const table = compileBindings(bindings.filter((b) => b.service !== 0 && b.protocol === "tcp"))
    .filter((t) => prefixContains(t.prefix, addr))
    .sort((a, b) => b.prefix.length - a.prefix.length)[0];
  const service = table ? serviceForPort(table, admin.port) : 0;
  if (service !== 0) {
    const owner = bindings.find((b) => b.service === service)?.owner ?? `service ${service}`;
    throw new ConfigError("admin.listen", `${admin.host}:${admin.port} lies inside the bindings of ${owner}; the admin API must not be reachable from steered ports`);
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
      describePool(s.pool)
    }${s.http?.routes.length ? ` (+${s.http.routes.length} routes)` : ""}`,
  );
}

export { formatBinding };
export { holesForListeners } from "../dispatcher/holes";
