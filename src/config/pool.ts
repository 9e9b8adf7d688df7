import type { PortRange } from "./ports";

/** How a pool picks an origin for a new connection, flow or request. */
export type Balance = "round-robin" | "least-connections" | "hash";

/**
 * One origin of a pool. No port: the port the client dialled (Spectrum's
 * default). A port range maps an edge range of the same size by offset
 * (edge 1005 of 1000-2000 goes to 3005 of 3000-4000).
 */
export interface OriginConfig {
  readonly host: string;
  readonly port?: number;
  readonly ports?: PortRange;
  /** Relative share of new connections, 1-1000. */
  readonly weight: number;
}

/** Active checks: TCP connect (tcp, udp) or HTTP GET (http), every interval. */
export interface HealthConfig {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive passes that bring an ejected origin back. */
  readonly rise: number;
  /** Consecutive failures that eject an origin. */
  readonly fall: number;
  /** http: the path checked with GET; 2xx and 3xx pass. */
  readonly path: string;
  /**
   * The port checked on origins without a fixed port (port-preserving and
   * port-range ones); absent: the first port of the origin's range, or of
   * the service's edge range for a port-preserving origin.
   */
  readonly port?: number;
}

/**
 * Passive ejection: `failures` consecutive connect failures of live traffic
 * take an endpoint port out, first for baseMs, doubling on repeats up to
 * durationMs; after durationMs without an ejection it starts at baseMs again.
 */
export interface EjectConfig {
  readonly failures: number;
  /** The longest ejection (TOML `duration`). */
  readonly durationMs: number;
  /** The first ejection (TOML `base_duration`); at most durationMs. */
  readonly baseMs: number;
}

/** verify: Spectrum's Full (strict), the chain and the name checked; insecure: Full, encrypted but anything accepted. */
export type OriginTlsMode = "verify" | "insecure";

/** TLS to a pool's origins (origin_tls, config/origintls.ts); PEM texts read when the config is parsed. */
export interface OriginTlsConfig {
  readonly mode: OriginTlsMode;
  /** origin_ca: the trusted CAs; absent: Bun's built-in Mozilla store. */
  readonly caFile?: string;
  readonly ca?: string;
  /**
   * origin_sni: the name sent (SNI) and verified; absent: the origin's host
   * name when it is a name, none for an IP literal (RFC 6066 §3), whose
   * certificate is then verified against the address.
   */
  readonly sni?: string;
  /** origin_cert / origin_key: a client certificate for origins that ask for one. */
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly cert?: string;
  readonly key?: string;
}

/** Where a service (or an HTTP route) sends traffic. */
export interface PoolConfig {
  readonly origins: readonly OriginConfig[];
  readonly balance: Balance;
  /** Absent: plain TCP to the origins (origin_tls = "off", the default). */
  readonly tls?: OriginTlsConfig;
  /** Absent: no active checks (passive ejection still applies). */
  readonly health?: HealthConfig;
  readonly eject: EjectConfig;
}

/** http: requests whose Host (and port, if given) and path prefix match go to this pool. */
export interface RouteConfig {
  /** Lower case; "example.com" matches any port, "example.com:8080" only that one. Absent: any host. */
  readonly host?: string;
  /** Starts with "/"; matches whole segments ("/api" matches "/api" and "/api/x", not "/apix"). */
  readonly path: string;
  /** Absent: the built-in responder. */
  readonly pool?: PoolConfig;
}

/**
 * tcp: connections whose TLS ClientHello names one of `names` (server_name,
 * RFC 6066 §3) go to this pool, TLS untouched (proxy/sni/).
 */
export interface SniRouteConfig {
  /** Lower case without a trailing dot; "*.b.example" matches exactly one label more than b.example. Unique across a service's routes. */
  readonly names: readonly string[];
  readonly pool: PoolConfig;
}

/** http-mode limits. */
export interface HttpConfig {
  /** The first byte of the origin's response must come within this (504 otherwise). */
  readonly firstByteTimeoutMs: number;
  /** Request bodies above this get 413. */
  readonly maxBodyBytes: number;
  /** Request line plus headers at most this long (431 otherwise). */
  readonly maxHeaderBytes: number;
  /** Offer HTTP/2 by ALPN when the service terminates TLS (RFC 9113 §3.2). */
  readonly http2: boolean;
  /** SETTINGS_MAX_CONCURRENT_STREAMS we announce (RFC 9113 §6.5.2); also sizes the rapid-reset budget. */
  readonly http2MaxConcurrentStreams: number;
  /**
   * Also return the request's X-Request-Id (the access log's request_id) to the client. Off by default, as in
   * nginx, HAProxy and Envoy (`always_set_request_id_in_response`): the id always goes to the origin, and
   * putting it in every response costs a copy of each response head.
   */
  readonly requestIdInResponse: boolean;
  /** Most specific first: longer host (with port before without), then longer path; the service's own pool is the last, catch-all route. */
  readonly routes: readonly RouteConfig[];
}

export type { TlsConfig } from "./tls";

export const POOL_DEFAULTS = {
  weight: 1,
  balance: "round-robin" as Balance,
  health: { intervalMs: 5_000, timeoutMs: 2_000, rise: 2, fall: 3, path: "/" },
  eject: { failures: 3, durationMs: 30_000, baseMs: 1_000 },
  http: { firstByteTimeoutMs: 60_000, maxBodyBytes: 1 << 30, maxHeaderBytes: 16 * 1024, http2: true, http2MaxConcurrentStreams: 100, requestIdInResponse: false },
  /** Names whose answer carries no TTL (/etc/hosts) are looked up again this often. */
  resolveMs: 30_000,
} as const;

/** Every pool a service uses: its routes' (http or sni) and its own. */
export function poolsOf(s: { readonly pool?: PoolConfig; readonly http?: HttpConfig; readonly sniRoutes?: readonly SniRouteConfig[] }): PoolConfig[] {
  return [...(s.http?.routes ?? []).flatMap((r) => (r.pool ? [r.pool] : [])), ...(s.sniRoutes ?? []).map((r) => r.pool), ...(s.pool ? [s.pool] : [])];
}

/** "10.0.0.1:80", "[2001:db8::1]:3000-4000", "origin.internal" (port-preserving), with " weight=N" when not 1. */
export function formatOrigin(o: OriginConfig): string {
  const host = o.host.includes(":") ? `[${o.host}]` : o.host;
  const where = o.ports ? `${host}:${o.ports.lo}-${o.ports.hi}` : o.port !== undefined ? `${host}:${o.port}` : `${o.host} (port-preserving)`;
  return o.weight === 1 ? where : `${where} weight=${o.weight}`;
}

/** A service's own pool in one line; a tcp service with sni routes and none resets what no route takes. */
export function describeServicePool(s: { readonly pool?: PoolConfig; readonly sniRoutes?: readonly SniRouteConfig[] }): string {
  return !s.pool && s.sniRoutes ? "none (connections no sni route takes are reset)" : describePool(s.pool);
}

/** One line for logs and status: "a, b (least-connections)". */
export function describePool(p: PoolConfig | undefined): string {
  if (!p) return "built-in responder";
  const list = p.origins.map(formatOrigin).join(", ");
  const tls = p.tls ? `, TLS ${p.tls.mode}` : "";
  return `${p.origins.length > 1 ? `${list} (${p.balance})` : list}${tls}`;
}
