import { ConfigError } from "../errors";

/*
 * Every number an operator gives (flag, TOML key, environment variable, admin
 * API field) goes through one parser per kind here, so a new key gets the
 * bounds by using the parser: durations, sizes and counts. A value outside
 * them is a one-line ConfigError (exit 2), never a NaN, an Infinity or an
 * unsafe integer further down (Array.from(1e20) threw a stack trace).
 */

/** Bounds shared by every key of a kind. */
export const LIMITS = {
  /**
   * Durations are whole milliseconds, from 1 ms (a sub-millisecond timeout
   * would round to 0 and cut every connection) to 7 days, which also fits the
   * 32-bit millisecond timers (setTimeout's 2^31-1 ms) everything ends up in.
   */
  minDurationMs: 1,
  maxDurationMs: 7 * 86_400_000,
  /** Sizes: 1 byte to 1 PiB, a safe integer with room for arithmetic. */
  minSizeBytes: 1,
  maxSizeBytes: 2 ** 50,
  /** Counts (connections, flows, checks): what fits a signed 32-bit int, as the kernel's and libuv's counters do. */
  maxCount: 2 ** 31 - 1,
  /** Worker processes: beyond this a supervisor only adds memory and contention (64 already crashed a 2-core host). */
  maxWorkers: 256,
} as const;

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** "500ms", "5s", "2m", "1h"; a bare number is seconds. Whole milliseconds within LIMITS. */
export function parseDuration(text: string, where: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!m) throw new ConfigError(where, `"${text}" is not a duration (like 500ms, 5s, 2m)`);
  const ms = Number(m[1]) * DURATION_UNITS[(m[2] ?? "s") as keyof typeof DURATION_UNITS];
  if (!(ms >= LIMITS.minDurationMs) || ms > LIMITS.maxDurationMs) throw new ConfigError(where, `"${text}" must be at least 1ms and at most 7 days`);
  return Math.round(ms);
}

/** "1048576", "512KiB", "100MiB", "1GiB" (also k/m/g and KB/MB/GB, all powers of 1024). */
export function parseSize(text: string, where: string): number {
  const m = /^(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?$/i.exec(text.trim());
  if (!m) throw new ConfigError(where, `"${text}" is not a size (like 1048576, 512KiB, 100MiB, 1GiB)`);
  const unit = (m[2] ?? "b").toLowerCase()[0] as "b" | "k" | "m" | "g";
  const bytes = Number(m[1]) * { b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[unit];
  if (!(bytes >= LIMITS.minSizeBytes) || bytes > LIMITS.maxSizeBytes) throw new ConfigError(where, `"${text}" must be at least 1 byte and at most 1 PiB`);
  return bytes;
}

/** Inclusive bounds of a count; default 1 to LIMITS.maxCount. */
export interface CountBounds {
  readonly min?: number;
  readonly max?: number;
}

/** A whole number given as text (flag, environment variable): decimal digits only, within `bounds`. */
export function parseCount(text: string, where: string, bounds: CountBounds = {}): number {
  if (!/^\d+$/.test(text)) throw new ConfigError(where, `"${text}" is not a whole number`);
  return checkCount(Number(text), where, bounds, text);
}

/** A number already parsed (a TOML integer, a JSON field): an integer within `bounds`. */
export function checkCount(n: number, where: string, bounds: CountBounds = {}, shown = String(n)): number {
  const min = bounds.min ?? 1;
  const max = bounds.max ?? LIMITS.maxCount;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new ConfigError(where, `${/^-?\d+(\.\d+)?$/.test(shown) ? shown : `"${shown}"`} is not a whole number from ${min} to ${max}`);
  return n;
}

/** Worker processes (--workers, `workers`, $EDGEPROXY_WORKERS): 1 to LIMITS.maxWorkers. */
export const WORKER_BOUNDS: CountBounds = { min: 1, max: LIMITS.maxWorkers };
