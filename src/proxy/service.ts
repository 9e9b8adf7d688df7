import type { TCPSocketListener } from "bun";
import type { CertificateConfig } from "../config/tls";
import type { ConnectionStats } from "../admin/backend";
import type { Family } from "../config/address";
import { serviceFamilies, type ServiceConfig } from "../config/service";
import { EdgeError } from "../errors";
import type { OriginStatus } from "../origin/pool";
import type { HttpStatsSnapshot } from "./http/stats";
import type { DatagramStats } from "./udp/stats";
import { attachMigrate, joinGroup, REUSE_PORT, type GroupPlan } from "./group";
import { fstatSync } from "node:fs";
import { socketCookie } from "../system/sockets";
import type { SourceLimit } from "./sourcelimit";

/** One listening socket of a service; the dispatcher steers its whole family's bindings here. */
export interface ServiceSocket {
  readonly family: Family;
  readonly fd: number;
  readonly inode: number;
  /** Its socket cookie: how this process recognises its own member entries in the shared SOCKMAP (see members.ts). */
  readonly cookie: bigint;
  readonly address: string;
  /** The loopback port: its reuseport group's. */
  readonly port: number;
}

/** A service's data plane, whatever its mode. */
export interface DataPlaneService {
  readonly config: ServiceConfig;
  /** The protocol of its sockets, for their SOCKMAP slots. */
  readonly protocol: "tcp" | "udp";
  /**
   * Open the listening sockets (one per family the service's prefixes use),
   * each in the plan's SO_REUSEPORT group. Undo on failure.
   */
  listen(plan?: GroupPlan): ServiceSocket[];
  /** Stop taking new connections or flows; with `abort`, end the open ones too. Idempotent. */
  close(abort?: boolean): void;
  /** Connections (or UDP flows) still open: what a drain waits for. */
  openCount(): number;
  /** Data-plane figures for the admin API. */
  report(): { connections?: ConnectionStats; datagrams?: DatagramStats; origins?: OriginStatus[]; http?: HttpStatsSnapshot };
  /** One line for the shutdown log. */
  summary(): string;
  /** Per-client limits at accept, when the service has any: what it refused. */
  readonly sourceLimit?: Pick<SourceLimit, "refused">;
  /** TLS-terminating services: a reload's certificates, for new handshakes (no new sockets). */
  reloadCertificates?(certs: readonly CertificateConfig[]): void;
}

// Bound to an ephemeral loopback port: the address does not matter to
// bpf_sk_assign, and loopback keeps the socket off every real interface.
export const LISTEN_ADDRESS: Record<Family, string> = { 4: "127.0.0.1", 6: "::1" };

/** A Bun TCP listener as a ServiceSocket, with the plan's migrate program attached to its group. */
export function listenerSocket(family: Family, listener: { hostname: string; port: number }, plan: GroupPlan): ServiceSocket {
  const fd = (listener as unknown as { fd: number }).fd;
  attachMigrate(fd, plan);
  return { family, fd, inode: fstatSync(fd).ino, cookie: socketCookie(fd, "listener"), port: listener.port, address: `${family === 6 ? `[${listener.hostname}]` : listener.hostname}:${listener.port}` };
}

/**
 * Open a service's listeners, one per address family its prefixes use, each
 * in the plan's SO_REUSEPORT group, with the pipeline's handlers (plain:
 * TLS is the pipeline's stage).
 */
export function openListeners(
  config: ServiceConfig,
  plan: GroupPlan,
  socket: object,
  into: { family: Family; listener: TCPSocketListener<any> }[],
): ServiceSocket[] {
  try {
    return serviceFamilies(config).map((family) => {
      const listener = joinGroup(family, plan, (port) =>
        Bun.listen<any>({ hostname: LISTEN_ADDRESS[family], port, ...REUSE_PORT, allowHalfOpen: true, socket: socket as any }),
      );
      into.push({ family, listener });
      return listenerSocket(family, listener, plan);
    });
  } catch (cause) {
    throw new EdgeError(`service ${config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
  }
}
