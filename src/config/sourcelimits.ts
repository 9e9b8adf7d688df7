import { ConfigError } from "../errors";
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

// struct ep_source_limit holds the count as a u32; a rate of more than 1e9/s would be an interval under 1 ns.
const MAX_CONNECTIONS = 0xffffffff;
const MAX_RATE = 1_000_000;
const MAX_BURST = 1_000_000;

/**
 * Complete the per-client limits of a service: burst defaults to one
 * second's worth (the rate), the IPv6 grouping to DEFAULTS.sourcePrefixV6.
 * Undefined when no limit is set.
 */
export function sourceLimitsOf(x: SourceLimitInput, mode: Mode, names: SourceLimitNames): SourceLimits | undefined {
  const within = (v: number | undefined, name: string, lo: number, hi: number) => {
    if (v !== undefined && (!Number.isInteger(v) || v < lo || v > hi)) throw new ConfigError(name, `${v} is not a whole number from ${lo} to ${hi}`);
  };
  within(x.connections, names.connections, 1, MAX_CONNECTIONS);
  within(x.rate, names.rate, 1, MAX_RATE);
  within(x.burst, names.burst, 1, MAX_BURST);
  within(x.prefixV6, names.prefixV6, 1, 128);
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
