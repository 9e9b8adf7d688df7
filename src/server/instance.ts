import type { AdminConfig, ServeConfig, ServiceConfig } from "../config/service";
import type { InstanceClaim, WantedService } from "../dispatcher/controlplane";
import { leaderOf } from "../dispatcher/instances";

/** Env var a supervisor gives its workers: the leader its instance replaces in an upgrade (its own EDGEPROXY_UPGRADE). */
export const INSTANCE_FROM_ENV = "EDGEPROXY_INSTANCE_FROM";

const pidIn = (v: string | undefined): number | undefined => (v && /^[1-9][0-9]{0,9}$/.test(v) ? Number(v) : undefined);

export function describeAdmin(admin: AdminConfig): string {
  return admin.kind === "unix" ? admin.path : admin.kind === "tcp" ? `${admin.host}:${admin.port}` : "";
}

/**
 * Who this process serves for: its instance's name and leader, which is this
 * process, or (a worker) its supervisor, so the workers and the supervisor
 * are one instance; an upgrade's successor names its predecessor (the pid in
 * EDGEPROXY_UPGRADE, passed on to workers in EDGEPROXY_INSTANCE_FROM), whose
 * record it takes over.
 */
export function claimOf(config: ServeConfig, worker: boolean): InstanceClaim {
  const leader = leaderOf(worker ? process.ppid : process.pid);
  const predecessor = pidIn(worker ? process.env[INSTANCE_FROM_ENV] : process.env.EDGEPROXY_UPGRADE);
  const admin = describeAdmin(config.admin);
  return { name: config.instance, leader, ...(predecessor ? { predecessor } : {}), ...(config.source ? { config: config.source } : {}), ...(admin ? { admin } : {}) };
}

/** The services a config wants, as the control plane compares them. */
export function wantedOf(services: readonly ServiceConfig[]): WantedService[] {
  return services.map((s) => ({
    name: s.name,
    bindings: s.bindings.flatMap((b) => b.prefixes.flatMap((prefix) => b.ports.map((r) => ({ protocol: b.protocol, prefix, lo: r.lo, hi: r.hi })))),
  }));
}
