// What a serving process says once it serves. With workers, each worker
// sends its facts to the supervisor (with its IPC "ready") and the supervisor
// says them once for the instance: the bindings once, each socket with the
// workers that hold it, the connection cap as the sum of the workers' shares.
import { describeBindings } from "../server/bindings";
import type { Server } from "../server/server";
import type { ProgramUpgrade } from "../dispatcher/pins";

/** One serving process's startup, as plain data (it crosses IPC). */
export interface StartupFacts {
  readonly bindings: readonly string[];
  readonly sockets: readonly { readonly service: string; readonly family: number; readonly address: string; readonly fd: number }[];
  readonly pinDir: string;
  readonly createdPins: boolean;
  readonly programUpgrade?: ProgramUpgrade;
  readonly maxConnections: number;
  readonly maxFlows: number;
  readonly skipped: readonly string[];
  /** The instance served, and the live instances this start took over (--take-over), told to leave. */
  readonly instance: string;
  readonly told: readonly string[];
}

export function startupFacts(server: Server): StartupFacts {
  const r = server.report;
  return {
    bindings: describeBindings(server.config.services),
    sockets: [...server.running].flatMap(([service, run]) => run.sockets.map((s) => ({ service, family: s.family, address: s.address, fd: s.fd }))),
    pinDir: r.pinDir,
    createdPins: r.createdPins,
    ...(r.programUpgrade ? { programUpgrade: r.programUpgrade } : {}),
    maxConnections: r.maxConnections,
    maxFlows: r.maxFlows,
    skipped: r.skipped,
    instance: server.claim.name,
    told: r.told,
  };
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
/** "5000" for one process; "10000 (5000 + 5000 in 2 workers)" for several. */
const total = (xs: readonly number[]) => (xs.length > 1 ? `${sum(xs)} (${xs.join(" + ")} in ${xs.length} workers)` : `${sum(xs)}`);

/** The startup lines of one instance: one process's facts, or every worker's (in worker order). */
export function describeStartup(facts: readonly StartupFacts[]): string[] {
  const first = facts[0];
  if (!first) return [];
  const lines = [...first.bindings];
  // A socket per worker joins one SO_REUSEPORT group: one line per address, with every worker's fd.
  const sockets = new Map<string, number[]>();
  for (const f of facts) {
    for (const s of f.sockets) {
      const key = `service ${s.service}: ipv${s.family} socket ${s.address}`;
      sockets.set(key, [...(sockets.get(key) ?? []), s.fd]);
    }
  }
  for (const [key, fds] of sockets) lines.push(fds.length > 1 ? `${key} in each of ${fds.length} workers (fds ${fds.join(", ")})` : `${key} (fd ${fds[0]})`);
  // Workers start together: one of them created the pins (or none did: joined).
  lines.push(`dispatcher ${facts.some((f) => f.createdPins) ? "created and pinned at" : "joined at"} ${first.pinDir}`);
  const upgraded = facts.find((f) => f.programUpgrade)?.programUpgrade;
  if (upgraded) lines.push(`dispatcher program upgraded from tag ${upgraded.from} to ${upgraded.to} (maps kept${upgraded.created.length ? `; created ${upgraded.created.join(", ")}` : ""})`);
  const flows = facts.map((f) => f.maxFlows);
  lines.push(`at most ${total(facts.map((f) => f.maxConnections))} open connections${sum(flows) ? ` and ${total(flows)} UDP flows` : ""}`);
  if (first.skipped.length) lines.push(`left alone ${first.skipped.length} already-listening socket(s): ${first.skipped.join(", ")} (--take-over steers them too)`);
  // The first worker to join takes the others over; the workers after it find the instance theirs.
  const told = [...new Set(facts.flatMap((f) => f.told))];
  lines.push(`instance ${first.instance}${told.length ? `: took over from instance ${told.join(", ")}, told to drain and exit` : ""}`);
  return lines;
}
