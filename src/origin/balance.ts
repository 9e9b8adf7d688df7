// The choice among a pool's endpoints, as pure functions over plain state, so
// the main thread (tcp, http) and the UDP worker (which shares no objects with
// it) pick with the same code.
import type { Balance } from "../config/pool";
import type { PortRange } from "../config/ports";

/** One endpoint as the balancer sees it; `current` and `active` are the balancer's and the data plane's state. */
export interface Weighted {
  /** Stable across re-resolution (address and port spec), so hashing keeps clients where they were. */
  readonly key: string;
  /** Relative share; an origin's weight split over its addresses. */
  readonly weight: number;
  /** Smooth weighted round-robin's running weight. */
  current: number;
  /** Connections (flows, requests) open to it now. */
  active: number;
}

/**
 * Smooth weighted round-robin as nginx does it (ngx_http_upstream_round_robin.c,
 * ngx_http_upstream_get_peer): every pick adds each eligible endpoint's weight
 * to its running weight, takes the largest and subtracts the total from it.
 * Weights 1:3 give b,a,b,b / b,b,a,b-style interleaving, not a burst of three.
 */
export function smoothWeighted<T extends Weighted>(all: readonly T[], eligible: (t: T) => boolean): T | undefined {
  let best: T | undefined;
  let total = 0;
  for (const t of all) {
    if (!eligible(t)) continue;
    t.current += t.weight;
    total += t.weight;
    if (!best || t.current > best.current) best = t;
  }
  if (best) best.current -= total;
  return best;
}

/**
 * Weighted least-connections: the fewest active per unit of weight; ties go
 * to smooth weighted round-robin among the tied, so an idle pool still
 * spreads by weight (nginx's least_conn does the same).
 */
export function leastConnections<T extends Weighted>(all: readonly T[], eligible: (t: T) => boolean): T | undefined {
  let best: T | undefined;
  for (const t of all) {
    if (!eligible(t)) continue;
    // a/wa < b/wb without division, so equal ratios compare equal exactly.
    if (!best || t.active * best.weight < best.active * t.weight) best = t;
  }
  if (!best) return undefined;
  const b = best;
  return smoothWeighted(all, (t) => eligible(t) && t.active * b.weight === b.active * t.weight);
}

/**
 * Weighted rendezvous (highest random weight) hashing on the client address:
 * each endpoint scores -weight / ln(u), u a hash of (client, endpoint key) in
 * (0,1); the highest wins (Schindelhauer & Schomaker, "Weighted distributed
 * hash tables", 2005). Chosen over a ring or Maglev because it needs no table
 * to rebuild when eligibility or DNS changes: removing an endpoint moves only
 * the clients it had, adding one takes ~1/n of each other's, and a pool is
 * small enough that O(n) per new connection costs less than a ring lookup's
 * cache misses.
 */
export function rendezvous<T extends Weighted>(all: readonly T[], eligible: (t: T) => boolean, client: string): T | undefined {
  let best: T | undefined;
  let bestScore = -Infinity;
  const h = hash32(client, 0x9747b28c);
  for (const t of all) {
    if (!eligible(t)) continue;
    const u = (hash32(t.key, h) + 0.5) / 4294967296;
    const score = -t.weight / Math.log(u);
    if (score > bestScore) {
      best = t;
      bestScore = score;
    }
  }
  return best;
}

/** The endpoint for a new connection from `client` under `balance`; undefined when none is eligible. */
export function choose<T extends Weighted>(balance: Balance, all: readonly T[], eligible: (t: T) => boolean, client: string): T | undefined {
  if (balance === "hash") return rendezvous(all, eligible, client);
  if (balance === "least-connections") return leastConnections(all, eligible);
  return smoothWeighted(all, eligible);
}

/**
 * The origin port for edge port `edgePort`: the origin's fixed port; the
 * same offset into its port range as `edgePort` has in the service's edge
 * range (edge 1005 of 1000-2000 to 3005 of 3000-4000); else the port the
 * client dialled (port-preserving).
 */
export function originPort(o: { readonly port?: number; readonly ports?: PortRange }, edgePort: number, edgeRange: PortRange | undefined): number {
  if (o.ports) return o.ports.lo + (edgePort - (edgeRange?.lo ?? o.ports.lo));
  return o.port ?? edgePort;
}

/** FNV-1a over the string's UTF-16 units, seeded, with murmur3's finalizer so close inputs spread. */
function hash32(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
