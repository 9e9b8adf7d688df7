// Scenario 1: TCP proxying, keep-alive and one connection per request:
// edgeproxy (--mode tcp), HAProxy mode tcp, nginx stream and the direct path,
// measured by bench/wrk-scenario.ts. When the binary has --splice, edgeproxy
// runs twice, with kernel splicing off and on (auto), as two rows.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { features } from "./netns";
import { ORIGIN, peers, type Peer } from "./peers";
import type { BenchContext, Scenario } from "./scenario";
import { wrkScenario } from "./wrk-scenario";

/** `peer` with `args` appended to its command line (and `suffix` on its name). */
export const withArgs = (peer: Peer, args: string[], suffix = ""): Peer => ({ ...peer, name: peer.name + suffix, command: (at) => [...peer.command(at), ...args] });

/**
 * The edgeproxy arguments every scenario adds: one worker (its default is one
 * per CPU), so each proxy runs one process on the proxy core, like HAProxy
 * `nbthread 1` and nginx `worker_processes 1`.
 */
export function oneWorker(edgeproxy: string): string[] {
  return features(edgeproxy, false).workers ? ["--workers", "1"] : [];
}

/** The edgeproxy entries of `list` expanded by `--splice off` / `--splice auto` when the binary has it. */
export function spliceVariants(list: Peer[], edgeproxy: string): Peer[] {
  if (!features(edgeproxy, false).splice) return list;
  return list.flatMap((p) => (p.name.startsWith("edgeproxy") ? [withArgs(p, ["--splice", "off"], " (splice off)"), withArgs(p, ["--splice", "auto"], " (splice auto)")] : [p]));
}

/**
 * The edgeproxy entries of `list` once more on the other tcp data plane when
 * the binary has --engine: `--engine bun` (Bun's sockets) where the default
 * is the raw-socket engine (engine = "auto"), `--engine epoll` for binaries
 * from before, whose default was Bun's sockets.
 */
export function engineVariants(list: Peer[], edgeproxy: string): Peer[] {
  const f = features(edgeproxy, false);
  if (!f.engine) return list;
  const other = f.engineAuto ? "bun" : "epoll";
  return list.flatMap((p) => (p.name.startsWith("edgeproxy") ? [p, withArgs(p, ["--engine", other], ` (${other})`)] : [p]));
}

/** What the method text says of engineVariants' pair. */
export function engineMethod(edgeproxy: string): string {
  const f = features(edgeproxy, false);
  if (!f.engine) return "";
  return f.engineAuto
    ? " edgeproxy runs twice: by default (tcp relays on the raw-socket engine, an epoll loop, src/engine/) and `--engine bun` (Bun's sockets, what TLS services run on)."
    : " edgeproxy runs twice: on Bun's sockets (this binary's default) and `--engine epoll` (raw sockets on an epoll loop, src/engine/).";
}

/** io_uring is usable here: the syscalls exist and kernel.io_uring_disabled lets every process use them. */
export function ioUringEnabled(): boolean {
  const knob = "/proc/sys/kernel/io_uring_disabled";
  return !existsSync(knob) || readFileSync(knob, "utf8").trim() === "0";
}

/**
 * The standalone relays of issue 19's epoll-versus-io_uring comparison
 * (bench/uring-relay.ts, bench/epoll-relay.ts): the same primitives and relay
 * contract, one on io_uring (multishot accept and recv into provided buffers,
 * one io_uring_enter per loop turn) and one on epoll, so the pair isolates the
 * event mechanism. Named "edgeproxy (…)": they are ours, and ratio rows compare
 * them with the peers. Not the engine: no steering, stats, deadlines or log.
 */
export function relayPeers(): Peer[] {
  if (!ioUringEnabled()) return [];
  const relay = (file: string, label: string): Peer => ({
    name: `edgeproxy (${label})`,
    proxied: true,
    command: (at) => [process.execPath, join(import.meta.dir, file), "--listen", `${at.host}:${at.port}`, "--origin", `${ORIGIN.host}:${ORIGIN.port}`],
  });
  return [relay("epoll-relay.ts", "epoll relay"), relay("uring-relay.ts", "io_uring relay")];
}

export const tcpScenario: Scenario = (ctx: BenchContext) => {
  const base = peers(ctx.dir, ctx.edgeproxy).map((p) => (p.name.startsWith("edgeproxy") ? withArgs(p, oneWorker(ctx.edgeproxy)) : p));
  return wrkScenario(ctx, {
    kind: "TCP",
    plot: "tcp",
    title: "TCP proxy: CPU per request",
    peers: [...engineVariants(spliceVariants(base, ctx.edgeproxy), ctx.edgeproxy), ...relayPeers()],
    method:
      "Each proxy passes bytes through unchanged (L4). One worker each: edgeproxy `--workers 1` (one Bun process), HAProxy `nbthread 1`, nginx `worker_processes 1`. " +
      "edgeproxy answers on every port of the /24 (the realistic configuration), not just the one wrk dials." +
      engineMethod(ctx.edgeproxy) +
      (ioUringEnabled()
        ? " Two standalone relays on the same primitives, `edgeproxy (epoll relay)` (bench/epoll-relay.ts) and `edgeproxy (io_uring relay)` (bench/uring-relay.ts: multishot accept, multishot recv into a provided-buffer ring, one io_uring_enter per loop turn), compare the event mechanisms alone: neither has the engine's steering, stats, deadlines or log."
        : "") +
      (features(ctx.edgeproxy, false).splice ? " edgeproxy runs twice: `--splice off` (user-space relay) and `--splice auto` (kernel splicing where it applies)." : ""),
  });
};
