import type { AdminConfig, ServeConfig } from "./service";

/*
 * The top-level settings a reload reads but cannot change in a running
 * process: the process layout (workers), the descriptor budget fixed at start
 * (max_connections, max_flows), the admin listener, the instance's name, and
 * the drain timeout the signal handlers took at start. A reload applies
 * everything else (the services, take_over) and names these, so an operator
 * is never told "no change" about a file that changed: `edgeproxy upgrade`
 * starts a process that reads the file whole.
 */

const adminText = (a: AdminConfig) => (a.kind === "unix" ? a.path : a.kind === "tcp" ? `${a.host}:${a.port}` : "off");
const text = (v: unknown, unit = "") => (v === undefined ? "default" : `${String(v)}${unit}`);

/** "workers 2 → 3" for each such setting that differs between the running config and the file's. */
export function restartNeeded(running: ServeConfig, next: ServeConfig): string[] {
  const out: string[] = [];
  const compare = (key: string, a: string, b: string) => {
    if (a !== b) out.push(`${key} ${a} → ${b}`);
  };
  compare("instance", running.instance, next.instance);
  compare("workers", text(running.workers), text(next.workers));
  compare("drain_timeout", text(running.drainTimeoutMs, " ms"), text(next.drainTimeoutMs, " ms"));
  compare("max_connections", text(running.maxConnections), text(next.maxConnections));
  compare("max_flows", text(running.maxFlows), text(next.maxFlows));
  compare("admin", adminText(running.admin), adminText(next.admin));
  // A token change is a change too, without printing either token.
  if (running.admin.kind === "tcp" && next.admin.kind === "tcp" && running.admin.token !== next.admin.token) out.push("admin token changed");
  return out;
}

/** The reload summary's tail for restartNeeded's list: "" when empty. */
export function describeRestart(changes: readonly string[]): string {
  return changes.length ? `; not applied, need a restart or 'edgeproxy upgrade': ${changes.join(", ")}` : "";
}
