import type { Prefix } from "./address";
import type { PortRange } from "./ports";

/** tcp today; udp and http services arrive with their own data planes. */
export type Mode = "tcp" | "udp" | "http";

/** Where a service forwards to. No port: the port the client dialled (Spectrum's default). */
export interface OriginConfig {
  readonly host: string;
  readonly port?: number;
}

/** One service as configured: parsed and validated, not yet running. */
export interface ServiceConfig {
  readonly name: string;
  readonly mode: Mode;
  readonly protocols: readonly ("tcp" | "udp")[];
  readonly prefixes: readonly Prefix[];
  readonly ports: readonly PortRange[];
  /** Absent: the built-in responder (HTTP page or echo). */
  readonly origin?: OriginConfig;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

/** Everything `edgeproxy serve` needs. */
export interface ServeConfig {
  readonly services: readonly ServiceConfig[];
  /** Steer ports even where another socket already listens. */
  readonly takeOver: boolean;
  /** Cap on open connections for the process; default: what the open-file limit allows. */
  readonly maxConnections?: number;
}

export const DEFAULTS = {
  prefix: "127.0.0.1/32",
  ports: "1-65535",
  connectTimeoutMs: 5_000,
  idleTimeoutMs: 300_000,
} as const;
