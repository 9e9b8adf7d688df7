import { ptr } from "bun:ffi";
import { EdgeError } from "../errors";
import { errno, errnoText, libc } from "./libc";

/*
 * Least privilege (README "Privileges and requirements"). A start needs
 * CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (checkEnvironment says why); once a
 * process serves it keeps only what it still uses:
 *
 * - a worker or a single serve keeps CAP_BPF (effective and permitted): it
 *   writes SOCKMAP / reuseport / sockhash entries as sockets come and go (bind,
 *   reload, the connection cap's steering), runs the per-source counting
 *   program (BPF_PROG_TEST_RUN) and reads counters. Before Linux 6.5 every
 *   bpf(2) command needs it while kernel.unprivileged_bpf_disabled is set (the
 *   default of most distributions; 6.5 moved the check into map and program
 *   creation, commit "bpf: Move unprivileged checks into map_create() and
 *   bpf_prog_load()").
 * - CAP_NET_ADMIN (attach to the netns, SO_RCVBUFFORCE) and CAP_PERFMON (the
 *   verifier's pointer arithmetic) are used while loading and attaching only.
 * - A supervisor serves no traffic and touches no BPF object: it keeps no
 *   effective capability. What an instance must keep reading in the pins
 *   while it serves (the steering watchdog, and its instance record, where
 *   a --take-over tells it to leave) is read by its workers, which hold
 *   CAP_BPF anyway, and they tell the supervisor over IPC
 *   (src/server/watchdog.ts), so the supervisor needs none for it.
 *
 * Capabilities reach our own children (workers, an upgrade's successor)
 * through exec: root's, or the binary's file capabilities (setcap), and then
 * the parent needs none of them. Only when this process got them through the
 * ambient set (systemd's AmbientCapabilities=, setpriv, capsh) must its
 * children get them the same way: the supervisor and a single serve then
 * keep the three in permitted and inheritable (not effective) and raise them
 * into the ambient set only around spawning their own child. Otherwise the
 * ambient set is empty, so anything else a process of ours may exec gets
 * nothing (capabilities(7): an exec'd program without file capabilities gets
 * only the ambient set).
 *
 * capset(2) and PR_CAP_AMBIENT change the calling thread only: the JS thread,
 * which makes every bpf(2) call and every spawn, and whose sets
 * /proc/<pid>/status shows. The UDP data plane's thread, which reads
 * datagrams, drops every capability itself when it starts but
 * CAP_NET_BIND_SERVICE when held (root): it binds each flow's socket to the
 * client's original destination, whatever its port (src/proxy/udp/worker.ts). The runtime's
 * own helper threads (garbage collector, I/O pool), started before any of
 * our code runs, keep the sets the process started with: no code of ours
 * runs there, and Bun offers no way to run a call on them.
 */

export const CAP_NET_BIND_SERVICE = 10;
export const CAP_NET_ADMIN = 12;
export const CAP_SYS_ADMIN = 21;
export const CAP_PERFMON = 38;
export const CAP_BPF = 39;
const NAMES = new Map([
  [CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"],
  [CAP_NET_ADMIN, "CAP_NET_ADMIN"],
  [CAP_SYS_ADMIN, "CAP_SYS_ADMIN"],
  [CAP_PERFMON, "CAP_PERFMON"],
  [CAP_BPF, "CAP_BPF"],
]);

export const capBit = (cap: number): bigint => 1n << BigInt(cap);

/** What a start uses (load, pin, attach): what our own children must get. */
export const START_CAPABILITIES = capBit(CAP_BPF) | capBit(CAP_NET_ADMIN) | capBit(CAP_PERFMON);

// <linux/capability.h>, <linux/prctl.h>
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_IS_SET = 1;
const PR_CAP_AMBIENT_RAISE = 2;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;

/** The calling thread's capability sets, as bit masks. */
export interface CapabilitySets {
  readonly effective: bigint;
  readonly permitted: bigint;
  readonly inheritable: bigint;
  readonly ambient: bigint;
}

function fail(what: string): never {
  throw new EdgeError(what, errnoText(errno()), "kernel");
}

export function capabilities(): CapabilitySets {
  const header = new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
  // Two struct __user_cap_data_struct {effective, permitted, inheritable}: bits 0-31, then 32-63.
  const data = new Uint32Array(6);
  if (libc.capget(ptr(header), ptr(data)) !== 0) fail("capget");
  const word = (i: number) => BigInt(data[i]!) | (BigInt(data[3 + i]!) << 32n);
  // The ambient set has no capget(2) word: ask per capability, up to the first the kernel does not know (EINVAL).
  let ambient = 0n;
  for (let c = 0; c < 64; c++) {
    const set = libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0);
    if (set < 0) break;
    if (set === 1) ambient |= capBit(c);
  }
  return { effective: word(0), permitted: word(1), inheritable: word(2), ambient };
}

function setCapabilities(effective: bigint, permitted: bigint, inheritable: bigint): void {
  const header = new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
  const lo = (v: bigint) => Number(v & 0xffffffffn);
  const hi = (v: bigint) => Number(v >> 32n);
  const data = new Uint32Array([lo(effective), lo(permitted), lo(inheritable), hi(effective), hi(permitted), hi(inheritable)]);
  if (libc.capset(ptr(header), ptr(data)) !== 0) fail("capset");
}

function clearAmbient(): void {
  if (libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) !== 0) fail("clear the ambient capabilities");
}

// What our own children can get only through the ambient set (see above).
let handOff = 0n;

/**
 * First thing a serving process does: remember which capabilities came
 * through the ambient set (our own children need them the same way) and
 * clear it, so nothing else this process may exec inherits them.
 */
export function holdAmbientCapabilities(): void {
  const sets = capabilities();
  handOff = sets.ambient & START_CAPABILITIES & sets.permitted & sets.inheritable;
  if (sets.ambient) clearAmbient();
}

/** Spawn one of our own children (a worker, a successor) with what a start needs; the ambient set is empty again after. */
export function spawnWithCapabilities<T>(spawn: () => T): T {
  try {
    for (let c = 0; c < 64; c++) {
      if (handOff & capBit(c) && libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) !== 0) fail(`raise ${NAMES.get(c)} for a child`);
    }
    return spawn();
  } finally {
    if (handOff) clearAmbient();
  }
}

/**
 * For the calling thread alone: keep only `keep` (those of it it holds), in
 * effective and permitted; nothing inheritable or ambient.
 */
export function keepOnlyCapabilities(keep: bigint): CapabilitySets {
  const held = capabilities().permitted & keep;
  clearAmbient();
  setCapabilities(held, held, 0n);
  return capabilities();
}

/** Which process this is: its own data plane only (serve), a supervisor, or a supervisor's worker. */
export type ProcessKind = "serve" | "supervisor" | "worker";

/**
 * Once serving: keep only what this process still uses (effective and
 * permitted), plus, in permitted and inheritable only, what it hands to its
 * own children through the ambient set. Returns the sets it keeps.
 */
export function dropUnusedCapabilities(kind: ProcessKind): CapabilitySets {
  const now = capabilities();
  // Before CAP_BPF (5.8), CAP_SYS_ADMIN stood for it; a runtime that grants only that keeps it.
  const bpf = now.permitted & capBit(CAP_BPF) ? capBit(CAP_BPF) : now.permitted & capBit(CAP_SYS_ADMIN);
  const uses = kind === "supervisor" ? 0n : bpf;
  const passes = kind === "worker" ? 0n : handOff;
  setCapabilities(uses, uses | passes, passes);
  if (now.ambient) clearAmbient();
  return capabilities();
}
