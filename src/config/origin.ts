import { ConfigError } from "../errors";
import { parseAddress } from "./address";
import type { Mode, OriginConfig, ProxyProtocol } from "./service";

const PROXY_PROTOCOLS: readonly ProxyProtocol[] = ["off", "v2", "spp"];

const HOSTNAME = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$/;

/** "127.0.0.1:9000", "[::1]:9000", "::1", "origin.example", "origin.example:80". */
export function parseOrigin(text: string, where = "origin"): OriginConfig {
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
    throw new ConfigError(where, `"${text}" is not HOST, HOST:PORT or [IPv6]:PORT`);
  }
  if (bracket && !host.includes(":")) throw new ConfigError(where, `"${text}": brackets are only for IPv6 addresses`);
  if (portText === undefined) return { host };
  if (!/^\d+$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    throw new ConfigError(where, `"${text}": port must be 1-65535`);
  }
  return { host, port: Number(portText) };
}

/** "500ms", "5s", "2m", "1h"; a bare number is seconds. */
export function parseDuration(text: string, where: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!m) throw new ConfigError(where, `"${text}" is not a duration (like 500ms, 5s, 2m)`);
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms"];
  if (ms <= 0 || ms > 86_400_000 * 7) throw new ConfigError(where, `"${text}" must be above 0 and at most 7 days`);
  return Math.round(ms);
}

/** "off", "v2" or "spp"; the headers a UDP origin can take (TCP's PROXY protocol is not built yet). */
export function parseProxyProtocol(text: string, mode: Mode, where: string): ProxyProtocol {
  if (!PROXY_PROTOCOLS.includes(text as ProxyProtocol)) throw new ConfigError(where, `"${text}" is not one of ${PROXY_PROTOCOLS.join(", ")}`);
  if (text !== "off" && mode !== "udp") throw new ConfigError(where, `${text} is for udp services; ${mode} services cannot send a PROXY header yet`);
  return text as ProxyProtocol;
}
