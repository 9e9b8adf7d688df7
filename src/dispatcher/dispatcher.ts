import { openSync, closeSync } from "node:fs";
import { EdgeError, ConfigError } from "../errors";
import { BpfObject, KernelError, possibleCpus, type BpfLink, type BpfMap, type BpfProgram } from "../ebpf/libbpf";
import * as abi from "./abi";
import type { Binding, Protocol } from "./binding";
import { compileBindings, type PortTable } from "./compile";

/** A dispatcher step failed; `cause` has the kernel's or libbpf's reason. */
export class DispatcherError extends EdgeError {
  constructor(where: string, options: { cause: unknown }) {
    const c = options.cause;
    super(where, c instanceof Error ? c.message : String(c), c instanceof EdgeError ? c.fault : "kernel", options);
  }
}

export interface DispatcherOptions {
  /** LPM trie capacity (both generations together). */
  maxPrefixes?: number;
}

/** What apply() installed. */
export interface AppliedBindings {
  readonly tables: PortTable[];
  readonly gen: number;
}

const PROGRAM = "ep_dispatch";
const EAGAIN = 11;

/**
 * The live sk_lookup dispatcher: owns the loaded BPF object (program and maps)
 * and, once attached, the netns link. close() detaches and frees all of it.
 */
export class Dispatcher {
  private link: BpfLink | undefined;
  private readonly program: BpfProgram;
  private readonly state: BpfMap;
  private readonly prefixes: BpfMap;
  private readonly ranges: BpfMap;
  private readonly sockets: BpfMap;
  private readonly counterMap: BpfMap;
  private readonly cpus: number;

  private constructor(private readonly object: BpfObject) {
    this.program = object.program(PROGRAM);
    this.state = object.map("ep_state");
    this.prefixes = object.map("ep_prefixes");
    this.ranges = object.map("ep_ranges");
    this.sockets = object.map("ep_sockets");
    this.counterMap = object.map("ep_counters");
    this.cpus = possibleCpus();
  }

  /** Create the maps and load the program; nothing steers until attach(). */
  static load(image: Uint8Array, options: DispatcherOptions = {}): Dispatcher {
    // The verifier gives up with EAGAIN when a signal interrupts it (libbpf
    // retries 5 times at once); a busy signal source, such as a profiler,
    // can outlast that, so try again a few times after a pause.
    for (let attempt = 1; ; attempt++) {
      const object = BpfObject.open(image);
      try {
        const d = new Dispatcher(object);
        if (options.maxPrefixes) d.prefixes.setMaxEntries(options.maxPrefixes);
        object.load();
        return d;
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

  /** Attach to the calling process's network namespace. */
  attach(): void {
    if (this.link) return;
    let ns: number | undefined;
    try {
      ns = openSync("/proc/self/ns/net", "r");
      this.link = this.program.attachNetns(ns);
    } catch (cause) {
      throw new DispatcherError("attach netns", { cause });
    } finally {
      if (ns !== undefined) closeSync(ns);
    }
  }

  get attached(): boolean {
    return this.link !== undefined;
  }

  private currentGen(): number {
    const v = this.state.lookup(abi.u32(0), new Uint8Array(abi.sizes.ep_state));
    return v ? abi.decodeState(v).gen : 0;
  }

  /**
   * Replace every binding at once. The new trie entries and port tables are
   * written under the idle generation, then one write of ep_state switches
   * lookups over; a failure before the switch removes what was written and
   * leaves the live generation untouched.
   */
  apply(bindings: readonly Binding[]): AppliedBindings {
    for (const b of bindings) {
      if (b.service < 0 || b.service >= abi.EP_MAX_SERVICES) {
        throw new ConfigError("bindings", `service id ${b.service} is outside 0-${abi.EP_MAX_SERVICES - 1}`);
      }
    }
    const tables = compileBindings(bindings);
    const total = tables.reduce((n, t) => n + t.ranges.length, 0);
    if (total > abi.EP_RANGES_PER_GEN) {
      throw new ConfigError("bindings", `they compile to ${total} port ranges, more than the ${abi.EP_RANGES_PER_GEN} the dispatcher holds`);
    }
    const live = this.currentGen();
    const gen = live ^ 1;
    try {
      this.dropGeneration(gen);
      let next = gen * abi.EP_RANGES_PER_GEN;
      for (const t of tables) {
        const first = next;
        for (const r of t.ranges) this.ranges.update(abi.u32(next++), abi.encodePortRange(r.start, r.service));
        this.prefixes.update(abi.encodePrefixKey(gen, t.protocol, t.prefix), abi.encodePrefixTable(first, t.ranges.length));
      }
      this.state.update(abi.u32(0), abi.encodeState(gen));
    } catch (cause) {
      try {
        this.dropGeneration(gen);
      } catch {
        // The live generation is intact either way; stale idle entries are dropped by the next apply.
      }
      throw new DispatcherError("apply bindings", { cause });
    }
    this.dropGeneration(live);
    return { tables, gen };
  }

  private dropGeneration(gen: number): void {
    for (const key of this.prefixes.keys(abi.sizes.ep_prefix_key)) {
      if (abi.prefixKeyGen(key) === gen) this.prefixes.delete(key);
    }
  }

  /** Steer (service, protocol, family) to the socket open at fd (SOCKMAP takes its own reference). */
  setSocket(service: number, protocol: Protocol, family: 4 | 6, fd: number): void {
    try {
      this.sockets.update(abi.u32(abi.socketSlot(service, protocol, family)), abi.u64(fd));
    } catch (cause) {
      throw new DispatcherError(`register ${protocol}/ipv${family} socket of service ${service}`, { cause });
    }
  }

  removeSocket(service: number, protocol: Protocol, family: 4 | 6): boolean {
    return this.sockets.delete(abi.u32(abi.socketSlot(service, protocol, family)));
  }

  /** Counters summed over CPUs; service 0 counts lookups that matched no binding. */
  counters(service: number): abi.ServiceCounters {
    const buf = new Uint8Array(abi.sizes.ep_service_counters * this.cpus);
    const v = this.counterMap.lookup(abi.u32(service), buf);
    if (!v) throw new KernelError(`read counters of service ${service}`, 2);
    return abi.decodeServiceCounters(v, this.cpus);
  }

  /** Detach and free the program and maps. Idempotent. */
  close(): void {
    this.link?.close();
    this.link = undefined;
    this.object.close();
  }
}
