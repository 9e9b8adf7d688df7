import { lookup } from "node:dns/promises";
import { dialledAddress, formatAddress, formatPrefix, parseAddress, prefixContains } from "../config/address";
import { describeServicePool, formatOrigin, poolsOf } from "../config/pool";
import { formatPorts, type PortRange } from "../config/ports";
import { transportOf, type AdminConfig, type OriginConfig, type ServiceConfig } from "../config/service";
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
 * Every check that a config (at start, at reload, or with the admin API's
 * bindings) cannot reach edgeproxy itself: origins are resolved, then
 * rejectLoops and rejectAdminReach run. Resolves to the resolved origins.
 */
export async function refuseSelfReach(admin: AdminConfig, services: readonly ServiceConfig[], bindings: readonly Binding[] = serviceBindings(services)): Promise<ResolvedOrigins> {
  const origins = await resolveOrigins(services);
  rejectLoops(services, bindings, origins);
  rejectAdminReach(admin, services, bindings, origins);
  return origins;
}

/**
 * The ports an origin of service `s` may be dialled on: its port, its port
 * range, or (port-preserving) every port the service binds over its own
 * protocol.
 */
function originPorts(s: ServiceConfig, o: OriginConfig): readonly PortRange[] {
  if (o.ports) return [o.ports];
  if (o.port !== undefined) return [{ lo: o.port, hi: o.port }];
  return s.bindings.filter((b) => b.protocol === transportOf(s.mode)).flatMap((b) => b.ports);
}

const shownAt = (addr: Uint8Array, port: number) => (addr.length === 16 ? `[${formatAddress(addr)}]:${port}` : `${formatAddress(addr)}:${port}`);

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
    for (const o of poolsOf(s).flatMap((p) => p.origins)) for (const addr of (origins.get(o.host) ?? []).map(dialledAddress)) {
      const table = tablesOf[protocol]
        .filter((t) => prefixContains(t.prefix, addr))
        .sort((a, b) => b.prefix.length - a.prefix.length)[0];
      if (!table) continue;
      const port = originPorts(s, o)
        .map((r) => firstSteered(table.ranges, r.lo, r.hi))
        .find((p) => p !== undefined);
      if (port !== undefined) {
        throw new ConfigError(
          `service ${s.name}`,
          `origin ${shownAt(addr, port)} is inside edgeproxy's own bindings (${protocol} ${formatPrefix(table.prefix)}), so ${protocol === "udp" ? "datagrams" : "connections"} would loop back; exclude it from --ports/--prefix`,
        );
      }
    }
  }
}

/**
 * Refuse every way a client could reach a TCP admin listener through a
 * service: a binding that steers its address and port to a service, or an
 * origin (of the service's pool or of a route's) that is its address and
 * port (0.0.0.0, :: and IPv4-mapped forms included: see dialledAddress), to
 * which clients would be proxied. Nothing admin-facing on steered ports. A
 * unix-socket admin API is reachable by neither.
 */
export function rejectAdminReach(admin: AdminConfig, services: readonly ServiceConfig[], bindings: readonly Binding[], origins: ResolvedOrigins): void {
  if (admin.kind !== "tcp") return;
  const addr = parseAddress(admin.host);
  if (!addr) return;
  const at = shownAt(addr, admin.port);
  const table = compileBindings(bindings.filter((b) => b.service !== 0 && b.protocol === "tcp"))
    .filter((t) => prefixContains(t.prefix, addr))
    .sort((a, b) => b.prefix.length - a.prefix.length)[0];
  const service = table ? serviceForPort(table, admin.port) : 0;
  if (service !== 0) {
    const owner = bindings.find((b) => b.service === service)?.owner ?? `service ${service}`;
    throw new ConfigError("admin.listen", `${at} lies inside the bindings of ${owner}; the admin API must not be reachable from steered ports`);
  }
  for (const s of services) {
    if (transportOf(s.mode) !== "tcp") continue;
    for (const o of poolsOf(s).flatMap((p) => p.origins)) {
      if (!(origins.get(o.host) ?? []).some((a) => sameAddress(dialledAddress(a), addr))) continue;
      if (originPorts(s, o).some((r) => r.lo <= admin.port && admin.port <= r.hi)) {
        throw new ConfigError(`service ${s.name}`, `origin ${formatOrigin(o)} reaches the admin API on ${at}; clients would be proxied to it: use another origin or move the admin listener`);
      }
    }
  }
}

const sameAddress = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

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
      describeServicePool(s)
    }${s.http?.routes.length ? ` (+${s.http.routes.length} routes)` : ""}${s.sniRoutes ? ` (+${s.sniRoutes.length} sni routes)` : ""}`,
  );
}

export { formatBinding };
export { holesForListeners } from "../dispatcher/holes";
