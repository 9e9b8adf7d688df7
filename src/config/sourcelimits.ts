import { ConfigError } from "../errors";
import { checkCount, LIMITS, type CountBounds } from "./numbers";
import { DEFAULTS, type Mode, type SourceLimits } from "./service";

/** What the config file or the flags gave, as text or numbers not yet checked. */
export interface SourceLimitInput {
  readonly connections?: number;
  readonly rate?: number;
  readonly burst?: number;
  readonly prefixV6?: number;
}

/** The names of the inputs where they came from (TOML keys or flags), for messages. */
export interface SourceLimitNames {
  readonly connections: string;
  readonly rate: string;
  readonly burst: string;
  readonly prefixV6: string;
}

/*
 * Bounds of each figure, for the flags and the file alike. A count fits
 * struct ep_source_limit's u32; a rate is at most 1,000,000/s (the program's
 * interval is 1e9 / rate ns, so it stays a whole microsecond or more).
 */
export const SOURCE_BOUNDS = {
  connections: { min: 1, max: LIMITS.maxCount },
  rate: { min: 1, max: 1_000_000 },
  burst: { min: 1, max: 1_000_000 },
  prefixV6: { min: 1, max: 128 },
} as const satisfies Record<string, CountBounds>;

/**
 * Complete the per-client limits of a service: burst defaults to one
 * second's worth (the rate), the IPv6 grouping to DEFAULTS.sourcePrefixV6.
 * Undefined when no limit is set.
 */
export function sourceLimitsOf(x: SourceLimitInput, mode: Mode, names: SourceLimitNames): SourceLimits | undefined {
  for (const k of ["connections", "rate", "burst", "prefixV6"] as const) if (x[k] !== undefined) checkCount(x[k], names[k], SOURCE_BOUNDS[k]);
  if (x.burst !== undefined && x.rate === undefined) throw new ConfigError(names.burst, `needs ${names.rate}`);
  // A datagram is not a new flow to the kernel, so UDP gets the flow count only.
  if (mode === "udp" && x.rate !== undefined) throw new ConfigError(names.rate, `applies to tcp and http connections; for udp flows use ${names.connections}`);
  if (x.connections === undefined && x.rate === undefined) {
    if (x.prefixV6 !== undefined) throw new ConfigError(names.prefixV6, `groups clients for ${names.connections} and ${names.rate}; set one of them`);
    return undefined;
  }
  return {
    connections: x.connections ?? 0,
    ...(x.rate !== undefined ? { rate: { perSecond: x.rate, burst: x.burst ?? x.rate } } : {}),
    prefixV6: x.prefixV6 ?? DEFAULTS.sourcePrefixV6,
  };
}
