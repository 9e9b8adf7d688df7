import { basename, join } from "node:path";
import { ConfigError } from "../errors";
import type { Prefix } from "./address";
import type { HttpConfig, PoolConfig, SniRouteConfig, TlsConfig } from "./pool";
import type { PortRange } from "./ports";
import type { Deadlines } from "./deadlines";

export type { Balance, EjectConfig, HealthConfig, HttpConfig, OriginConfig, PoolConfig, RouteConfig, SniRouteConfig, TlsConfig } from "./pool";

/** tcp and udp relay bytes and datagrams; http proxies requests. */
export type Mode = "tcp" | "udp" | "http";

/**
 * How a service tells its origin who the client is: off, PROXY protocol v1
 * or v2 (tcp: at the start of each origin connection; udp, v2 only: on a
 * flow's first datagram), or Cloudflare's Simple Proxy Protocol (udp, every
 * datagram, both ways).
 */
export type ProxyProtocol = "off" | "v1" | "v2" | "spp";

/** Traffic a service answers: every (prefix, port range) pair, for one protocol. */
export interface BindingConfig {
  readonly protocol: "tcp" | "udp";
  readonly prefixes: readonly Prefix[];
  readonly ports: readonly PortRange[];
}

/**
 * Source-address rules, enforced in the BPF program before a connection
 * reaches any socket. The longest matching prefix of allow ∪ deny decides;
 * with any allow rule, a source matching none is denied.
 */
export interface AccessConfig {
  readonly allow: readonly Prefix[];
  readonly deny: readonly Prefix[];
}

/**
 * Per-client limits (source_connections, source_rate, source_prefix_v6). A
 * client is its address, IPv6 ones cut to prefixV6 bits (a host usually has
 * a whole /64). Enforced by the BPF program at socket lookup (src/dispatcher)
 * and, for clients a PROXY header names and for UDP flows, at accept.
 */
export interface SourceLimits {
  /** Open connections (tcp, http) or flows (udp) per client for the whole instance, all workers together; 0: no limit. */
  readonly connections: number;
  /** New connections per second per client (tcp, http), `burst` of them back to back; absent: no limit. */
  readonly rate?: { readonly perSecond: number; readonly burst: number };
  /** Prefix length IPv6 clients are grouped by (IPv4: one address each). */
  readonly prefixV6: number;
}

/** Where a service's access log goes and how (config/accesslog.ts completes it). */
export interface AccessLogConfig {
  /** An absolute path, or "-" for stdout. */
  readonly path: string;
  /** The share of lines written, 0 to 1 (access_log_sample). */
  readonly sample: number;
  /** Also a line when a connection or flow starts (access_log_connect). */
  readonly connect: boolean;
  /** Bound on queued bytes per file (access_log_buffer), instance-wide. */
  readonly bufferBytes: number;
  /** The serve's instance name, written in every line. */
  readonly instance?: string;
}

/** One service as configured: parsed and validated, not yet running. */
export interface ServiceConfig {
  readonly name: string;
  readonly mode: Mode;
  readonly bindings: readonly BindingConfig[];
  /** Absent: the built-in responder (HTTP page or echo). In http mode, the catch-all route's pool. */
  readonly pool?: PoolConfig;
  /** tcp and http. */
  readonly connectTimeoutMs: number;
  /** A TCP connection's or a UDP flow's. */
  readonly idleTimeoutMs: number;
  readonly proxyProtocol: ProxyProtocol;
  readonly access: AccessConfig;
  /** tcp and http: source prefixes (trusted load balancers) whose connections must start with a PROXY v1 or v2 header; empty: off. */
  readonly acceptProxy: readonly Prefix[];
  /** tcp and http: terminate TLS; absent: bytes pass through as they are. */
  readonly tls?: TlsConfig;
  /** http mode only. */
  readonly http?: HttpConfig;
  /**
   * tcp mode only ([[service.route]] with sni): route by the ClientHello's
   * server name without terminating TLS; unmatched connections go to `pool`.
   * Absent: no ClientHello is read.
   */
  readonly sniRoutes?: readonly SniRouteConfig[];
  /** tcp and http: how long each client stage may take (PROXY header, TLS handshake, and http's request head, keep-alive wait, body gaps). */
  readonly deadlines: Deadlines;
  /** Absent: no per-client limits. */
  readonly sourceLimits?: SourceLimits;
  /** Absent: no access log (the default). */
  readonly accessLog?: AccessLogConfig;
  /** tcp and http: the data plane it runs on, completed by completeEngine (`engine`, --engine, $EDGEPROXY_ENGINE); absent for udp. */
  readonly engine?: Engine;
}

/** Where the admin API listens: a unix socket (default), or loopback with a bearer token. */
export type AdminConfig =
  | { readonly kind: "unix"; readonly path: string }
  | { readonly kind: "tcp"; readonly host: string; readonly port: number; readonly token: string }
  | { readonly kind: "off" };

/** Everything `edgeproxy serve` needs. */
export interface ServeConfig {
  /**
   * This serve's name among the namespace's instances (--instance, `instance`):
   * its default admin socket is <run dir>/<instance>.sock, where control
   * commands find it. Default: the config file's base name without extension,
   * else "default" (instanceOf).
   */
  readonly instance: string;
  readonly services: readonly ServiceConfig[];
  /** Steer ports even where another socket already listens, and replace a live instance whose names or bindings overlap (--take-over). */
  readonly takeOver: boolean;
  /** Cap on open connections for the instance, shared by its workers (server.ts, connectionShare); default: what each worker's open-file limit allows. */
  readonly maxConnections?: number;
  /** Cap on concurrent UDP flows for the process; default: a share of the open-file limit. */
  readonly maxFlows?: number;
  readonly admin: AdminConfig;
  /** The file it came from, for reload; absent for the command-line shortcut. */
  readonly source?: string;
  /** bpffs mount for pinned state (--bpffs, $EDGEPROXY_BPFFS, /sys/fs/bpf). */
  readonly bpffs?: string;
  /** Worker processes (--workers, `workers`); default: the number of CPUs. */
  readonly workers?: number;
  /** How long a replaced process may finish its open connections (--drain-timeout, `drain_timeout`); default 30 s. */
  readonly drainTimeoutMs?: number;
  /** Written with the serving pid at ready, rewritten by an upgrade's successor, removed at exit (--pid-file). */
  readonly pidFile?: string;
}

export const DEFAULTS = {
  prefix: "127.0.0.1/32",
  ports: "1-65535",
  connectTimeoutMs: 5_000,
  idleTimeoutMs: 300_000,
  udpIdleTimeoutMs: 30_000,
  /** Where instances' admin sockets live by default ($EDGEPROXY_RUN_DIR overrides it). */
  runDir: "/run/edgeproxy",
  instance: "default",
  /** IPv6 clients of per-client limits: one /64 (RFC 6177's smallest end-site assignment, a single LAN). */
  sourcePrefixV6: 64,
} as const;

/** Every address family a service's bindings use, for its listening sockets. */
export function serviceFamilies(s: ServiceConfig): (4 | 6)[] {
  return [...new Set(s.bindings.flatMap((b) => b.prefixes.map((p) => p.family)))].sort();
}

/** The transport a mode's bindings and sockets use. */
export const transportOf = (mode: Mode): "tcp" | "udp" => (mode === "udp" ? "udp" : "tcp");

/**
 * Instance names: they name a socket file, so no "/" and nothing hidden;
 * at most 63 bytes, as the key of the pinned instance records holds them
 * NUL-terminated in 64 (src/dispatcher/instances.ts).
 */
export const INSTANCE_NAME = /^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,62}$/;
/** sun_path is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;

/** Check an instance name given at `where`; throws a ConfigError. */
export function checkInstance(name: string, where: string): string {
  if (!INSTANCE_NAME.test(name)) throw new ConfigError(where, `"${name}": use 1-63 of a-z A-Z 0-9 _ . -, not starting with . or -`);
  return name;
}

/** The instance name: given, else the config file's base name without extension, else "default". */
export function instanceOf(given: string | undefined, file: string | undefined, where: string): string {
  if (given !== undefined) return checkInstance(given, where);
  if (file === undefined) return DEFAULTS.instance;
  const base = basename(file).replace(/\.[^.]*$/, "");
  if (!INSTANCE_NAME.test(base)) throw new ConfigError(file, `the file's name gives no usable instance name ("${base}"); set instance = "NAME" in it or --instance NAME`);
  return base;
}

/** The directory of instances' admin sockets: $EDGEPROXY_RUN_DIR, else /run/edgeproxy. */
export function runDir(): string {
  const env = process.env.EDGEPROXY_RUN_DIR;
  if (env === undefined || env === "") return DEFAULTS.runDir;
  if (!env.startsWith("/")) throw new ConfigError("$EDGEPROXY_RUN_DIR", `"${env}" is not an absolute path`);
  return env;
}

/** An instance's default admin socket: <run dir>/<instance>.sock. */
export function defaultAdmin(instance: string, where: string): AdminConfig {
  const path = join(runDir(), `${instance}.sock`);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new ConfigError(where, `the admin socket ${path} would be longer than ${MAX_SOCKET_PATH} bytes; give a shorter instance name or admin socket`);
  return { kind: "unix", path };
}

/**
 * A tcp service's data plane: "bun" (Bun's sockets, src/proxy/tcp.ts) or
 * "epoll" (raw descriptors on the data plane thread's epoll loop, src/engine/).
 */
export type Engine = "bun" | "epoll";
/** What `engine` / --engine / $EDGEPROXY_ENGINE may say: an engine, or "auto" (the default: epoll where it can serve the service). */
export type EngineSetting = "auto" | Engine;
export const ENGINE_SETTINGS: readonly EngineSetting[] = ["auto", "epoll", "bun"];
/** The process default for services that leave `engine` out or say "auto"; "bun" is the escape hatch back to Bun's sockets. */
export const ENGINE_ENV = "EDGEPROXY_ENGINE";

/** Why a service cannot run on the epoll engine yet; undefined when it can. */
export function epollUnsupported(s: Pick<ServiceConfig, "mode" | "pool" | "tls" | "sniRoutes" | "http">): string | undefined {
  if (s.mode === "http") return httpEpollUnsupported(s);
  if (s.mode !== "tcp") return `runs tcp and http services only (this one is ${s.mode})`;
  if (!s.pool) return "needs origins (the built-in responder runs on Bun's sockets)";
  if (s.tls) return "does not terminate TLS yet";
  if (s.sniRoutes) return "does not route by SNI yet";
  if (s.pool.tls) return "does not speak TLS to origins yet (origin_tls)";
  return undefined;
}

/** http services on the engine: plain HTTP/1.1 to plain origins (src/engine/http.ts); what it lacks yet, one reason. */
function httpEpollUnsupported(s: Pick<ServiceConfig, "pool" | "tls" | "http">): string | undefined {
  if (s.tls) return "does not terminate TLS (nor HTTP/2) on http services yet";
  const routes = s.http?.routes ?? [];
  if (!s.pool || routes.some((r) => !r.pool)) return "needs origins on every route of an http service (the built-in responder runs on Bun's sockets)";
  if (s.pool.tls || routes.some((r) => r.pool?.tls)) return "does not speak TLS to origins yet (origin_tls)";
  return undefined;
}

/**
 * The engine a tcp or http service runs on, completed once where its config
 * is parsed (file.ts, args.ts); undefined for udp, which has one data plane.
 * `setting` is the service's own (`engine`, --engine); absent or "auto", the
 * process default $EDGEPROXY_ENGINE decides, itself "auto" when unset:
 * epoll wherever epollUnsupported() finds nothing against it, else bun
 * (TLS, HTTP/2, sni routes, origin_tls, the built-in responder). The engine
 * measures less CPU per request than Bun's sockets for both: tcp
 * (bench/profiles/tcp.md) and plain HTTP/1.1 (bench/profiles/http.md: 0.92–0.95×
 * keep-alive, 0.93–0.98× one connection per request, paired, log off and on).
 * An explicit "epoll" the engine cannot serve is the config's error (`at`);
 * so is an $EDGEPROXY_ENGINE that names no setting.
 */
export function completeEngine(setting: EngineSetting | undefined, s: Pick<ServiceConfig, "mode" | "pool" | "tls" | "sniRoutes" | "http">, at: string): Engine | undefined {
  // Either engine named for a udp service would be ignored (it has one data plane): the operator's mistake, said so.
  if ((setting === "epoll" || setting === "bun") && s.mode !== "tcp" && s.mode !== "http") throw new ConfigError(at, `"${setting}" is for tcp and http services; a ${s.mode} service has one data plane of its own: leave it out or say "auto"`);
  const why = epollUnsupported(s);
  if (setting === "epoll" && why) throw new ConfigError(at, `"epoll" ${why}; use "auto" or "bun"`);
  // Checked for every service, whatever its mode or setting: a misspelt escape hatch is never silently ignored.
  const env = process.env[ENGINE_ENV];
  if (env !== undefined && env !== "" && !ENGINE_SETTINGS.includes(env as EngineSetting)) throw new ConfigError(`$${ENGINE_ENV}`, `"${env}" is not one of ${ENGINE_SETTINGS.join(", ")}`);
  if (s.mode !== "tcp" && s.mode !== "http") return undefined;
  if (setting === "epoll" || setting === "bun") return setting;
  return env === "bun" || why ? "bun" : "epoll";
}
