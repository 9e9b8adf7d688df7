import { fstatSync } from "node:fs";
import { socketCookie } from "../../system/sockets";
import type { Fd } from "../../system/fd";
import { parseAddress, type Family } from "../../config/address";
import { serviceFamilies, type ServiceConfig } from "../../config/service";
import { EdgeError } from "../../errors";
import type { OriginPool, OriginStatus } from "../../origin/pool";
import {
  bindTo,
  IP_RECVORIGDSTADDR,
  IPV6_RECVORIGDSTADDR,
  localEndpoint,
  openUdpSocket,
  setIntOption,
  SO_RCVBUFFORCE,
  SO_REUSEPORT,
  SOL_IP,
  SOL_IPV6,
  SOL_SOCKET,
} from "../../system/udp";
import { joinGroup, NEW_GROUPS, type GroupPlan } from "../group";
import { LISTEN_ADDRESS, type DataPlaneService, type ServiceSocket } from "../service";
import type { UdpPlane } from "./plane";
import { serviceLog } from "../../log/access";
import type { SourceLimit } from "../sourcelimit";
import { readRow, ROW, UDP_DROP_REASONS, type DatagramStats } from "./stats";

// The steered socket takes every flow's first datagram: a deep queue absorbs
// bursts of new flows (SO_RCVBUFFORCE passes net.core.rmem_max; CAP_NET_ADMIN).
const LISTENER_RCVBUF = 4 << 20;

/** A udp-mode service: one unconnected socket per family receives every steered datagram; the worker makes the flows. */
export class UdpService implements DataPlaneService {
  readonly protocol = "udp";
  private slot = -1;
  private row: Float64Array | undefined;
  private unsubscribe = () => {};

  constructor(
    readonly config: ServiceConfig,
    private readonly plane: UdpPlane,
    /** Absent for the echo responder. Owned: closed with the service. */
    readonly pool: OriginPool | undefined,
    /** Per-client limits (source_connections: flows per client); counted on the data plane's thread. */
    private readonly limit?: SourceLimit,
  ) {}

  /** What the per-client flow limit refused: datagrams that would have opened a flow over it. */
  get sourceLimit(): { refused: { connections: number; rate: number } } | undefined {
    return this.limit ? { refused: { connections: this.report().datagrams.drops.source_limit, rate: 0 } } : undefined;
  }

  listen(plan: GroupPlan = NEW_GROUPS): ServiceSocket[] {
    // Owned here until handed over to the data plane's thread, which closes them when the service retires.
    const opened: { fd: Fd; family: Family }[] = [];
    try {
      const sockets = serviceFamilies(this.config).map((family) => {
        const own = openUdpSocket(family, `service ${this.config.name}`);
        opened.push({ fd: own, family });
        const fd = own.raw;
        if (family === 4) setIntOption(fd, SOL_IP, IP_RECVORIGDSTADDR, 1, "listener");
        else setIntOption(fd, SOL_IPV6, IPV6_RECVORIGDSTADDR, 1, "listener");
        try {
          setIntOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, LISTENER_RCVBUF, "listener");
        } catch {
          // Without CAP_NET_ADMIN: the default buffer still works, only shallower.
        }
        // In the service's reuseport group: every worker's socket takes a share
        // of new flows (by 4-tuple hash), and an upgrade's new socket joins it.
        setIntOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, "listener");
        joinGroup(family, plan, (port) => bindTo(fd, { family, addr: parseAddress(LISTEN_ADDRESS[family])!, port }, "listener"));
        const port = localEndpoint(fd, "listener").port;
        const host = family === 6 ? `[${LISTEN_ADDRESS[family]}]` : LISTEN_ADDRESS[family];
        return { family, fd, inode: fstatSync(fd).ino, cookie: socketCookie(fd, "listener"), port, address: `${host}:${port}` };
      });
      const pool = this.pool;
      const slot = this.plane.add({
        name: this.config.name,
        listeners: opened,
        origins: pool && { balance: pool.config.balance, edgeRange: pool.edgeRange, endpoints: pool.endpoints() },
        proxyProtocol: this.config.proxyProtocol,
        idleMs: this.config.idleTimeoutMs,
        ...(this.limit?.counting() ? { sourceLimit: this.limit.counting()! } : {}),
        // The UDP thread makes the lines; this thread's writer (opened here) writes them.
        ...(this.config.accessLog && serviceLog(this.config.name, this.config.accessLog) ? { accessLog: this.config.accessLog } : {}),
      });
      this.slot = slot;
      this.row = this.plane.row(slot);
      // Health checks and ejection run on this thread; the worker gets each change of health or ejected ports.
      if (pool) {
        this.unsubscribe = pool.onChange(() => this.plane.setOrigins(slot, pool.endpoints()));
        this.plane.onOrigin(slot, {
          // A refused datagram (ICMP port unreachable) is UDP's failed connect.
          report: (key, port, ok) => {
            const m = pool.member(key, port);
            if (ok) m?.succeeded();
            else m?.failed("refused");
          },
          panics: (counts) => {
            for (const [key, n] of counts) pool.panics(key, n);
          },
        });
        void pool.start();
      }
      return sockets;
    } catch (cause) {
      for (const { fd } of opened) fd.close();
      throw new EdgeError(`service ${this.config.name}`, `cannot open a UDP socket: ${(cause as Error).message}`, "kernel", { cause });
    }
  }

  openCount(): number {
    return this.report().datagrams.flowsActive;
  }

  close(abort = false): void {
    this.unsubscribe();
    this.pool?.close();
    if (this.slot < 0) return;
    this.plane.onOrigin(this.slot, undefined);
    this.plane.retire(this.slot, abort);
    this.slot = -1;
  }

  report(): { datagrams: DatagramStats; origins?: OriginStatus[] } {
    // Before listen() there are no figures yet: a row of zeros.
    return { datagrams: readRow(this.row ?? new Float64Array(ROW)), ...(this.pool ? { origins: this.pool.snapshot() } : {}) };
  }

  summary(): string {
    const s = this.report().datagrams;
    const drops = UDP_DROP_REASONS.filter((r) => s.drops[r] > 0).map((r) => `${r} ${s.drops[r]}`).join(", ") || "none";
    return `${s.flowsTotal} flows, ${s.datagramsFromClients} datagrams in, ${s.datagramsFromOrigins} out, ${s.bytesFromClients} bytes in, ${s.bytesFromOrigins} bytes out, drops: ${drops}`;
  }
}
