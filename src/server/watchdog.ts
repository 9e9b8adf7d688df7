import { closeSync, existsSync, openSync } from "node:fs";
import { join } from "node:path";
import { decodeServiceInfo, EP_SOCKET_MEMBERS, sizes, u32 } from "../dispatcher/abi";
import { MAPS, type Dispatcher } from "../dispatcher/dispatcher";
import { netnsInode } from "../dispatcher/pins";
import type { Registry } from "../dispatcher/registry";
import { linkInfo, mapInfo, objGet, programInfo } from "../ebpf/libbpf";
import { errno, libc } from "../ebpf/libc";
import type { ServiceSocket } from "../proxy/service";

/*
 * The truth about steering (issue 16, item 4). The pinned dispatcher can go
 * while an instance serves: `edgeproxy down --force`, `rm -rf` of the pins,
 * another tool detaching the link or deleting SOCKMAP entries. The program
 * then no longer runs (the link went with its last reference) or no longer
 * finds our sockets, and every new connection and UDP flow on the steered
 * addresses is refused, while the process itself looks healthy. So every
 * instance checks, every WATCH_MS, that what steers its traffic is in place.
 *
 * When it is not, the instance stops: it says so in one line, its health
 * check fails from then on, it drains (open connections do not need the
 * steering) and exits 1. It does not put the pins back: `down` and a deleted
 * pin are someone's deliberate act, which a process re-pinning behind their
 * back would undo; a restart (systemd's Restart=on-failure) builds the
 * steering anew through the one start path, with every check of a start.
 */

/** How often the steering is verified: a loss is noticed within this plus one check, well inside the second promised (a busy machine delays timers). */
export const WATCH_MS = 250;

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

/** What the watchdog looks at: a running Server (structurally, so the watchdog needs no Server import). */
export interface Watched {
  readonly dispatcher: Dispatcher;
  readonly registry: Registry;
  readonly bpffs: string;
  /** This process's member entry in every slot (members.ts). */
  readonly member: number;
  readonly running: ReadonlyMap<string, { readonly id: number; readonly svc: { readonly protocol: "tcp" | "udp" }; readonly sockets: readonly ServiceSocket[] }>;
}

/** One verification: `lost` says what is missing (undefined: all in place); `replaced` that a socket of a newer instance joined our slots (only when asked, see watchForSuccessor). */
export interface SteeringCheck {
  readonly lost?: string;
  readonly replaced: boolean;
}

/** The kernel ids of the maps this process holds, by pin name. */
function heldMapIds(d: Dispatcher): Map<string, number> {
  return new Map(MAPS.map((m) => [m, mapInfo(d.maps[m].fd, `read info of map ${m}`).id]));
}

function withObj<T>(path: string, what: string, fn: (fd: number) => T): T {
  const fd = objGet(path, `open ${what}`);
  try {
    return fn(fd);
  } finally {
    libc.close(fd);
  }
}

/**
 * Are the maps pinned in `dir` the ones `d` holds? A process whose pins were
 * removed, and then re-created by another start, holds orphaned maps: it must
 * not remove the new pins when its own services are gone from them.
 */
export function pinsAreOurs(d: Dispatcher, dir: string): boolean {
  try {
    return withObj(join(dir, "ep_services"), "pinned map ep_services", (fd) => mapInfo(fd).id) === mapInfo(d.maps.ep_services.fd).id;
  } catch {
    return false;
  }
}

/**
 * Verify that what steers this process's traffic is in place: the pinned
 * directory, the link attached to this namespace and running the pinned
 * program, every pinned map being the map this process holds (by kernel id),
 * each running service still registered under its id, and each of its slots
 * recording our reuseport group and holding a socket. Any socket in the slot
 * will do: any member entry reaches the whole group (members.ts), and an
 * upgrade's successor overwrites ours on purpose. Runs under the pin lock so
 * it never sees a change half-made; undefined when the lock is busy (the
 * next check will see).
 */
export function checkSteering(w: Watched, dir: string, heldIds: ReadonlyMap<string, number>, known?: ReadonlySet<bigint>): SteeringCheck | undefined {
  const root = join(w.bpffs, "edgeproxy");
  let lockFd: number;
  try {
    lockFd = openSync(root, "r");
  } catch {
    return { lost: `${root} was removed`, replaced: false };
  }
  try {
    if (libc.flock(lockFd, LOCK_EX | LOCK_NB) !== 0) {
      if (errno() === 11) return undefined; // EWOULDBLOCK: someone is changing the pins right now
      return { lost: `cannot lock ${root}`, replaced: false };
    }
    try {
      return { lost: missing(w, dir, heldIds), replaced: replaced(w, known) };
    } finally {
      libc.flock(lockFd, LOCK_UN);
    }
  } finally {
    closeSync(lockFd);
  }
}

function missing(w: Watched, dir: string, heldIds: ReadonlyMap<string, number>): string | undefined {
  if (!existsSync(dir)) return `the pinned dispatcher ${dir} was removed`;
  try {
    const progId = withObj(join(dir, "prog"), "pinned program", (fd) => programInfo(fd).id);
    const link = withObj(join(dir, "link"), "pinned link", (fd) => linkInfo(fd));
    if (link.netnsIno !== netnsInode()) return `the sk_lookup link ${join(dir, "link")} is detached from this network namespace`;
    if (link.progId !== progId) return `the sk_lookup link runs program id ${link.progId}, not the pinned ${progId}`;
    for (const [name, id] of heldIds) {
      const pinned = withObj(join(dir, name), `pinned map ${name}`, (fd) => mapInfo(fd).id);
      if (pinned !== id) return `map ${name} pinned in ${dir} is another map (id ${pinned}, ours ${id})`;
    }
  } catch (e) {
    return `${(e as Error).message}`;
  }
  for (const [name, r] of w.running) {
    // One lookup per service of ours, not a walk of every service.
    const info = w.dispatcher.maps.ep_services.lookup(u32(r.id), new Uint8Array(sizes.ep_service_info));
    if (!info || decodeServiceInfo(info).name !== name) return `service ${name} is no longer registered in the dispatcher`;
    for (const s of r.sockets) {
      const slot = `service ${name} ${r.svc.protocol}/ipv${s.family}`;
      if (w.registry.groupPort(r.id, r.svc.protocol, s.family) !== s.port) return `${slot}: the dispatcher records another socket group than ours (port ${s.port})`;
      let any = false;
      for (let m = 0; m < EP_SOCKET_MEMBERS && !any; m++) any = w.dispatcher.hasSocket(r.id, r.svc.protocol, s.family, m);
      if (!any) return `${slot}: no socket registered (its connections are refused)`;
    }
  }
  return undefined;
}

/** The cookies registered in our services' slots now (ours and our sibling workers'). */
function slotCookies(w: Watched): Set<bigint> {
  const out = new Set<bigint>();
  for (const r of w.running.values()) {
    for (const s of r.sockets) {
      for (let m = 0; m < EP_SOCKET_MEMBERS; m++) {
        const c = w.dispatcher.socketCookie(r.id, r.svc.protocol, s.family, m);
        if (c !== undefined) out.add(c);
      }
    }
  }
  return out;
}

/** A socket not `known` (registered when we started watching for it) is in one of our slots: a newer instance joined. */
function replaced(w: Watched, known: ReadonlySet<bigint> | undefined): boolean {
  if (!known) return false;
  for (const c of slotCookies(w)) if (!known.has(c)) return true;
  return false;
}

/**
 * Runs checkSteering every WATCH_MS: `onLost` once when the steering is gone
 * (then it stops), `onReplaced` (each check while true) once watchForSuccessor()
 * was called and a socket of a newer instance joined our slots. `lost` stays
 * set for the health check.
 */
export class SteeringWatchdog {
  lost: string | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly heldIds: Map<string, number>;
  private known: Set<bigint> | undefined;
  private stopped = false;

  constructor(
    private readonly watched: Watched,
    private readonly dir: string,
    private readonly onLost: (why: string) => void,
    private readonly onReplaced: () => void = () => {},
  ) {
    this.heldIds = heldMapIds(watched.dispatcher);
  }

  start(): void {
    this.timer ??= setInterval(() => this.check(), WATCH_MS);
    // The serve holds its loop open itself; this timer must not keep a stopped process alive.
    this.timer.unref();
  }

  /** No more checks (the process withdraws its services itself: a stop, a drain). */
  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /**
   * From now on report (onReplaced) a socket that joins our slots: the
   * sockets registered now are ours and our sibling workers', and with our
   * supervisor gone nothing restarts a sibling, so a new one is a newer
   * instance's (which joined our reuseport groups, as an upgrade does).
   */
  watchForSuccessor(): void {
    this.known ??= slotCookies(this.watched);
  }

  /**
   * For /healthz: undefined when this process's traffic is steered to it
   * (checked now), else why not. A stopped watchdog's process is withdrawing
   * its services (a stop, a drain): not steered either.
   */
  health(): string | undefined {
    const why = this.check();
    if (why) return `steering lost: ${why}`;
    return this.stopped ? "stopping: its services are withdrawn" : undefined;
  }

  /** Check now; the reason the steering is gone, or undefined (in place, or not checkable this instant). */
  check(): string | undefined {
    if (this.lost || this.stopped) return this.lost;
    let result: SteeringCheck | undefined;
    try {
      result = checkSteering(this.watched, this.dir, this.heldIds, this.known);
    } catch (e) {
      result = { lost: `checking the steering failed: ${(e as Error).message}`, replaced: false };
    }
    if (result?.lost) {
      this.lost = result.lost;
      this.stop();
      this.onLost(result.lost);
    } else if (result?.replaced) this.onReplaced();
    return this.lost;
  }
}
