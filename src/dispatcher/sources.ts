// Counting clients' open connections in the dispatcher's shared map
// (bpf/dispatcher.h, EP_SOURCE_OWNERS and struct ep_source_op), for every
// process of the instance at once.
import { KernelError } from "../ebpf/libbpf";
import { PreparedTestRun } from "../ebpf/object";
import { bindTo, openUdpSocket } from "../system/udp";
import type { Fd } from "../system/fd";
import * as abi from "./abi";
import * as sabi from "./sourceabi";
import type { Dispatcher } from "./dispatcher";

/**
 * Adds to and takes from one owner slot's counts through the ep_source
 * program: one bpf(2) syscall per call, atomic in the kernel, so every worker
 * and thread can count the same client at once. Threads each make their own
 * (the buffers are not shared); the slot and the fd are the process's.
 */
export class SourceCounter {
  private readonly run: PreparedTestRun;
  private closed = false;

  constructor(
    /** The ep_source program; not owned (the process's dispatcher holds it). */
    readonly progFd: number,
    readonly owner: number,
  ) {
    this.run = new PreparedTestRun(progFd, abi.sizes.ep_source_op, "ep_source");
  }

  /** Add +1 (a connection accepted) or -1 (closed) to the client's count; its count over all processes afterwards. */
  add(key: sabi.SourceKey, delta: 1 | -1): number {
    if (this.closed) return 0;
    sabi.writeSourceKey(this.run.ctx, key);
    sabi.writeSourceOp(this.run.ctx, abi.EP_SOURCE_OP_ADD, this.owner, delta);
    return this.run.run();
  }

  /** Charge a new connection to the client's rate (its service's source_rate): true when it is over. */
  rateExceeded(key: sabi.SourceKey): boolean {
    if (this.closed) return false;
    sabi.writeSourceKey(this.run.ctx, key);
    sabi.writeSourceOp(this.run.ctx, abi.EP_SOURCE_OP_RATE, this.owner, 0);
    return this.run.run() === 1;
  }

  /**
   * add(), and 0 when the kernel refuses the call (it should not; at shutdown
   * the program's fd may be closed already): the data plane then lets the
   * connection or flow in uncounted rather than refusing every client.
   */
  addOrZero(key: sabi.SourceKey, delta: 1 | -1): number {
    try {
      return this.add(key, delta);
    } catch {
      return 0;
    }
  }

  /** Stop counting (the program's fd is about to close; later connection closes are not counted). */
  close(): void {
    this.closed = true;
  }

  /** Zero these slots in every count (their processes are gone): one pass over the map. How many counts had something there. */
  reclaim(slots: readonly number[]): number {
    if (this.closed || !slots.length) return 0;
    this.run.ctx.fill(0);
    const mask = slots.reduce((m, s) => (m | (1 << s)) >>> 0, 0);
    sabi.writeSourceOp(this.run.ctx, abi.EP_SOURCE_OP_RECLAIM, mask, 0);
    return this.run.run();
  }
}

/** Owner slots whose socket has left ep_source_owners (never used, or their process is gone). */
function freeSlots(dispatcher: Dispatcher): number[] {
  const owners = dispatcher.maps.ep_source_owners;
  const free: number[] = [];
  for (let slot = 0; slot < abi.EP_SOURCE_OWNERS; slot++) if (!owners.lookup(abi.u32(slot), new Uint8Array(8))) free.push(slot);
  return free;
}

/** This process's owner slot: the counter, and the socket that marks the slot taken while the process lives. */
export class SourceOwner {
  private constructor(
    readonly counter: SourceCounter,
    /** Owned: a bound UDP socket nobody sends to; its SOCKMAP entry is the slot's claim. */
    private readonly liveness: Fd,
    /** Counts of dead owners zeroed when the slot was claimed. */
    readonly reclaimed: number,
  ) {}

  /**
   * Claim a free slot. A slot is free when its ep_source_owners entry is
   * empty: never used, or its process has exited (the kernel drops a closed
   * socket from a SOCKMAP, net/core/sock_map.c sock_map_close), however it
   * died. Every free slot's counts are zeroed first, so a crashed worker's
   * connections stop counting at the latest when the next process claims a
   * slot (the supervisor's restart of it does). Call under the pin lock, so
   * two processes never take the same slot. Undefined when all are taken.
   */
  static claim(dispatcher: Dispatcher): SourceOwner | undefined {
    const progFd = dispatcher.sourceFd;
    if (progFd === undefined) return undefined;
    const owners = dispatcher.maps.ep_source_owners;
    const free = freeSlots(dispatcher);
    if (!free.length) return undefined;
    const counter = new SourceCounter(progFd, free[0]!);
    let fd: Fd | undefined;
    try {
      const reclaimed = counter.reclaim(free);
      fd = openUdpSocket(4, "source-count owner socket");
      bindTo(fd.raw, { family: 4, addr: Uint8Array.from([127, 0, 0, 1]), port: 0 }, "source-count owner socket");
      owners.update(abi.u32(free[0]!), abi.u64(fd.raw));
      return new SourceOwner(counter, fd, reclaimed);
    } catch (e) {
      fd?.close();
      counter.close();
      throw e instanceof KernelError ? new KernelError(`claim source-count slot ${free[0]}`, -e.errno, e.log) : e;
    }
  }

  /**
   * Zero the counts of every free slot: processes that died since the last
   * claim (a worker the supervisor did not restart, a process an upgrade
   * replaced whose last connections were cut). Call under the pin lock, so
   * no process claims a slot meanwhile. How many counts had something there.
   */
  sweep(dispatcher: Dispatcher): number {
    return this.counter.reclaim(freeSlots(dispatcher));
  }

  /** Give the slot up: this process's counts are stale from now on (the next claim zeroes them). */
  close(): void {
    this.counter.close();
    this.liveness.close();
  }
}
