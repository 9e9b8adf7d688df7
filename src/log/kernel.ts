import type { ServiceConfig } from "../config/service";
import { ServiceLog } from "./access";

/*
 * Clients the kernel refuses never reach a socket, so no connection of ours
 * can log them. The dispatcher keeps per-service counters of them (per CPU,
 * not per source: a per-source record would be a map update per refused
 * SYN, which is what a flood sends), so they appear in the access log as
 * aggregated lines: at most one per service and reason per second, with
 * the count of that second, made from the counters' deltas. One process of
 * an instance writes them (the counters are the namespace's, shared by every
 * worker), so they are not repeated per worker.
 */

const TICK_MS = 1_000;

/** What the kernel refused for one service, cumulative. */
export interface Refusals {
  readonly denied: bigint;
  readonly missingSocket: bigint;
  readonly full: bigint;
  readonly limitedConnections: bigint;
  readonly limitedRate: bigint;
}

/** Reason → (event, reason in the line). */
const REASONS: readonly [keyof Refusals, string, string][] = [
  ["denied", "filtered", "deny_rule"],
  ["limitedConnections", "limited", "source_connections"],
  ["limitedRate", "limited", "source_rate"],
  ["full", "limited", "full"],
  ["missingSocket", "refused", "no_socket"],
];

/**
 * Every second, for each running service with an access log, a line per
 * reason whose counter moved. `services` is read at every tick (a reload
 * changes them). Returns the stop function.
 */
export function startKernelRefusals(
  services: () => Iterable<{ readonly id: number; readonly config: ServiceConfig }>,
  read: (id: number) => Refusals,
  /** Runs the tick every `ms` until the returned function is called (a serve's: its one housekeeping timer). */
  schedule: (ms: number, fn: () => void) => () => void = interval,
): () => void {
  const last = new Map<string, { id: number; counts: Refusals; at: number; log: ServiceLog }>();
  let lastTick = -Infinity;
  const tick = () => {
    // A late timer followed by a prompt one would make two windows in one second: the bound is a promise.
    const t = performance.now();
    if (t - lastTick < TICK_MS * 0.9) return;
    lastTick = t;
    const seen = new Set<string>();
    for (const { id, config } of services()) {
      if (!config.accessLog) continue;
      seen.add(config.name);
      const now = read(id);
      const before = last.get(config.name);
      // A service (re)appearing starts from its counters as they are: what came before it is not this second's.
      if (!before || before.id !== id || before.log.config !== config.accessLog) {
        last.set(config.name, { id, counts: now, at: t, log: new ServiceLog(config.name, config.accessLog) });
        continue;
      }
      for (const [key, event, reason] of REASONS) {
        const n = now[key] - before.counts[key];
        if (n > 0n) before.log.emit({ protocol: config.mode === "udp" ? "udp" : "tcp", event, reason, count: Number(n), window_ms: Math.round(t - before.at), source: "kernel" });
      }
      before.counts = now;
      before.at = t;
    }
    for (const name of last.keys()) if (!seen.has(name)) last.delete(name);
  };
  tick();
  return schedule(TICK_MS, tick);
}

/** A timer of its own, never holding the process open. */
function interval(ms: number, fn: () => void): () => void {
  const timer = setInterval(fn, ms);
  timer.unref();
  return () => clearInterval(timer);
}
