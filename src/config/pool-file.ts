import { ConfigError } from "../errors";
import { parseBalance, parseDuration, parseOrigin, parseSize, poolOf } from "./origin";
import { completeOriginTls, mergeOriginTls, ORIGIN_TLS_FIELDS, type OriginTlsSettings, type OriginTlsWhere } from "./origintls";
import { POOL_DEFAULTS, type EjectConfig, type HealthConfig, type HttpConfig, type OriginTlsConfig, type PoolConfig, type RouteConfig } from "./pool";
import { Fields } from "./schema";
import type { Mode } from "./service";

/** The keys of a [[service]] or [[service.route]] table that make its pool. */
export const POOL_FIELDS = ["origin", "origins", "balance", "health", "eject", ...ORIGIN_TLS_FIELDS];
export const HEALTH_FIELDS = ["interval", "timeout", "rise", "fall", "path", "port"];
export const EJECT_FIELDS = ["failures", "duration", "base_duration"];
export const ROUTE_FIELDS = ["host", "path", ...POOL_FIELDS];
// RFC 3986 §3.2.2 reg-name, lower-cased, or an IP literal, with an optional port.
const ROUTE_HOST = /^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?)(:\d{1,5})?$/;
// RFC 3986 §3.3 path characters, less those Hono's router path syntax gives a
// meaning to (: * ( ) — a prefix is literal); no query, no fragment, no dot segments.
const ROUTE_PATH = /^\/([A-Za-z0-9\-._~!$&'+,;=@%]+\/?)*$/;

/** The origin_tls keys a table sets (not yet checked: completeOriginTls does that). */
export function originTlsSettings(f: Fields): OriginTlsSettings {
  return { mode: f.string("origin_tls"), caFile: f.string("origin_ca"), sni: f.string("origin_sni"), certFile: f.string("origin_cert"), keyFile: f.string("origin_key") };
}

/**
 * A pool from origin/origins, balance, [health], [eject] and the completed
 * origin TLS settings `tls` (its own table's, or a route's over its
 * service's); undefined when the table names no origin.
 */
export function parsePool(f: Fields, mode: Mode, tls?: OriginTlsConfig): PoolConfig | undefined {
  if (f.has("origin") && f.has("origins")) throw new ConfigError(f.where, "set origin (one) or origins (a pool), not both");
  const key = f.has("origins") ? "origins" : "origin";
  const texts = f.has("origins") ? f.list("origins")! : f.has("origin") ? [f.string("origin")!] : [];
  if (f.has("origins") && texts.length === 0) throw new ConfigError(f.at("origins"), "must not be empty");
  if (texts.length === 0) {
    const stray = ["balance", "health", "eject"].find((k) => f.has(k));
    if (stray) throw new ConfigError(f.at(stray), "applies to a pool: set origin or origins too");
    return undefined;
  }
  const balanceText = f.string("balance");
  return poolOf(
    texts.map((t) => parseOrigin(t, f.at(key))),
    {
      balance: balanceText === undefined ? undefined : parseBalance(balanceText, f.at("balance")),
      health: f.has("health") ? parseHealth(Fields.of(f.value("health"), f.at("health"), ".", HEALTH_FIELDS), mode) : undefined,
      eject: f.has("eject") ? parseEject(Fields.of(f.value("eject"), f.at("eject"), ".", EJECT_FIELDS)) : undefined,
      tls,
    },
  );
}

/** [health]: interval, timeout, rise, fall, path (http). */
function parseHealth(f: Fields, mode: Mode): HealthConfig {
  const d = POOL_DEFAULTS.health;
  const duration = (key: string, fallback: number) => {
    const t = f.text(key);
    return t === undefined ? fallback : parseDuration(t, f.at(key));
  };
  const path = f.string("path");
  const port = f.has("port") ? parseHealthPort(String(f.value("port")), f.at("port")) : undefined;
  if (path !== undefined && mode !== "http") throw new ConfigError(f.at("path"), `${mode} pools are checked by TCP connect; path is for http services`);
  if (path !== undefined && !/^\/[\x21-\x7e]*$/.test(path)) throw new ConfigError(f.at("path"), `"${path}" must start with / and hold no spaces or control characters`);
  return healthOf({
    intervalMs: duration("interval", d.intervalMs),
    timeoutMs: duration("timeout", d.timeoutMs),
    rise: f.positiveInteger("rise") ?? d.rise,
    fall: f.positiveInteger("fall") ?? d.fall,
    path: path ?? d.path,
    ...(port !== undefined ? { port } : {}),
  }, f.where);
}

/** health.port / --health-port: the port checked on origins without a fixed port. */
export function parseHealthPort(text: string, where: string): number {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : 0;
  if (port < 1 || port > 65535) throw new ConfigError(where, `"${text}" is not a port (1-65535)`);
  return port;
}

/** Checks with defaults filled in; a timeout must end before the next check starts. */
export function healthOf(h: Partial<HealthConfig>, where: string): HealthConfig {
  const out = { ...POOL_DEFAULTS.health, ...h };
  if (h.intervalMs !== undefined && h.timeoutMs === undefined) out.timeoutMs = Math.min(out.timeoutMs, h.intervalMs);
  if (out.timeoutMs > out.intervalMs) throw new ConfigError(where, `the check timeout (${out.timeoutMs} ms) is longer than the interval (${out.intervalMs} ms)`);
  return out;
}

function parseEject(f: Fields): EjectConfig {
  const duration = (key: string) => {
    const t = f.text(key);
    return t === undefined ? undefined : parseDuration(t, f.at(key));
  };
  return ejectOf({ failures: f.positiveInteger("failures"), durationMs: duration("duration"), baseMs: duration("base_duration") }, f.at("base_duration"));
}

/**
 * Ejection with defaults filled in. Without base_duration, the first
 * ejection is the default base or the maximum if that is shorter; a base
 * longer than the maximum is a mistake.
 */
export function ejectOf(e: { failures?: number; durationMs?: number; baseMs?: number }, where: string): EjectConfig {
  const d = POOL_DEFAULTS.eject;
  const durationMs = e.durationMs ?? d.durationMs;
  const baseMs = e.baseMs ?? Math.min(d.baseMs, durationMs);
  if (baseMs > durationMs) throw new ConfigError(where, `the first ejection (${baseMs} ms) is longer than the longest (duration, ${durationMs} ms)`);
  return { failures: e.failures ?? d.failures, durationMs, baseMs };
}

/** What routes inherit from their service: its origin TLS keys, and where they were given. */
export interface RouteDefaults {
  readonly tls: OriginTlsSettings;
  readonly tlsAt: OriginTlsWhere;
  readonly read: (path: string) => string;
}

/** [[service.route]] tables (http only), ordered most specific first. */
function parseRoutes(raw: readonly unknown[], where: string, defaults: RouteDefaults): RouteConfig[] {
  const routes = raw.map((r, i) => {
    const f = Fields.of(r, `${where}: route[${i + 1}]`, ".", ROUTE_FIELDS, { sni: "sni routes are for tcp services, which pass TLS through; an http service routes by host and path" });
    // Each origin_* key a route sets replaces its service's; messages name where each came from.
    const own = originTlsSettings(f);
    const ownKey = ORIGIN_TLS_FIELDS.find((k) => f.has(k));
    if (ownKey && !f.has("origin") && !f.has("origins")) throw new ConfigError(f.at(ownKey), "applies to a pool: set origin or origins too");
    const tlsAt: OriginTlsWhere = (k) => (f.has(k) ? f.at(k) : defaults.tlsAt(k));
    const tls = completeOriginTls(mergeOriginTls(defaults.tls, own), "http", tlsAt, defaults.read);
    const hostText = f.string("host");
    // Requests' Host is compared without a trailing dot (an absolute name is the same host).
    const host = hostText?.toLowerCase().replace(/\.(?=(:\d+)?$)/, "");
    if (host !== undefined && !ROUTE_HOST.test(host)) throw new ConfigError(f.at("host"), `"${hostText}" is not a host name or IP literal with an optional port`);
    const port = host && /:(\d+)$/.exec(host)?.[1];
    if (port && (Number(port) < 1 || Number(port) > 65535)) throw new ConfigError(f.at("host"), `"${hostText}": port must be 1-65535`);
    const path = f.string("path") ?? "/";
    if (!ROUTE_PATH.test(path) || /(^|\/)\.\.?(\/|$)/.test(path)) throw new ConfigError(f.at("path"), `"${path}" is not an absolute path prefix (like /api/)`);
    if (host === undefined && !f.has("path")) throw new ConfigError(f.where, "a route needs host, path or both");
    const route: RouteConfig = { host, path: path.length > 1 ? path.replace(/\/$/, "") : path, pool: parsePool(f, "http", tls) };
    return route;
  });
  const key = (r: RouteConfig) => `${r.host ?? "*"} ${r.path}`;
  const seen = new Map<string, number>();
  routes.forEach((r, i) => {
    const first = seen.get(key(r));
    if (first !== undefined) throw new ConfigError(`${where}: route[${i + 1}]`, `host ${r.host ?? "(any)"} and path ${r.path} are already route[${first + 1}]'s`);
    seen.set(key(r), i);
  });
  return sortRoutes(routes);
}

/** Most specific first: a host with a port, then a host, then any host; within each, longer paths first. */
function sortRoutes(routes: readonly RouteConfig[]): RouteConfig[] {
  const rank = (r: RouteConfig) => (r.host === undefined ? 2 : /:\d+$/.test(r.host) ? 0 : 1);
  return [...routes].sort((a, b) => rank(a) - rank(b) || b.path.length - a.path.length);
}

/** http options of a [[service]]: first_byte_timeout, max_body_size, max_header_size, http2, request_id_in_response, routes. */
export function parseHttp(f: Fields, mode: Mode, defaults: RouteDefaults): HttpConfig | undefined {
  // A tcp service's routes are sni routes (config/sni.ts).
  const keys = ["first_byte_timeout", "max_body_size", "max_header_size", "http2", "http2_max_concurrent_streams", "request_id_in_response", ...(mode === "tcp" ? [] : ["route"])];
  if (mode !== "http") {
    const stray = keys.find((k) => f.has(k));
    if (stray === "route") throw new ConfigError(f.at(stray), `routes http services (by host and path) and tcp services (by TLS server name); this one is ${mode}`);
    if (stray) throw new ConfigError(f.at(stray), `is for http services; this one is ${mode}`);
    return undefined;
  }
  const d = POOL_DEFAULTS.http;
  const t = f.text("first_byte_timeout");
  const size = (key: string, fallback: number) => {
    const v = f.text(key);
    return v === undefined ? fallback : parseSize(v, f.at(key));
  };
  const maxHeaderBytes = size("max_header_size", d.maxHeaderBytes);
  if (maxHeaderBytes < 1024 || maxHeaderBytes > 1 << 20) throw new ConfigError(f.at("max_header_size"), "must be 1KiB-1MiB");
  // Far above the default, one client's streams are what the connection cap was meant to bound.
  const streams = f.positiveInteger("http2_max_concurrent_streams", { max: 1000 }) ?? d.http2MaxConcurrentStreams;
  return {
    firstByteTimeoutMs: t === undefined ? d.firstByteTimeoutMs : parseDuration(t, f.at("first_byte_timeout")),
    maxBodyBytes: size("max_body_size", d.maxBodyBytes),
    maxHeaderBytes,
    http2: f.boolean("http2") ?? d.http2,
    http2MaxConcurrentStreams: streams,
    requestIdInResponse: f.boolean("request_id_in_response") ?? d.requestIdInResponse,
    routes: parseRoutes(f.tables("route", "[[service.route]]") ?? [], f.where, defaults),
  };
}
