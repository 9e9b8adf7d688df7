import { loadConfig } from "../config/file";
import { serviceFamilies, type ServeConfig, type ServiceConfig } from "../config/service";
import { ConfigError } from "../errors";
import { retainAccessLogs } from "../log/files";
import { refuseSelfReach } from "./bindings";
import { NEW_GROUPS } from "../proxy/group";
import type { Registry } from "../dispatcher/registry";
import { cookiesOf, groupPlan, registerMembers, withdrawMembers } from "./members";
import { storedState, type RunningService, type Server } from "./server";
import { wantedOf } from "./instance";

/** What a reload changed. */
export interface ReloadReport {
  readonly added: string[];
  readonly removed: string[];
  /** New listening sockets (origin, mode, timeouts or families changed). */
  readonly restarted: string[];
  /** Bindings or access rules changed in place. */
  readonly rebound: string[];
  readonly skipped: string[];
}

/** How long a replaced listener keeps accepting what the kernel already queued for it. */
const LISTENER_GRACE_MS = 500;

// Certificates are swapped in place (new handshakes only): only the policy and which files restarts a service.
const tlsOf = (s: ServiceConfig) => (s.tls ? { ...s.tls, certificates: s.tls.certificates.map((c) => [c.certFile, c.keyFile]) } : null);
const dataPlaneOf = (s: ServiceConfig) =>
  JSON.stringify([s.mode, s.engine ?? null, s.pool ?? null, s.http ?? null, s.sniRoutes ?? null, tlsOf(s), s.acceptProxy, s.connectTimeoutMs, s.idleTimeoutMs, s.deadlines, s.proxyProtocol, serviceFamilies(s), s.sourceLimits ?? null]);
const steeringOf = (s: ServiceConfig) => JSON.stringify(storedState(s, 0));

/**
 * Re-read the config file and apply only the difference. The new file is
 * validated whole first; then, under the pin lock: new listeners open, the
 * registry takes the new bindings and rules, and one commit flips every
 * binding at once (the generation switch, so no connection ever sees a mix of
 * old and new tables); then replaced sockets are swapped in their SOCKMAP
 * slots and removed services withdrawn. Established connections are never
 * touched: old listeners close after a grace period without aborting
 * anything. Any failure restores the registry and leaves the running state
 * as it was.
 */
export async function reload(server: Server): Promise<ReloadReport> {
  const file = server.config.source;
  if (!file) throw new ConfigError("reload", "edgeproxy was started without --config: there is no file to re-read");
  const loaded = await loadConfig(file, { reread: true });
  if (loaded.instance !== server.config.instance) throw new ConfigError(`reload ${file}`, `instance: "${server.config.instance}" became "${loaded.instance}"; an instance's name changes with a restart, nothing changed`);
  // The descriptor budget is fixed at start, and so is the admin listener (a reload does not move it).
  const next: ServeConfig = { ...loaded, instance: server.config.instance, admin: server.config.admin, bpffs: server.config.bpffs, maxConnections: server.config.maxConnections, maxFlows: server.config.maxFlows };
  const origins = await refuseSelfReach(next.admin, next.services);

  const reg = server.registry;
  const current = new Map(server.config.services.map((s) => [s.name, s]));
  const wanted = new Map(next.services.map((s) => [s.name, s]));
  const added = next.services.filter((s) => !current.has(s.name));
  const removed = server.config.services.filter((s) => !wanted.has(s.name));
  const restarted = next.services.filter((s) => current.has(s.name) && dataPlaneOf(s) !== dataPlaneOf(current.get(s.name)!));
  const rebound = next.services.filter((s) => current.has(s.name) && steeringOf(s) !== steeringOf(current.get(s.name)!));

  const plane = server.plane;
  const fresh = new Map<string, RunningService>();
  const own = () => new Set([...server.ownInodes(), ...[...fresh.values()].flatMap((r) => r.sockets.map((s) => s.inode))]);
  return plane.locked(() => {
    // Checked before anything changes: a new name or binding must not be a live instance's.
    const conflict = plane.conflictLocked(server.claim, wantedOf(next.services));
    if (conflict) throw new ConfigError(`reload ${file}`, `refused, nothing changed: ${conflict.line}`);
    try {
      return plane.transactionLocked([...next.services, ...removed].map((s) => s.name), own, () => change(), true);
    } catch (e) {
      for (const r of fresh.values()) r.svc.close(true);
      throw e;
    }
  });

  function change(): ReloadReport {
    server.steering.prune();
    for (const cfg of [...added, ...restarted]) {
      const entry = reg.ensure(cfg.name, next.takeOver);
      plane.ownLocked(server.claim.name, entry.id);
      const svc = server.planes.create(cfg, origins, server.sourceLimiting.limiter(cfg, entry.id));
      // A restarted UDP service starts a new group (see the retirement below); other
      // workers reloading after this one join it through the recorded port.
      const old = restarted.includes(cfg) ? server.running.get(cfg.name) : undefined;
      const plan = svc.protocol === "udp" && old && !groupMovedOn(reg, old) ? NEW_GROUPS : groupPlan(reg, entry.id, svc.protocol, server.dispatcher.migrateFd);
      fresh.set(cfg.name, { id: entry.id, svc, sockets: svc.listen(plan) });
    }
    for (const cfg of next.services) {
      const entry = reg.ensure(cfg.name, next.takeOver);
      const state = storedState(cfg, entry.id);
      reg.setBindings(entry.id, state.bindings);
      reg.setRules(entry.id, state.rules);
      server.sourceLimiting.publish(cfg, entry.id);
    }
    for (const cfg of removed) {
      const id = server.running.get(cfg.name)!.id;
      reg.setBindings(id, []);
      reg.setRules(id, []);
    }
    // New services get their sockets before their bindings go live.
    for (const cfg of added) {
      const r = fresh.get(cfg.name)!;
      registerMembers(reg, r.id, r.svc.protocol, r.sockets, server.member, server.steering);
    }
    const { skipped } = reg.commit(own());

    for (const cfg of restarted) {
      const old = server.running.get(cfg.name)!;
      const now = fresh.get(cfg.name)!;
      registerMembers(reg, now.id, now.svc.protocol, now.sockets, server.member, server.steering);
      // Slots the new sockets do not replace: a family dropped, or a mode changed between tcp and udp.
      // Only while the entry still holds the old socket (by cookie): another process may have taken it over.
      for (const s of old.sockets) {
        if (old.svc.protocol !== now.svc.protocol || !now.sockets.some((n) => n.family === s.family)) {
          if (reg.dispatcher.socketCookie(now.id, old.svc.protocol, s.family, server.member) === s.cookie) reg.removeSocket(now.id, old.svc.protocol, s.family, server.member);
        }
      }
    }
    const retired: RunningService[] = [];
    for (const cfg of removed) {
      const old = server.running.get(cfg.name)!;
      // Other workers may still serve it until their own reload: they withdraw it last.
      if (!withdrawMembers(reg, old.id, cookiesOf(old.sockets))) {
        reg.remove(old.id);
        plane.ownLocked(server.claim.name, old.id, false);
      }
      retired.push(old);
      server.running.delete(cfg.name);
    }
    for (const cfg of restarted) {
      const old = server.running.get(cfg.name)!;
      // A replaced TCP listener shares its reuseport group with the new one, which would
      // give it a share of new connections: it closes now, and the kernel moves what it
      // had queued to the new listener (ep_migrate). UDP sockets have no queue to move:
      // the new ones start a group of their own (below) and the old drain theirs.
      if (old.svc.protocol === "tcp" && fresh.get(cfg.name)!.svc.protocol === "tcp") old.svc.close(false);
      else retired.push(old);
    }
    for (const [name, r] of fresh) server.running.set(name, r);
    // Services kept as they were take the re-read certificates (the parser checked them) for new handshakes.
    for (const cfg of next.services) {
      if (!cfg.tls || fresh.has(cfg.name)) continue;
      server.running.get(cfg.name)?.svc.reloadCertificates?.(cfg.tls.certificates);
    }
    setTimeout(() => {
      for (const r of retired) r.svc.close(false);
    }, LISTENER_GRACE_MS).unref();
    server.config = next;
    // Log files no service names any more are let go once their last lines are written and they go idle.
    retainAccessLogs(next.services.flatMap((s) => (s.accessLog ? [s.accessLog.path] : [])));
    return {
      added: added.map((s) => s.name),
      removed: removed.map((s) => s.name),
      restarted: restarted.map((s) => s.name),
      rebound: rebound.map((s) => s.name),
      skipped,
    };
  }
}

/**
 * Has another worker already reloaded this UDP service into a new group? Then
 * the recorded port is that group's, not the one our old socket is in.
 */
function groupMovedOn(reg: Registry, old: RunningService): boolean {
  return old.sockets.some((s) => {
    const port = reg.groupPort(old.id, "udp", s.family);
    return port !== undefined && port !== s.port;
  });
}

/** "added a; removed b; ..." or "no change". */
export function describeReload(r: ReloadReport): string {
  const parts = (
    [
      ["added", r.added],
      ["removed", r.removed],
      ["new sockets for", r.restarted],
      ["new bindings or rules for", r.rebound],
    ] as const
  )
    .filter(([, names]) => names.length)
    .map(([what, names]) => `${what} ${names.join(", ")}`);
  return parts.join("; ") || "no change";
}
