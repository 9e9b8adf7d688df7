import type { Prefix } from "./address";
import type { PortRange } from "./ports";

/** tcp and udp today; http services arrive with their own data plane. */
export type Mode = "tcp" | "udp" | "http";

/**
 * How a service tells its origin who the client is: off, PROXY protocol v2
 * (on a UDP flow's first datagram), or Cloudflare's Simple Proxy Protocol
 * (UDP, every datagram, both ways).
 */
export type ProxyProtocol = "off" | "v2" | "spp";

/** Where a service forwards to. No port: the port the client dialled (Spectrum's default). */
export interface OriginConfig {
  readonly host: string;
  readonly port?: number;
}

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

/** One service as configured: parsed and validated, not yet running. */
export interface ServiceConfig {
  readonly name: string;
  readonly mode: Mode;
  readonly bindings: readonly BindingConfig[];
  /** Absent: the built-in responder (HTTP page or echo). */
  readonly origin?: OriginConfig;
  /** TCP only. */
  readonly connectTimeoutMs: number;
  /** A TCP connection's or a UDP flow's. */
  readonly idleTimeoutMs: number;
  readonly proxyProtocol: ProxyProtocol;
  readonly access: AccessConfig;
}

/** Where the admin API listens: a unix socket (default), or loopback with a bearer token. */
export type AdminConfig =
  | { readonly kind: "unix"; readonly path: string }
  | { readonly kind: "tcp"; readonly host: string; readonly port: number; readonly token: string }
  | { readonly kind: "off" };

/** Everything `edgeproxy serve` needs. */
export interface ServeConfig {
  readonly services: readonly ServiceConfig[];
  /** Steer ports even where another socket already listens. */
  readonly takeOver: boolean;
  /** Cap on open connections for the process; default: what the open-file limit allows. */
  readonly maxConnections?: number;
  /** Cap on concurrent UDP flows for the process; default: a share of the open-file limit. */
  readonly maxFlows?: number;
  readonly admin: AdminConfig;
  /** The file it came from, for reload; absent for the command-line shortcut. */
  readonly source?: string;
  /** bpffs mount for pinned state (--bpffs, $EDGEPROXY_BPFFS, /sys/fs/bpf). */
  readonly bpffs?: string;
}

export const DEFAULTS = {
  prefix: "127.0.0.1/32",
  ports: "1-65535",
  connectTimeoutMs: 5_000,
  idleTimeoutMs: 300_000,
  udpIdleTimeoutMs: 30_000,
  adminSocket: "/run/edgeproxy/admin.sock",
} as const;

/** Every address family a service's bindings use, for its listening sockets. */
export function serviceFamilies(s: ServiceConfig): (4 | 6)[] {
  return [...new Set(s.bindings.flatMap((b) => b.prefixes.map((p) => p.family)))].sort();
}

/** The transport a mode's bindings and sockets use. */
export const transportOf = (mode: Mode): "tcp" | "udp" => (mode === "udp" ? "udp" : "tcp");
