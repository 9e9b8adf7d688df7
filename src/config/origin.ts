import { ConfigError } from "../errors";
import { parseAddress } from "./address";
import { POOL_DEFAULTS, type Balance, type OriginConfig, type PoolConfig } from "./pool";
import type { PortRange } from "./ports";
import type { Mode, ProxyProtocol } from "./service";

// The bounded number parsers live in numbers.ts; re-exported for the parsers that import them from here.
export { parseDuration, parseSize } from "./numbers";

const PROXY_PROTOCOLS: readonly ProxyProtocol[] = ["off", "v1", "v2", "spp"];
const BALANCES: readonly Balance[] = ["round-robin", "least-connections", "hash"];
const MAX_WEIGHT = 1000;

const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$/;

/**
 * One origin: "127.0.0.1:9000", "[::1]:9000", "::1", "origin.example",
 * "origin.example:80", a port range "10.0.0.1:3000-4000", each optionally
 * followed by " weight=N" (1-1000).
 */
export function parseOrigin(spec: string, where = "origin"): OriginConfig {
  const [text = "", ...options] = spec.trim().split(/\s+/);
  let weight: number = POOL_DEFAULTS.weight;
  for (const option of options) {
    if (!option.includes("=")) throw new ConfigError(where, `"${spec}" is not HOST, HOST:PORT, HOST:LO-HI or [IPv6]:PORT, then options like weight=N`);
    const m = /^weight=(\d+)$/.exec(option);
    if (!m || Number(m[1]) < 1 || Number(m[1]) > MAX_WEIGHT) throw new ConfigError(where, `"${spec}": "${option}" is not weight=N with N 1-${MAX_WEIGHT}`);
    weight = Number(m[1]);
  }
  const range = /^(.*):(\d+)-(\d+)$/.exec(text);
  if (range) {
    const { host } = parseEndpoint(range[1]!, spec, where);
    const ports: PortRange = { lo: Number(range[2]), hi: Number(range[3]) };
    if (ports.lo < 1 || ports.hi > 65535 || ports.lo > ports.hi) throw new ConfigError(where, `"${spec}": port range must be LO-HI within 1-65535`);
    return { host, ports, weight };
  }
  return { ...parseEndpoint(text, spec, where), weight };
}

/** "HOST[:PORT]" or "[IPv6][:PORT]". */
export function parseEndpoint(text: string, spec = text, where = "origin"): { host: string; port?: number } {
  let host = text;
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (bracket) {
    host = bracket[1]!;
    portText = bracket[2];
  } else if ((text.match(/:/g) ?? []).length === 1) {
    [host, portText] = text.split(":") as [string, string];
  }
  const isIp = parseAddress(host) !== undefined;
  if (!isIp && (host.includes(":") || !HOSTNAME.test(host))) {
    throw new ConfigError(where, `"${spec}" is not HOST, HOST:PORT, HOST:LO-HI or [IPv6]:PORT`);
  }
  if (bracket && !host.includes(":")) throw new ConfigError(where, `"${spec}": brackets are only for IPv6 addresses`);
  if (portText === undefined) return { host };
  if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw new ConfigError(where, `"${spec}": port must be 1-65535`);
  }
  return { host, port: Number(portText) };
}

/** "off", "v1", "v2" or "spp", as the mode allows: tcp v1/v2, udp v2/spp, http none (it sends X-Forwarded-For and Forwarded). */
export function parseProxyProtocol(text: string, mode: Mode, where: string): ProxyProtocol {
  if (!PROXY_PROTOCOLS.includes(text as ProxyProtocol)) throw new ConfigError(where, `"${text}" is not one of ${PROXY_PROTOCOLS.join(", ")}`);
  const allowed: Record<Mode, readonly string[]> = { tcp: ["off", "v1", "v2"], udp: ["off", "v2", "spp"], http: ["off"] };
  if (!allowed[mode].includes(text)) {
    const why = mode === "http" ? "http origin connections are shared by many clients; http sends X-Forwarded-For and Forwarded instead" : `${mode} services take ${allowed[mode].filter((p) => p !== "off").join(" or ")}`;
    throw new ConfigError(where, `${text}: ${why}`);
  }
  return text as ProxyProtocol;
}

export function parseBalance(text: string, where: string): Balance {
  if (!BALANCES.includes(text as Balance)) throw new ConfigError(where, `"${text}" is not one of ${BALANCES.join(", ")}`);
  return text as Balance;
}

/** A pool from its origins, with the defaults for what is not given. */
export function poolOf(origins: OriginConfig[], parts: Partial<Omit<PoolConfig, "origins">> = {}): PoolConfig {
  return { origins, balance: parts.balance ?? POOL_DEFAULTS.balance, health: parts.health, eject: parts.eject ?? POOL_DEFAULTS.eject, ...(parts.tls ? { tls: parts.tls } : {}) };
}
