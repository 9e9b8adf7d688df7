import { openSync } from "node:fs";
import type { Prefix } from "../config/address";
import { EdgeError } from "../errors";
import { KernelError, possibleCpus } from "../ebpf/libbpf";
import { BpfMap } from "../ebpf/map";
import { BpfObject, programInfo, type BpfLink, type BpfProgram } from "../ebpf/object";
import { Fd } from "../system/fd";
import * as abi from "./abi";
import * as sabi from "./sourceabi";
import type { Binding, Protocol } from "./binding";
import { applyGeneration, type AppliedBindings, type ServiceAccess } from "./generation";
import { Selection } from "./selection";

/** A dispatcher step failed; `cause` has the kernel's or libbpf's reason. */
export class DispatcherError extends EdgeError {
  constructor(where: string, options: { cause: unknown }) {
    const c = options.cause;
    super(where, c instanceof Error ? c.message : String(c), c instanceof EdgeError ? c.fault : "kernel", options);
  }
}

export const PROGRAM = "ep_dispatch";
/** The kernel's tags of an object's programs (bpf_prog_info.tag). */
export interface ProgramTags {
  readonly dispatch: string;
  readonly migrate?: string;
  readonly source?: string;
}
/** The sk_reuseport program attached to every TCP group: a closing listener's queue migrates, and new connections go to a worker below its cap (bpf/reuseport.h). */
export const MIGRATE_PROGRAM = "ep_migrate";
/** The syscall program that counts clients' open connections (bpf/sourcelimit.h, ep_source). */
export const SOURCE_PROGRAM = "ep_source";
/** Every map of bpf/dispatcher.bpf.c (and bpf/sourcelimit.h, bpf/reuseport.h), by its pin name. */
export const MAPS = [
  "ep_state", "ep_prefixes", "ep_hosts", "ep_ranges", "ep_sockets", "ep_counters", "ep_service_flags", "ep_access", "ep_services", "ep_bindings", "ep_rules", "ep_owners", "ep_groups",
  "ep_limits", "ep_source_conns", "ep_source_rate", "ep_source_owners", "ep_limit_counters", "ep_limit_exempt",
  "ep_reuse_members", "ep_reuse_groups", "ep_reuse_listeners", "ep_reuse_counters", "ep_reuse_tier_counters",
] as const;
export type MapName = (typeof MAPS)[number];
const EAGAIN = 11;

/**
 * The sk_lookup dispatcher's maps and the operations on them. The maps come
 * either from a BPF object loaded by this process (load(): it owns program,
 * maps and, after attach(), the link) or from bpffs pins (fromMaps(): it owns
 * only its fds). close() releases what it owns and is idempotent.
 */
export class Dispatcher {
  private link: BpfLink | undefined;
  private readonly cpus = possibleCpus();

  private constructor(
    readonly maps: Readonly<Record<MapName, BpfMap>>,
    private readonly object?: BpfObject,
    readonly program?: BpfProgram,
    /** The migrate program's fd when it came from a pin (owned); a loaded object's is `object`'s. */
    private readonly pinnedMigrateFd?: Fd,
    /** The same for the ep_source program (absent when the pinned dispatcher predates it). */
    private readonly pinnedSourceFd?: Fd,
  ) {}

  /** An fd of the ep_source program (counting clients' connections); undefined if there is none. */
  get sourceFd(): number | undefined {
    if (this.object) return this.object.hasProgram(SOURCE_PROGRAM) ? this.object.program(SOURCE_PROGRAM).fd : undefined;
    return this.pinnedSourceFd?.raw;
  }

  /** An fd of the sk_reuseport migrate program, for SO_ATTACH_REUSEPORT_EBPF; undefined if there is none. */
  get migrateFd(): number | undefined {
    if (this.object) return this.object.program(MIGRATE_PROGRAM).fd;
    return this.pinnedMigrateFd?.raw;
  }

  /** Create the maps and load the program; nothing steers until attach(). */
  static load(image: Uint8Array): Dispatcher {
    return Dispatcher.loadWith(image, () => {});
  }

  /**
   * The tag the kernel gives the image's sk_lookup program, from a load with
   * every map shrunk to one entry: the tag hashes the instructions as
   * submitted, with map references zeroed (kernel/bpf/core.c,
   * bpf_prog_calc_tag), so map sizes do not enter it, and the full maps
   * (megabytes of arrays and preallocated hashes) cost most of a load.
   */
  static programTag(image: Uint8Array): string {
    return Dispatcher.programTags(image).dispatch;
  }

  /** The same for each of the image's programs: ep_dispatch, and ep_migrate and ep_source when it has them. */
  static programTags(image: Uint8Array): ProgramTags {
    const d = Dispatcher.loadWith(image, (object) => {
      for (const m of object.maps()) m.setMaxEntries(1);
    });
    try {
      return {
        dispatch: programInfo(d.program!.fd).tag,
        ...(d.migrateFd !== undefined ? { migrate: programInfo(d.migrateFd).tag } : {}),
        ...(d.sourceFd !== undefined ? { source: programInfo(d.sourceFd).tag } : {}),
      };
    } finally {
      d.close();
    }
  }

  /**
   * Load the object over existing maps: each of its maps named in `existing`
   * reuses that map (bpf_map__reuse_fd) instead of being created, so the new
   * program sees the same bindings, sockets and counters. The caller checks
   * the definitions first (compat.ts). `created` are the object's other maps,
   * made by the load and owned by the returned dispatcher's object.
   */
  static loadOver(image: Uint8Array, existing: ReadonlyMap<string, BpfMap>): { dispatcher: Dispatcher; created: BpfMap[] } {
    let created: BpfMap[] = [];
    const dispatcher = Dispatcher.loadWith(image, (object) => {
      const all = object.maps();
      for (const m of all) {
        const have = existing.get(m.name);
        if (have) m.reuseFd(have.fd);
      }
      created = all.filter((m) => !existing.has(m.name));
    });
    return { dispatcher, created };
  }

  private static loadWith(image: Uint8Array, prepare: (object: BpfObject) => void): Dispatcher {
    // The verifier gives up with EAGAIN when a signal interrupts it (libbpf
    // retries 5 times at once); a busy signal source, such as a profiler,
    // can outlast that, so try again a few times after a pause.
    for (let attempt = 1; ; attempt++) {
      const object = BpfObject.open(image);
      try {
        const program = object.program(PROGRAM);
        const maps = Object.fromEntries(MAPS.map((m) => [m, object.map(m)])) as Record<MapName, BpfMap>;
        prepare(object);
        object.load();
        return new Dispatcher(maps, object, program);
      } catch (cause) {
        object.close();
        if (cause instanceof KernelError && cause.errno === EAGAIN && attempt < 5) {
          Bun.sleepSync(10 * attempt);
          continue;
        }
        throw new DispatcherError("load dispatcher", { cause });
      }
    }
  }

  /** A dispatcher over maps opened elsewhere (from pins); takes ownership of their fds. */
  static fromMaps(maps: Record<MapName, BpfMap>, migrateFd?: Fd, sourceFd?: Fd): Dispatcher {
    return new Dispatcher(maps, undefined, undefined, migrateFd, sourceFd);
  }

  /** Attach to the calling process's network namespace. Returns the link (owned here). */
  attach(): BpfLink {
    if (this.link) return this.link;
    if (!this.program) throw new EdgeError("attach netns", "a pinned dispatcher is attached already", "internal");
    let ns: Fd | undefined;
    try {
      ns = new Fd(openSync("/proc/self/ns/net", "r"), "/proc/self/ns/net");
      this.link = this.program.attachNetns(ns.raw);
      return this.link;
    } catch (cause) {
      throw new DispatcherError("attach netns", { cause });
    } finally {
      ns?.close();
    }
  }

  /** Undo attach(): the program stops steering (a pinned link stays attached). Idempotent. */
  detach(): void {
    this.link?.close();
    this.link = undefined;
  }

  /**
   * Replace every binding and access rule at once: written under the idle
   * generation, then switched to in one write (generation.ts); a failure
   * leaves the live generation untouched.
   */
  apply(bindings: readonly Binding[], access: readonly ServiceAccess[] = []): AppliedBindings {
    return applyGeneration(this.maps, bindings, access);
  }

  /**
   * Steer (service, protocol, family) to the socket open at fd, as member
   * `member` of the slot (SOCKMAP takes its own reference). The program uses
   * the first member present; members are expected to share one reuseport group.
   */
  setSocket(service: number, protocol: Protocol, family: 4 | 6, fd: number, member = 0): void {
    try {
      this.maps.ep_sockets.update(abi.u32(abi.memberKey(abi.socketSlot(service, protocol, family), member)), abi.u64(fd));
    } catch (cause) {
      throw new DispatcherError(`register ${protocol}/ipv${family} socket of service ${service} (member ${member})`, { cause });
    }
  }

  /** False when the member's entry was empty. */
  removeSocket(service: number, protocol: Protocol, family: 4 | 6, member = 0): boolean {
    try {
      return this.maps.ep_sockets.delete(abi.u32(abi.memberKey(abi.socketSlot(service, protocol, family), member)));
    } catch (e) {
      // An empty SOCKMAP slot answers delete with EINVAL, not ENOENT (net/core/sock_map.c).
      if (e instanceof KernelError && e.errno === 22) return false;
      throw e;
    }
  }

  /**
   * The socket cookie of the member's socket, or undefined when none is
   * registered (a SOCKMAP lookup from user space yields the cookie).
   */
  socketCookie(service: number, protocol: Protocol, family: 4 | 6, member = 0): bigint | undefined {
    const v = this.maps.ep_sockets.lookup(abi.u32(abi.memberKey(abi.socketSlot(service, protocol, family), member)), new Uint8Array(8));
    return v && new DataView(v.buffer).getBigUint64(0, true);
  }

  /** Is a socket registered as this member? */
  hasSocket(service: number, protocol: Protocol, family: 4 | 6, member = 0): boolean {
    return this.socketCookie(service, protocol, family, member) !== undefined;
  }

  /** The member selection of TCP reuseport groups (ep_migrate): its maps. */
  get selection(): Selection {
    return (this.selectionView ??= new Selection(this.maps, this.cpus));
  }
  private selectionView: Selection | undefined;

  /** Counters summed over CPUs; service 0 counts lookups that matched no binding. */
  counters(service: number): abi.ServiceCounters {
    const buf = new Uint8Array(abi.sizes.ep_service_counters * this.cpus);
    const v = this.maps.ep_counters.lookup(abi.u32(service), buf);
    if (!v) throw new KernelError(`read counters of service ${service}`, 2);
    return abi.decodeServiceCounters(v, this.cpus);
  }

  /** Zero a service's counters and limits (a new service must not inherit a removed one's). */
  resetCounters(service: number): void {
    this.maps.ep_counters.update(abi.u32(service), new Uint8Array(abi.sizes.ep_service_counters * this.cpus));
    this.selection.resetCounters(service);
    this.maps.ep_limit_counters.update(abi.u32(service), new Uint8Array(abi.sizes.ep_limit_counters * this.cpus));
    this.setSourceLimit(service, sabi.NO_SOURCE_LIMIT);
  }

  /** SYNs the program refused for a per-client limit, summed over CPUs. */
  limitCounters(service: number): sabi.LimitCounters {
    const buf = new Uint8Array(abi.sizes.ep_limit_counters * this.cpus);
    const v = this.maps.ep_limit_counters.lookup(abi.u32(service), buf);
    if (!v) throw new KernelError(`read limit counters of service ${service}`, 2);
    return sabi.decodeLimitCounters(v, this.cpus);
  }

  /** Set a service's per-client limits (ep_limits); NO_SOURCE_LIMIT turns them off. */
  setSourceLimit(service: number, limit: sabi.SourceLimitEntry): void {
    try {
      this.maps.ep_limits.update(abi.u32(service), sabi.encodeSourceLimit(limit));
    } catch (cause) {
      throw new DispatcherError(`set per-client limits of service ${service}`, { cause });
    }
  }

  /**
   * The sources the program does not limit for a service (its accept_proxy
   * load balancers: user space limits the clients their PROXY headers name).
   */
  setLimitExempt(service: number, prefixes: readonly Prefix[]): void {
    const m = this.maps.ep_limit_exempt;
    try {
      for (const key of m.keys(abi.sizes.ep_access_key)) if (new DataView(key.buffer).getUint32(8, false) === service) m.delete(key);
      for (const p of prefixes) m.update(abi.encodeAccessKey(0, service, p), abi.u32(1));
    } catch (cause) {
      throw new DispatcherError(`set the load balancers exempt from per-client limits of service ${service}`, { cause });
    }
  }

  sourceLimit(service: number): sabi.SourceLimitEntry {
    const v = this.maps.ep_limits.lookup(abi.u32(service), new Uint8Array(abi.sizes.ep_source_limit));
    return v ? sabi.decodeSourceLimit(v) : sabi.NO_SOURCE_LIMIT;
  }

  /**
   * Run the loaded program on one connection's context `repeat` times in the
   * kernel (BPF_PROG_TEST_RUN; nothing needs to be attached): its verdict
   * (SK_PASS 1, SK_DROP 0), the kernel's mean ns per run, and the cookie of
   * the socket it assigned (0n: none). The kernel refuses (EOPNOTSUPP) to
   * report a socket in a SO_REUSEPORT group, so benchmarks register plain ones.
   */
  testLookup(input: abi.SkLookupInput, repeat: number): { verdict: number; nsPerRun: number; cookie: bigint } {
    if (!this.program) throw new EdgeError("test-run dispatcher", "only a loaded dispatcher has its program (not one opened from pins)", "internal");
    try {
      const r = this.program.testRun(abi.encodeSkLookup(input), repeat);
      return { verdict: r.retval, nsPerRun: r.nsPerRun, cookie: abi.skLookupCookie(r.ctxOut) };
    } catch (cause) {
      throw new DispatcherError("test-run dispatcher", { cause });
    }
  }

  /** Detach (unless the link is pinned) and free what this owns. Idempotent. */
  close(): void {
    this.link?.close();
    this.link = undefined;
    if (this.object) this.object.close();
    else for (const m of Object.values(this.maps)) m.close();
    this.pinnedMigrateFd?.close();
    this.pinnedSourceFd?.close();
  }
}
