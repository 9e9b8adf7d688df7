import { readFileSync } from "node:fs";
import { join } from "node:path";
import { decodeOwner, sizes } from "../dispatcher/abi";
import type { Registry } from "../dispatcher/registry";
import { BpfMap } from "../ebpf/libbpf";
import { listeners } from "../system/listeners";

/**
 * A process that serves through the pinned dispatcher right now, as today's
 * records tell: an open socket in a SOCKMAP member entry (a closed socket
 * leaves the map by itself, so an entry proves a live owner) and the pid its
 * owner wrote beside it in ep_owners (as that process saw itself: display
 * only, see Registry.owner()).
 *
 * Stand-in until instances have records of their own (names, pids, admin
 * sockets: branch `ctlplane`); callers use only `describe`, so swapping the
 * source keeps them unchanged.
 */
export interface LiveInstance {
  readonly pid: number;
  /** The supervisor of a worker, when /proc says so (same executable as the worker). */
  readonly supervisor?: number;
  readonly services: readonly string[];
  /** "pid 1234 (worker of pid 1230; services web, dns)" */
  readonly describe: string;
}

/**
 * The supervisor of `pid` when it is a worker (its environment names its
 * index, EDGEPROXY_WORKER, see cli/supervisor.ts): its parent, or 0 when
 * that is gone (the worker was reparented). Undefined: not a worker, or
 * /proc does not say (another PID namespace, no permission).
 */
function supervisorOf(pid: number): number | undefined {
  try {
    if (!readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").some((v) => v.startsWith("EDGEPROXY_WORKER="))) return undefined;
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 4 (ppid) follows the ")" that ends comm, which may hold spaces.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid <= 1) return 0;
    const parentIsWorker = readFileSync(`/proc/${ppid}/environ`, "utf8").includes("EDGEPROXY_WORKER=");
    const program = (p: number) => readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0")[0];
    return ppid > 1 && !parentIsWorker && program(ppid) === program(pid) ? ppid : 0;
  } catch {
    return undefined;
  }
}

function byPid(entries: Iterable<{ pid: number; service?: string }>): LiveInstance[] {
  const out = new Map<number, Set<string>>();
  for (const e of entries) {
    let set = out.get(e.pid);
    if (!set) out.set(e.pid, (set = new Set()));
    if (e.service) set.add(e.service);
  }
  return [...out].map(([pid, set]) => {
    const services = [...set].sort();
    const supervisor = supervisorOf(pid);
    const role = supervisor === undefined ? "" : supervisor ? `worker of pid ${supervisor}` : "worker, its supervisor gone";
    const what = [role, services.length ? `service${services.length > 1 ? "s" : ""} ${services.join(", ")}` : ""].filter(Boolean);
    return { pid, ...(supervisor ? { supervisor } : {}), services, describe: `pid ${pid}${what.length ? ` (${what.join("; ")})` : ""}` };
  });
}

/**
 * Every live instance process of the registry, by pid: the owners of open
 * sockets that listen on their slot's recorded reuseport group port, which
 * only a serve records (members.ts). A socket put there with `edgeproxy
 * register` belongs to another program, which has no watchdog to tell; it
 * is not an instance. Call under the pin lock.
 */
export function liveInstances(registry: Registry): LiveInstance[] {
  const names = new Map(registry.services().map((s) => [s.id, s.name]));
  const ports = new Map([...listeners("tcp"), ...listeners("udp")].map((l) => [l.cookie, l.port]));
  const served = registry.sockets().filter((s) => {
    const group = registry.groupPort(s.service, s.protocol, s.family);
    return group !== undefined && ports.get(s.cookie) === group;
  });
  return byPid(served.map((s) => ({ pid: s.pid, service: names.get(s.service) ?? `#${s.service}` })));
}

/**
 * The same from the two maps alone (ep_owners' keys, each checked for a
 * socket in ep_sockets), for a pinned dispatcher this edgeproxy cannot open
 * whole (another version's incompatible maps): no service names, and every
 * registered socket counts (its ep_groups may be what is incompatible).
 * Throws when even those cannot be read.
 */
export function liveInstancesRaw(dir: string): LiveInstance[] {
  const owners = BpfMap.fromPin(join(dir, "ep_owners"), "ep_owners");
  const sockets = BpfMap.fromPin(join(dir, "ep_sockets"), "ep_sockets");
  try {
    const valueSize = sockets.definition().valueSize;
    const live: { pid: number }[] = [];
    for (const key of owners.keys(4)) {
      const owner = owners.lookup(key, new Uint8Array(sizes.ep_owner));
      if (owner && sockets.lookup(key, new Uint8Array(valueSize))) live.push({ pid: decodeOwner(owner).pid });
    }
    return byPid(live);
  } finally {
    owners.close();
    sockets.close();
  }
}
