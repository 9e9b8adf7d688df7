import type { Family } from "../config/address";
import type { Protocol } from "../dispatcher/binding";
import type { Registry } from "../dispatcher/registry";
import { EP_SOCKET_MEMBERS } from "../dispatcher/abi";
import type { GroupPlan } from "../proxy/group";
import type { ServiceSocket } from "../proxy/service";
import type { CapSteering } from "./steering";

/*
 * A service's slot (service, protocol, family) holds up to EP_SOCKET_MEMBERS
 * sockets, all in one SO_REUSEPORT group on a recorded loopback port: worker
 * i registers as member i % EP_SOCKET_MEMBERS, and the next process of an
 * upgrade overwrites the entries of the one it replaces. Any entry reaches
 * the whole group, so entries only need to be live, not complete.
 */

/** The member entry a worker uses. */
export const memberOf = (worker: number): number => worker % EP_SOCKET_MEMBERS;

/**
 * Listen plan for a service: join the slot's recorded group, unless another
 * slot now records that port (its group died and the port went to another
 * service: joining would merge the two groups). Call under the pin lock and
 * record each service's ports before planning the next.
 */
export function groupPlan(registry: Registry, service: number, protocol: Protocol, migrateFd: number | undefined): GroupPlan {
  const ports = new Map<Family, number>();
  for (const family of [4, 6] as const) {
    const port = registry.groupPort(service, protocol, family);
    ports.set(family, port !== undefined && !registry.otherGroupPorts(service, protocol, family).has(port) ? port : 0);
  }
  // Only TCP listeners migrate their queues; UDP has none to hand over.
  return { port: (f) => ports.get(f) ?? 0, migrateFd: protocol === "tcp" ? migrateFd : undefined };
}

/**
 * Record the sockets' groups and register them as this process's member of
 * the service's slots; TCP listeners also join their group's member
 * selection (steering.ts) when `steering` is given.
 */
export function registerMembers(registry: Registry, service: number, protocol: Protocol, sockets: readonly ServiceSocket[], member: number, steering?: CapSteering): void {
  for (const s of sockets) {
    registry.setGroupPort(service, protocol, s.family, s.port);
    registry.setSocket(service, protocol, s.family, s.fd, { pid: process.pid, fd: s.fd }, member);
  }
  if (protocol === "tcp") steering?.register(service, sockets);
}

/** The cookies of a service's sockets: what makes a member entry this process's own. */
export const cookiesOf = (sockets: readonly ServiceSocket[]): Set<bigint> => new Set(sockets.map((s) => s.cookie));

/**
 * Remove the member entries that hold one of `mine` (this process's sockets
 * of the service, by cookie); entries another process has taken over since
 * are left alone. Returns whether some other socket is still registered for
 * the service, in which case its bindings stay.
 *
 * Identity is the socket cookie the SOCKMAP itself returns, not ep_owners'
 * pid/fd: edgeproxy instances in separate PID namespaces (containers sharing
 * a bpffs) have the same pids and fd numbers. Liveness is the entry's
 * presence: a closed socket leaves the SOCKMAP by itself (sock_map_close(),
 * Documentation/bpf/map_sockmap.rst), so an entry that is there belongs to a
 * socket that is open, wherever its owner is. Call under the pin lock.
 */
export function withdrawMembers(registry: Registry, service: number, mine: ReadonlySet<bigint>): boolean {
  let others = false;
  for (const protocol of ["tcp", "udp"] as const) {
    for (const family of [4, 6] as const) {
      for (let m = 0; m < EP_SOCKET_MEMBERS; m++) {
        const cookie = registry.dispatcher.socketCookie(service, protocol, family, m);
        if (cookie === undefined) continue;
        if (mine.has(cookie)) registry.removeSocket(service, protocol, family, m);
        else others = true;
      }
    }
  }
  return others;
}
