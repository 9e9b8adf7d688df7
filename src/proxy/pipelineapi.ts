// The client pipeline's interfaces (the pipeline itself: pipeline.ts): what
// a service gives it (PipelineOptions: tcp.ts, http/service.ts) and what it
// ends in (a Protocol's Sessions: the relay, http's connections, the
// built-in responder, the SNI router).
import type { Socket } from "bun";
import type { Prefix } from "../config/address";
import type { Deadlines } from "../config/deadlines";
import type { Endpoint } from "../system/sockaddr";
import type { Admission } from "./admission";
import type { CoarseClock } from "./clock";
import type { EndNames, Ends } from "./inbound";
import type { ServiceStats } from "./stats";
import type { ServiceLog } from "../log/access";
import type { ClientTracker } from "./clients";
import type { CertStore } from "./tls/certstore";

/** What a protocol runs on a connection that passed every stage. */
export interface Session {
  clientData(chunk: Uint8Array): void;
  clientDrain(): void;
  /** The client's FIN. */
  clientEnd(): void;
  /** The client socket is closed (`error`: it was reset). The pipeline gives the cap slot back. */
  clientClosed(error?: Error): void;
  /** The session's own deadlines (idle, origin, and http's head, keep-alive and body), once per clock tick. */
  sweep(now: number): void;
  /** Bytes both ways so far (the busiest-clients tracker's, read at close); absent: not counted. */
  bytes?(): number;
  /** Reset now (the service is shutting down). */
  abort(): void;
}

/** A protocol the pipeline ends in: tcp's relay, http's connections, the built-in responder. */
export interface Protocol {
  /** Does `start` use the connection's addresses even without a PROXY header (a PROXY header to send, hashing)? */
  readonly needEnds: boolean;
  /**
   * `ends`: the PROXY header's addresses, or the socket's when computed; `rest`: bytes after the PROXY header;
   * `names`: with the access log on and `ends` not computed, the socket's ends as text (for the log only).
   */
  start(socket: Socket<any>, ends: Ends | undefined, rest: Uint8Array, names?: EndNames): Session;
}

export interface PipelineOptions {
  readonly admission: Admission;
  readonly stats: ServiceStats;
  readonly clock: CoarseClock;
  readonly acceptProxy: readonly Prefix[];
  /** TLS-terminating services: their certificates (the pipeline's TLS stage picks one per handshake). */
  readonly tls?: CertStore;
  readonly deadlines: Deadlines;
  /**
   * The admission check with the client's address (per-source limits hook in
   * here, proxy/sourcelimit.ts), once per connection: at accept with the peer,
   * unless the peer is a trusted load balancer (in accept_proxy); then once
   * its PROXY header names the real client. A header naming none (§2.1
   * UNKNOWN, §2.2 LOCAL: the balancer's own health check) is not a client and
   * is not checked. false: the connection is reset (the check counts its
   * refusals). true: what the check took is given back by `releaseClient`,
   * once, when the connection closes, whatever stage it is in. The
   * connection cap was taken before. Absent: no check, and no address parsed
   * at accept for it.
   */
  readonly admitClient?: (client: Endpoint, when: "accept" | "proxy_header") => boolean;
  /** The connection of a client `admitClient` admitted closed. */
  readonly releaseClient?: (client: Endpoint) => void;
  /** The service's access log (absent: off): the pipeline logs connections that end before the protocol starts. */
  readonly log?: ServiceLog;
  /** The process's busiest-clients tracker (proxy/clients.ts): every accepted client counted once, by address. */
  readonly clients?: ClientTracker;
}
