// Listening in a service's SO_REUSEPORT group. Every worker process, and the
// next process of an upgrade, listens on the same loopback port with
// SO_REUSEPORT, so one SOCKMAP entry for any member reaches all of them: the
// kernel applies reuseport selection after bpf_sk_assign()
// (inet_lookup_run_sk_lookup() in net/ipv4/inet_hashtables.c).
import type { Family } from "../config/address";
import { errno, errnoText, libc } from "../system/libc";

/** Where a service's listeners go: per family, its group's port (0: start a new group), and the migrate program. */
export interface GroupPlan {
  port(family: Family): number;
  /** fd of the sk_reuseport migrate program attached to TCP groups (see bpf/reuseport.h, ep_migrate). */
  readonly migrateFd?: number;
}

/** Every listener in a group of its own (in-process tests, tools). */
export const NEW_GROUPS: GroupPlan = { port: () => 0 };

/** Bun.listen option: SO_REUSEPORT before bind. Bun supports it, its type declarations do not list it. */
export const REUSE_PORT = { reusePort: true } as {};

const SOL_SOCKET = 1;
const SO_ATTACH_REUSEPORT_EBPF = 52;

/**
 * Open a listener in the plan's group for `family`: `open(port)` must bind
 * with SO_REUSEPORT. When the recorded port cannot be joined (the group died
 * and something else holds the port now), start a new group on a fresh port;
 * the caller records whatever port the listener got.
 */
export function joinGroup<T>(family: Family, plan: GroupPlan, open: (port: number) => T): T {
  const port = plan.port(family);
  if (port === 0) return open(0);
  try {
    return open(port);
  } catch {
    return open(0);
  }
}

/**
 * Attach the migrate program to the group of the TCP listener open at fd
 * (the program belongs to the group, so one member's attach covers all):
 * when a member closes, its accept queue and half-open connections move to
 * another member instead of being reset (Documentation/networking/ip-sysctl.rst,
 * tcp_migrate_req; net/core/sock_reuseport.c).
 */
export function attachMigrate(fd: number, plan: GroupPlan): void {
  if (plan.migrateFd === undefined) return;
  const v = new Int32Array([plan.migrateFd]);
  if (libc.setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, v, 4) !== 0) {
    throw new Error(`attach the reuseport migrate program: ${errnoText(errno())}`);
  }
}
