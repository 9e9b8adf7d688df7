// A tcp service's counters on the engine: one row of doubles in shared
// memory, written by the data plane's thread and read by the main thread
// (status, metrics) into the same ConnectionStats shape as the Bun path's
// ServiceStats, so the admin API and /metrics do not change.
import type { ConnectionStats } from "../admin/backend";
import { DURATION_BUCKETS, errorClass } from "../proxy/stats";
import { LOCAL_RESOURCES, type LocalResource } from "../system/lack";
import { errnoName } from "../system/libc";

export const ORIGIN_ERRORS = ["refused", "timeout", "reset", "unreachable", "other", "no_origin"] as const;
export type OriginErrorKind = (typeof ORIGIN_ERRORS)[number];

/** The origin error a failed connect's errno counts as (errorClass, by the errno's name). */
export const failureOf = (code: number): OriginErrorKind => errorClass(errnoName(code));

/** Slots of the row. */
export const T = {
  active: 0,
  total: 1,
  bytesIn: 2,
  bytesOut: 3,
  clientResets: 4,
  idleTimeouts: 5,
  /** Connections refused at accept because the process is at its connection cap. */
  capRefused: 6,
  durationSum: 7,
  durationCount: 8,
  /** Connections reset at accept because their client was at source_connections. */
  sourceRefused: 9,
  /** ORIGIN_ERRORS.length slots. */
  originErrors: 10,
  /** DURATION_BUCKETS.length + 1 slots, per bucket (not cumulative); the last is +Inf. */
  duration: 10 + ORIGIN_ERRORS.length,
} as const;

/** Inbound PROXY headers refused (accept_proxy), by reason; then the proxy_header deadline's expiries. */
export const PROXY_HEADER_ERRORS = ["signature", "malformed", "too_long", "truncated", "timeout"] as const;
export const PROXY_ERRORS_AT = T.duration + DURATION_BUCKETS.length + 1;
export const PROXY_DEADLINE_AT = PROXY_ERRORS_AT + PROXY_HEADER_ERRORS.length;

/** Connections refused after a PROXY header because the client it names is over source_rate. */
export const SOURCE_RATE_AT = PROXY_DEADLINE_AT + 1;

/** Connections reset for want of a local resource, one slot per LOCAL_RESOURCES entry. */
export const LOCAL_RESOURCE_AT = SOURCE_RATE_AT + 1;

/** The row slot that counts a reset for want of `what`. */
export const localResourceSlot = (what: LocalResource): number => LOCAL_RESOURCE_AT + LOCAL_RESOURCES.indexOf(what);

export const TCP_ROW = LOCAL_RESOURCE_AT + LOCAL_RESOURCES.length;

export const BOUNDS = Float64Array.from(DURATION_BUCKETS);

/** The row in the admin API's shape, with cumulative buckets. */
export function readTcpRow(r: Float64Array): ConnectionStats {
  const buckets: { le: number; count: number }[] = [];
  let cumulative = 0;
  for (let i = 0; i <= BOUNDS.length; i++) {
    cumulative += r[T.duration + i]!;
    buckets.push({ le: i < BOUNDS.length ? BOUNDS[i]! : Infinity, count: cumulative });
  }
  const originErrors: Record<string, number> = {};
  ORIGIN_ERRORS.forEach((k, i) => {
    if (r[T.originErrors + i]! > 0) originErrors[k] = r[T.originErrors + i]!;
  });
  return {
    active: r[T.active]!,
    total: r[T.total]!,
    bytesFromClients: r[T.bytesIn]!,
    bytesFromOrigins: r[T.bytesOut]!,
    originErrors,
    clientResets: r[T.clientResets]!,
    idleTimeouts: r[T.idleTimeouts]!,
    proxyHeaderErrors: Object.fromEntries(PROXY_HEADER_ERRORS.map((k, i) => [k, r[PROXY_ERRORS_AT + i]!]).filter(([, n]) => (n as number) > 0)),
    tlsHandshakeErrors: {},
    deadlinesExpired: r[PROXY_DEADLINE_AT]! > 0 ? { proxy_header: r[PROXY_DEADLINE_AT]! } : {},
    localResourceResets: Object.fromEntries(LOCAL_RESOURCES.map((k, i) => [k, r[LOCAL_RESOURCE_AT + i]!]).filter(([, n]) => (n as number) > 0)),
    duration: { buckets, sum: r[T.durationSum]!, count: r[T.durationCount]! },
  };
}
