import type { AdminBackend, StatusSnapshot } from "../admin/backend";
import { formatPrefix, parsePrefix } from "../config/address";
import { describeServicePool } from "../config/pool";
import { formatPorts, parsePorts } from "../config/ports";
import { ConfigError } from "../errors";
import type { StoredBinding } from "../dispatcher/abi";
import { VERSION } from "../version";
import { refuseSelfReach } from "./bindings";
import { describeReload, reload } from "./reload";
import type { Server } from "./server";
import { accessLogCounts } from "../log/access";
import { CLIENT_COUNTERS } from "../proxy/clients";

function origin(s: Server, name: string): string | undefined {
  const cfg = s.config.services.find((c) => c.name === name);
  return cfg && describeServicePool(cfg);
}

/** The admin API's view of a running server. */
export function serverBackend(server: Server): AdminBackend {
  const reg = server.registry;
  const parse = (service: string, protocol: string, prefix: string, ports: string): StoredBinding[] => {
    if (protocol !== "tcp" && protocol !== "udp") throw new ConfigError("protocol", `"${protocol}" is not tcp or udp`);
    const svc = reg.find(service);
    if (!svc) throw new ConfigError(`service ${service}`, "no such service");
    // The registry is the namespace's, shared by every instance: this API edits only the services this
    // instance runs. Another instance's (or a registered socket's) are changed through their own owner.
    const mine = server.running.get(service);
    if (!mine || mine.id !== svc.id) {
      const owner = server.plane.instances.ownerOf(svc.id);
      const whose = owner === undefined ? "no instance's (edgeproxy bind/unbind changes it)" : `instance ${owner}'s (its own admin API changes it: --instance ${owner})`;
      throw new ConfigError(`service ${service}`, `not served by instance ${server.claim.name}: it is ${whose}; nothing changed`);
    }
    // A service binds its mode's protocol only, as in a config file (a udp binding of a tcp service would steer to no socket).
    if (protocol !== mine.svc.protocol) throw new ConfigError(`service ${service}: protocol`, `a ${mine.svc.protocol} service binds ${mine.svc.protocol} only; nothing changed`);
    const p = parsePrefix(prefix, "prefix");
    return parsePorts(String(ports), "ports").map((r) => ({ service: svc.id, protocol, prefix: p, lo: r.lo, hi: r.hi }));
  };
  // Change a service's stored bindings and rebuild, or put them back; added
  // ones must not overlap another live instance's (checked first, under the lock).
  const change = (service: string, list: StoredBinding[], edit: (b: StoredBinding) => boolean, adds: boolean): number => {
    const plane = server.plane;
    return plane.locked(() => {
      if (adds) plane.checkBindingsLocked(server.claim.name, service, list);
      return plane.transactionLocked([service], () => server.ownInodes(), () => ({ n: list.filter(edit).length })).n;
    });
  };

  return {
    fresh: () => server.planes.sync(),
    status(): StatusSnapshot {
      const sockets = reg.sockets();
      const bindings = reg.bindingsByService();
      const runningById = new Map([...server.running.entries()].map(([name, r]) => [r.id, { name, ...r }]));
      return {
        version: VERSION,
        pid: process.pid,
        startedAt: server.startedAt,
        pinPath: server.report.pinDir,
        unmatchedLookups: server.dispatcher.counters(0).lookups,
        accessLog: accessLogCounts(),
        // Every tracked address (two generations): a supervisor merges its workers' lists before cutting them short.
        clients: server.planes.clientsSnapshot(2 * CLIENT_COUNTERS),
        capacity: {
          max: server.planes.admission.max,
          active: server.planes.admission.active,
          refused: server.planes.admission.refused,
          accepting: server.steering.accepting,
          left: server.steering.left,
          rejoined: server.steering.rejoined,
        },
        services: reg.services().map((s) => {
          const mine = runningById.get(s.id);
          return {
            name: s.name,
            id: s.id,
            mode: mine?.svc.config.mode,
            ...(mine?.svc.config.engine ? { engine: mine.svc.config.engine } : {}),
            origin: mine ? origin(server, s.name) : undefined,
            bindings: (bindings.get(s.id) ?? []).map((b) => ({ protocol: b.protocol, prefix: formatPrefix(b.prefix), ports: formatPorts(b) })),
            sockets: sockets.filter((k) => k.service === s.id).map(({ protocol, family, pid, fd, cookie }) => ({ protocol, family, pid, fd, cookie })),
            kernel: { ...server.dispatcher.counters(s.id), ...server.dispatcher.selection.counters(s.id), limited: server.dispatcher.limitCounters(s.id) },
            ...mine?.svc.report(),
            ...(mine?.svc.sourceLimit ? { sourceLimited: { ...mine.svc.sourceLimit.refused } } : {}),
          };
        }),
      };
    },
    async addBinding(service, protocol, prefix, ports) {
      const list = parse(service, protocol, prefix, ports);
      // The bindings as they would be, checked as a start or reload checks a config:
      // no origin looping back into them, nothing reaching the admin listener.
      const stored = [...reg.bindings(), ...list];
      const names = new Map(reg.services().map((e) => [e.id, e.name]));
      const bindings = stored.map((b) => ({ protocol: b.protocol, prefix: b.prefix, ports: { lo: b.lo, hi: b.hi }, service: b.service, owner: `service ${names.get(b.service)}` }));
      const services = server.config.services.map((cfg) => {
        const id = reg.find(cfg.name)?.id;
        return { ...cfg, bindings: stored.filter((b) => b.service === id).map((b) => ({ protocol: b.protocol, prefixes: [b.prefix], ports: [{ lo: b.lo, hi: b.hi }] })) };
      });
      await refuseSelfReach(server.config.admin, services, bindings);
      change(service, list, (b) => reg.addBinding(b), true);
    },
    removeBinding(service, protocol, prefix, ports) {
      return change(service, parse(service, protocol, prefix, ports), (b) => reg.removeBinding(b), false) > 0;
    },
    async reload() {
      return describeReload(await reload(server));
    },
  };
}
