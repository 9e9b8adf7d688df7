import type { Socket, TCPSocketListener } from "bun";
import { formatAddress, type Family } from "../config/address";
import { serviceFamilies, type ServiceConfig } from "../config/service";
import { EdgeError } from "../errors";
import type { OriginPool } from "../origin/pool";
import type { Admission } from "./admission";
import type { CoarseClock } from "./clock";
import { TlsHandshake } from "./handshake";
import { InboundHeader, mustSendHeader, socketEnds, type Ends, type Pending } from "./inbound";
import { proxyV1Header, proxyV2Header } from "./proxyheader/encode";
import { Relay } from "./relay";
import { responderHandlers } from "./responder";
import { joinGroup, NEW_GROUPS, REUSE_PORT, type GroupPlan } from "./group";
import { LISTEN_ADDRESS, listenerSocket, type DataPlaneService, type ServiceSocket } from "./service";
import { ServiceStats } from "./stats";
import type { SourceLimit } from "./sourcelimit";

// What a client socket's `data` is: the PROXY header reader first (accept_proxy sources only), then the relay.
type Stage = Relay | InboundHeader | TlsHandshake;

/** A tcp-mode service: one listener per address family, every steered connection relayed to the origin. */
export class TcpService implements DataPlaneService {
  readonly protocol = "tcp";
  readonly stats = new ServiceStats();
  private readonly active = new Set<Relay>();
  // Connections whose PROXY header (accept_proxy) or TLS handshake is still incomplete.
  private readonly pending = new Set<Pending>();
  private readonly listeners: { family: Family; listener: TCPSocketListener<any> }[] = [];
  private readonly stopSweep: () => void;
  private closing = false;

  constructor(
    readonly config: ServiceConfig,
    private readonly clock: CoarseClock,
    private readonly admission: Admission,
    /** Absent for the built-in responder. Owned: started on listen, closed with the service. */
    readonly pool?: OriginPool,
    /** Per-client limits at accept (source_connections, source_rate); absent: none. */
    readonly sourceLimit?: SourceLimit,
  ) {
    this.stopSweep = clock.onTick((now) => {
      for (const r of this.active) r.sweep(now);
      for (const h of this.pending) h.sweep(now);
      if (this.closing && this.active.size === 0 && this.pending.size === 0) this.stopSweep();
    });
  }

  /** Open the listeners (one per family the service's prefixes use). Undo on failure. */
  listen(plan: GroupPlan = NEW_GROUPS): ServiceSocket[] {
    const families = serviceFamilies(this.config);
    try {
      const sockets = families.map((family) => {
        const listener = joinGroup(family, plan, (port) =>
          Bun.listen<any>({
            hostname: LISTEN_ADDRESS[family],
            port,
            ...REUSE_PORT,
            allowHalfOpen: true,
            // Terminate TLS here; the origin gets plaintext. Without it, bytes pass through as they are.
            ...(this.config.tls ? { tls: { cert: this.config.tls.cert, key: this.config.tls.key } } : {}),
            socket: this.pool ? this.relayHandlers(this.pool) : responderHandlers(this.admission, this.sourceLimit),
          }),
        );
        this.listeners.push({ family, listener });
        return listenerSocket(family, listener, plan);
      });
      void this.pool?.start();
      return sockets;
    } catch (cause) {
      this.close();
      throw new EdgeError(`service ${this.config.name}`, `cannot open a listening socket: ${(cause as Error).message}`, "kernel", { cause });
    }
  }

  private relayHandlers(pool: OriginPool) {
    const admission = this.admission;
    const options = { connectTimeoutMs: this.config.connectTimeoutMs, idleTimeoutMs: this.config.idleTimeoutMs, clock: this.clock, stats: this.stats, admission };
    const active = this.active;
    const { proxyProtocol, acceptProxy } = this.config;
    // §2 of proxy-protocol.txt: at least 3 s for the header, to cover a TCP retransmit.
    const inbound = { timeoutMs: Math.max(3_000, this.config.connectTimeoutMs), stats: this.stats, admission, pending: this.pending };
    const clock = this.clock;
    const tls = this.config.tls !== undefined;
    // `ends` is parsed only when a PROXY header is sent or accepted; plain connections skip the address parsing.
    const needEnds = proxyProtocol !== "off" || acceptProxy.length > 0;
    // Each of Bun's address getters is a syscall or a string: ask only for what the pool uses
    // (the client's address to hash on; the dialled port for port-preserving and port-range origins).
    const needClient = pool.config.balance === "hash";
    const limit = this.sourceLimit;
    const start = (s: Socket<any>, ends: Ends | undefined, rest: Uint8Array, named = false) => {
      // --- per-client limits (issue 15), admission stage: a client a PROXY header names is counted here.
      if (limit && named && ends && !limit.admit(s, ends.client, true)) {
        admission.leave();
        return void s.terminate();
      }
      const relay = new Relay(s, options, active);
      s.data = relay;
      if (ends && proxyProtocol === "v1") relay.preamble(proxyV1Header(ends.client, ends.edge));
      if (ends && proxyProtocol === "v2") relay.preamble(proxyV2Header(ends.client, ends.edge, "stream"));
      // Balancing sees the client, and port-preserving and port-range origins the edge port, as a
      // trusted PROXY header names them (else the socket's peer and local port).
      const pick = ends
        ? pool.pick(formatAddress(ends.client.addr), ends.edge.port)
        : pool.pick(needClient ? s.remoteAddress : "", pool.followsEdgePort ? s.localPort : 0);
      if (!pick) {
        options.stats.originError("no_origin");
        return relay.abort();
      }
      relay.connect(pick);
      if (rest.length) relay.fromClient(rest);
    };
    return {
      open(s: Socket<any>) {
        // Over the cap: this one was already queued in the kernel when steering stopped.
        if (!admission.admit()) return void s.terminate();
        const ends = needEnds ? socketEnds(s) : undefined;
        if (needEnds && !ends) {
          // The peer is already gone (Bun no longer knows its address).
          admission.leave();
          return void s.terminate();
        }
        const balancer = ends !== undefined && acceptProxy.length > 0 && mustSendHeader(acceptProxy, ends.client);
        // --- per-client limits (issue 15), admission stage: the peer is the client unless it is a trusted load balancer.
        if (limit && !balancer) {
          const client = ends?.client ?? socketEnds(s)?.client;
          if (!client || !limit.admit(s, client)) {
            admission.leave();
            return void s.terminate();
          }
        }
        if (balancer) {
          // A header without addresses (LOCAL, UNKNOWN: the balancer's own health check) hands back `ends` itself: not a client to limit.
          s.data = new InboundHeader(s, ends!, inbound, clock.now, (e, rest) => start(s, e, rest, e !== ends));
          return;
        }
        // (config/validate.ts refuses accept_proxy with tls on tcp: a connection is in one stage or the other.)
        if (tls) {
          s.data = new TlsHandshake(s, inbound, clock.now, () => start(s, ends, new Uint8Array(0)));
          return;
        }
        start(s, ends, new Uint8Array(0));
      },
      handshake(s: Socket<Stage>, success: boolean) {
        if (s.data instanceof TlsHandshake) s.data.handshaken(success);
      },
      data(s: Socket<Stage>, chunk: Buffer) {
        s.data?.fromClient(chunk);
      },
      drain(s: Socket<Stage>) {
        s.data?.drained("client");
      },
      end(s: Socket<Stage>) {
        s.data?.ended("client");
      },
      close(s: Socket<Stage>, error?: Error) {
        limit?.released(s);
        s.data?.closed("client", error);
      },
      error(s: Socket<Stage>, error: Error) {
        limit?.released(s);
        s.data?.closed("client", error);
      },
    };
  }

  report() {
    return { connections: this.stats.snapshot(), ...(this.pool ? { origins: this.pool.snapshot() } : {}) };
  }

  summary(): string {
    const s = this.stats;
    const errors = [...s.originErrors].map(([kind, n]) => `${kind} ${n}`).join(", ") || "none";
    const list = (m: Map<string, number>, what: string) => (m.size ? `, ${what}: ${[...m].map(([reason, n]) => `${reason} ${n}`).join(", ")}` : "");
    return `${s.connectionsTotal} connections, ${s.bytesFromClients} bytes in, ${s.bytesFromOrigins} bytes out, origin errors: ${errors}${list(s.proxyHeaderErrors, "PROXY header errors")}${list(s.tlsHandshakeErrors, "TLS handshake errors")}`;
  }

  /**
   * Stop accepting. With `abort`, reset every relayed connection too;
   * without, they run on, still under their timeouts, and the sweep stops
   * with the last of them. Idempotent.
   */
  openCount(): number {
    return this.active.size + this.pending.size;
  }

  close(abort = false): void {
    this.closing = true;
    this.pool?.close();
    for (const { listener } of this.listeners.splice(0)) listener.stop(false);
    if (abort) for (const r of [...this.active]) r.abort();
    if (abort) for (const h of [...this.pending]) h.abort();
    if (this.active.size === 0 && this.pending.size === 0) this.stopSweep();
  }
}
