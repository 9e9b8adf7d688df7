// The status of every worker as one: what a supervisor's /status and
// /services answer. Each worker counts only the connections, flows and
// requests it handled itself; the supervisor adds them up, as /metrics does
// with one series per worker, so that /status and /metrics agree.
import type { OriginStatus } from "../origin/pool";
import type { ServiceSnapshot, StatusSnapshot } from "./backend";
import { CLIENT_COUNTERS, mergeClients } from "../proxy/clients";

// What is the same in every worker (one dispatcher, one config) is taken
// from the first: names, ids, bindings, registered sockets, kernel counters.
// Histogram bounds (`le`) and certificate expiry times (`notAfter`) are positions, not counts.
const POSITIONS = new Set(["le", "notAfter"]);

/**
 * a + b for per-worker figures of one shape: numbers add up (except bucket
 * bounds), booleans are true when true in either (`accepting`: some worker
 * takes connections), arrays add element by element, records key by key;
 * anything else is a's.
 */
export function addFigures<T>(a: T, b: T | undefined): T {
  if (b === undefined || b === null) return a;
  if (typeof a === "number" && typeof b === "number") return (a + b) as T;
  if (typeof a === "boolean" && typeof b === "boolean") return (a || b) as T;
  if (Array.isArray(a) && Array.isArray(b)) return a.map((x, i) => addFigures(x, b[i])) as T;
  if (a === null || typeof a !== "object" || typeof b !== "object" || Array.isArray(b)) return a;
  const out: Record<string, unknown> = { ...(b as Record<string, unknown>), ...(a as Record<string, unknown>) };
  for (const [k, v] of Object.entries(b as Record<string, unknown>)) {
    if (POSITIONS.has(k) || !(k in (a as object))) continue;
    out[k] = addFigures((a as Record<string, unknown>)[k], v);
  }
  return out as T;
}

/**
 * One service's origins over every worker. Each worker runs its own health
 * checks and ejections: an endpoint is up or healthy when it is in some
 * worker; its connections, ejections and panics add up. Endpoints are matched
 * by address (a name may resolve differently in each worker for a moment).
 */
function addOrigins(a: readonly OriginStatus[], b: readonly OriginStatus[]): OriginStatus[] {
  return a.map((o) => {
    const other = b.find((x) => x.origin === o.origin);
    if (!other) return o;
    const endpoints = o.endpoints.map((e) => {
      const f = other.endpoints.find((x) => x.address === e.address);
      if (!f) return e;
      return {
        ...e,
        up: e.up || f.up,
        healthy: e.healthy || f.healthy,
        active: e.active + f.active,
        ejections: e.ejections + f.ejections,
        panics: e.panics + f.panics,
        portStatesEvicted: e.portStatesEvicted + f.portStatesEvicted,
      };
    });
    const extra = other.endpoints.filter((f) => !o.endpoints.some((e) => e.address === f.address));
    return {
      ...o,
      healthy: o.healthy || other.healthy,
      active: o.active + other.active,
      resolveFailures: o.resolveFailures + other.resolveFailures,
      endpoints: [...endpoints, ...extra],
    };
  });
}

function addService(a: ServiceSnapshot, b: ServiceSnapshot | undefined): ServiceSnapshot {
  if (!b) return a;
  return {
    ...a,
    ...(a.connections ? { connections: addFigures(a.connections, b.connections) } : {}),
    ...(a.datagrams ? { datagrams: addFigures(a.datagrams, b.datagrams) } : {}),
    ...(a.http ? { http: addFigures(a.http, b.http) } : {}),
    ...(a.sni ? { sni: addFigures(a.sni, b.sni) } : {}),
    ...(a.sourceLimited ? { sourceLimited: addFigures(a.sourceLimited, b.sourceLimited) } : {}),
    ...(a.origins && b.origins ? { origins: addOrigins(a.origins, b.origins) } : {}),
  };
}

/** Every worker's status as one: per-worker figures added up, shared state (the dispatcher's) once. */
export function totalStatus(statuses: readonly StatusSnapshot[]): StatusSnapshot {
  const [first, ...rest] = statuses;
  if (!first) throw new Error("totalStatus: no status to add up");
  const clients = mergeClients(statuses.map((s) => s.clients), 2 * CLIENT_COUNTERS);
  const total = rest.reduce<StatusSnapshot>(
    (total, s) => ({
      ...total,
      // The instance is steered only if every worker is: the first worker's reason why not.
      ...(total.steering !== undefined || s.steering !== undefined ? { steering: [total.steering, s.steering].find((x) => x !== undefined && x !== "ok") ?? "ok" } : {}),
      capacity: addFigures(total.capacity, s.capacity),
      services: [
        ...total.services.map((svc) => addService(svc, s.services.find((x) => x.name === svc.name))),
        // A service only a later worker runs yet (one is restarting mid-reload).
        ...s.services.filter((x) => !total.services.some((t) => t.name === x.name)),
      ],
    }),
    first,
  );
  return clients ? { ...total, clients } : total;
}
