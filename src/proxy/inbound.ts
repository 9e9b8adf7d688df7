import type { Socket } from "bun";
import { parseAddress, prefixContains, unmapAddress, type Prefix } from "../config/address";
import type { Endpoint } from "../system/sockaddr";
import type { Admission } from "./admission";
import { unmapEndpoint } from "./proxyheader/encode";
import { parseProxyHeader } from "./proxyheader/parse";
import type { ServiceStats } from "./stats";

/*
 * The first stage of a connection from a trusted load balancer (accept_proxy):
 * read its PROXY v1 or v2 header, then hand the connection on with the
 * header's addresses. It stands in for the Relay as the client socket's
 * `data` (same handler methods) until the header is complete, so the
 * listener's handlers need not know which stage a connection is in.
 */

/** Both ends of an accepted connection, as the kernel (or a trusted PROXY header) tells them. */
export interface Ends {
  /** The client: the peer, or the header's source. */
  readonly client: Endpoint;
  /** The original destination: with sk_lookup, the accepted socket's local address; or the header's destination. */
  readonly edge: Endpoint;
}

function endpoint(address: string | undefined, port: number): Endpoint | undefined {
  const addr = address ? parseAddress(unmapAddress(address)) : undefined;
  return addr ? unmapEndpoint({ family: addr.length === 4 ? 4 : 6, addr, port }) : undefined;
}

/** The socket's own ends; undefined when Bun no longer knows them (the peer is already gone). */
export function socketEnds(s: Socket<any>): Ends | undefined {
  const client = endpoint(s.remoteAddress, s.remotePort);
  const edge = endpoint(s.localAddress, s.localPort);
  return client && edge ? { client, edge } : undefined;
}

/** Is the client one whose connections must begin with a PROXY header? */
export function mustSendHeader(trusted: readonly Prefix[], client: Endpoint): boolean {
  return trusted.some((p) => prefixContains(p, client.addr));
}

/** A connection before its relay exists (PROXY header or TLS handshake pending), swept by the service's timer. */
export interface Pending {
  sweep(now: number): void;
  /** Reset without counting (the service is shutting down, or the stage gave up). */
  abort(): void;
}

/**
 * What the pre-relay stages share: a deadline checked by the sweep, a place
 * in the service's pending set, and the connection-cap slot, given back
 * unless the next stage takes the connection over. Subclasses say what an
 * expired deadline means.
 */
export abstract class PendingStage implements Pending {
  protected done = false;
  private readonly deadline: number;

  constructor(
    protected readonly socket: Socket<any>,
    protected readonly options: { readonly timeoutMs: number; readonly admission: Admission; readonly pending: Set<Pending> },
    now: number,
  ) {
    this.deadline = now + options.timeoutMs;
    options.pending.add(this);
  }

  sweep(now: number): void {
    if (!this.done && now >= this.deadline) this.expired();
  }

  protected abstract expired(): void;

  /** Reset without counting (the service is shutting down). */
  abort(): void {
    if (this.done) return;
    this.giveUp();
    this.socket.terminate();
  }

  /** The connection goes no further: out of the pending set, its cap slot back. */
  protected giveUp(): void {
    this.leave();
    this.options.admission.leave();
  }

  /** Out of the pending set (the next stage, if any, owns the connection now). */
  protected leave(): void {
    this.done = true;
    this.options.pending.delete(this);
  }
}

export interface InboundOptions {
  /** §2 of proxy-protocol.txt: the header must be complete within a few seconds ("at least 3"). */
  readonly timeoutMs: number;
  readonly stats: ServiceStats;
  /** Released here when the connection is refused; the next stage takes it over otherwise. */
  readonly admission: Admission;
  /** Connections not yet relayed (this stage or the TLS handshake), swept by the service's timer. */
  readonly pending: Set<Pending>;
}

/** A connection whose PROXY header is not complete yet. */
export class InboundHeader extends PendingStage {
  private received: Uint8Array = new Uint8Array(0);

  constructor(
    socket: Socket<any>,
    private readonly ends: Ends,
    protected override readonly options: InboundOptions,
    now: number,
    /** Next stage: the addresses to use from now on, and the bytes after the header. */
    private readonly start: (ends: Ends, rest: Uint8Array) => void,
  ) {
    super(socket, options, now);
  }

  fromClient(chunk: Uint8Array): void {
    if (this.done) return;
    // The parser decides within 16 + V2_MAX_LENGTH (or 107) bytes, so this stays small.
    const all = new Uint8Array(this.received.length + chunk.length);
    all.set(this.received);
    all.set(chunk, this.received.length);
    this.received = all;
    const r = parseProxyHeader(all, "stream");
    if (r.kind === "need-more") return;
    if (r.kind === "error") return this.refuse(r.reason);
    this.leave();
    // §2.1 UNKNOWN / §2.2 LOCAL: "use the real connection endpoints".
    const ends = r.addresses ? { client: r.addresses.src, edge: r.addresses.dst } : this.ends;
    this.start(ends, all.subarray(r.consumed));
  }

  drained(): void {}

  ended(): void {
    if (this.done) return;
    // A balancer's TCP health check connects and closes without a byte: not an error.
    if (this.received.length === 0) {
      this.giveUp();
      this.socket.end();
      return;
    }
    this.refuse("truncated");
  }

  closed(_side: "client", _error?: Error): void {
    if (this.done) return;
    if (this.received.length) this.options.stats.proxyHeaderError("truncated");
    this.giveUp();
  }

  protected expired(): void {
    this.refuse("timeout");
  }

  /** Reset the connection (§2.1: "abort the connection as soon as possible so that the sender ... notice[s]"). */
  refuse(reason: string): void {
    if (this.done) return;
    this.options.stats.proxyHeaderError(reason);
    this.abort();
  }

  protected override leave(): void {
    super.leave();
    this.received = new Uint8Array(0);
  }
}
