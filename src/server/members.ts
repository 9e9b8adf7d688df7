import type { Family } from "../config/address";
import type { Protocol } from "../dispatcher/binding";
import type { Registry } from "../dispatcher/registry";
import { EP_SOCKET_MEMBERS } from "../dispatcher/abi";
import type { GroupPlan } from "../proxy/group";
import type { ServiceSocket } from "../proxy/service";

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

/** Record the sockets' groups and register them as this process's member of the service's slots. */
export function registerMembers(registry: Registry, service: number, protocol: Protocol, sockets: readonly ServiceSocket[], member: number): void {
  for (const s of sockets) {
    registry.setGroupPort(service, protocol, s.family, s.port);
    registry.setSocket(service, protocol, s.family, s.fd, { pid: process.pid, fd: s.fd }, member);
  }
}

/**
 * Remove the member entries this process registered for a service (entries
 * another process has taken over since are left alone). Returns whether some
 * other process still serves the service, in which case its bindings stay.
 */
export function withdrawMembers(registry: Registry, service: number): boolean {
  let others = false;
  for (const protocol of ["tcp", "udp"] as const) {
    for (const family of [4, 6] as const) {
      for (let m = 0; m < EP_SOCKET_MEMBERS; m++) {
        const owner = registry.owner(service, protocol, family, m);
        if (!owner) continue;
        if (owner.pid === process.pid) registry.removeSocket(service, protocol, family, m);
        else others = true;
      }
    }
  }
  return others;
}
