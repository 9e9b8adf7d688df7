import type { Socket } from "bun";
import { formatAddress, prefixContains, unmapAddress, type Prefix } from "../config/address";
import { decodeSockaddr, SockaddrMemo, type Endpoint } from "../system/sockaddr";
import { endpointString, formatEndpoint } from "../log/access";
import { sockaddrString } from "../log/line";
import { localAddress, peerAddress } from "../system/tcp";
import { unmapEndpoint } from "./proxyheader/encode";
import { parseProxyHeader } from "./proxyheader/parse";

/*
 * The first stage of a connection from a trusted load balancer (accept_proxy):
 * read its PROXY v1 or v2 header, then hand the connection on with the
 * header's addresses (a stage of pipeline.ts).
 */

/** Both ends of an accepted connection, as the kernel (or a trusted PROXY header) tells them. */
export interface Ends {
  /** The client: the peer, or the header's source. */
  readonly client: Endpoint;
  /** The original destination: with sk_lookup, the accepted socket's local address; or the header's destination. */
  readonly edge: Endpoint;
}

// The edge's Endpoint by its sockaddr bytes: a listener's connections share a few (many with sk_lookup ranges,
// hence the bound), and one object per edge lets its text be formatted once (formatEndpoint's memo) instead of
// per connection.
const edges = new SockaddrMemo<Endpoint>(unmappedEndpoint);

/** A sockaddr's Endpoint, an IPv4-mapped IPv6 one (a dual-stack listener's IPv4 peer) as IPv4. */
function unmappedEndpoint(buf: Uint8Array): Endpoint | undefined {
  const e = decodeSockaddr(buf);
  return e && unmapEndpoint(e);
}

/**
 * The socket's own ends, from one getpeername(2) and one getsockname(2) on
 * its descriptor (Bun's four getters are a syscall each, and their text would
 * be parsed back into bytes); undefined when the peer is already gone.
 */
export function socketEnds(s: Socket<any>): Ends | undefined {
  const fd = (s as unknown as { fd: number }).fd;
  const peer = peerAddress(fd);
  const client = peer && unmappedEndpoint(peer);
  if (!client) return undefined;
  const local = localAddress(fd);
  const edge = local && edges.get(local);
  return edge ? { client, edge } : undefined;
}

/**
 * Both ends as the access log writes them ("ip:port"), for connections whose
 * ends nothing else needs parsed (no PROXY header to read or send, no
 * per-source limit): the log takes the text of the kernel's sockaddr bytes
 * (socketNames), with no Endpoint parse (≈ 1.5 µs a connection).
 */
export interface EndNames {
  readonly client: string;
  readonly edge: string;
  /** The client's address alone, when socketNames read it (the HTTP code's clientIp, without asking Bun again). */
  readonly clientIp?: string | undefined;
}

/**
 * The ends as text, or how to make them when a line first wants them (the
 * http engine: a getsockname(2) for the edge only for a connection with a
 * line sampled in, access_log_sample). The maker is called while the socket
 * is open, at most once; undefined: the ends are gone (the socket closed).
 */
export type EndNamesOrMaker = EndNames | (() => EndNames | undefined);

// The edge's text by its sockaddr bytes: one of the few a service answers on (bounded).
const edgeTexts = new SockaddrMemo<string>(sockaddrName);

/**
 * The socket's ends as text, from one getpeername(2) and one getsockname(2)
 * on its descriptor; undefined when the peer is already gone. Not Bun's
 * getters: each of remoteAddress, remotePort, localAddress and localPort is
 * a syscall of its own (four per connection, measured with perf stat), and
 * the client's address is asked again by the HTTP code (clientIp).
 */
export function socketNames(s: Socket<any>): EndNames | undefined {
  const fd = (s as unknown as { fd: number }).fd;
  const peer = peerAddress(fd);
  if (!peer) return undefined;
  let client: string | undefined;
  let clientIp: string | undefined;
  if (peer[0] === 2 && peer[1] === 0) {
    client = sockaddrString(peer);
    clientIp = `${peer[4]}.${peer[5]}.${peer[6]}.${peer[7]}`;
  } else {
    // IPv6, or an IPv4 peer of a dual-stack listener (unmapped, as Bun's getters and unmapAddress give it).
    const e = unmappedEndpoint(peer);
    if (!e) return undefined;
    client = endpointString(e);
    clientIp = formatAddress(e.addr);
  }
  if (client === undefined) return undefined;
  const local = localAddress(fd);
  const edge = local && edgeTexts.get(local);
  if (edge === undefined) return undefined;
  return { client, edge, clientIp };
}

/** A sockaddr's "ip:port", an IPv4-mapped IPv6 one's as IPv4: the text Bun's getters gave. */
function sockaddrName(buf: Uint8Array): string | undefined {
  const e = unmappedEndpoint(buf);
  return e && endpointString(e);
}

/**
 * The client's address alone (X-Forwarded-For, the busiest clients): from
 * the ends or names the pipeline read already, else Bun's getter (the engine's
 * sockets, whose getter reads bytes it holds); "" when the peer is gone.
 */
export function clientAddress(ends: Ends | undefined, names: EndNamesOrMaker | undefined, s: { readonly remoteAddress: string | undefined }): string {
  if (ends) return formatAddress(ends.client.addr);
  if (typeof names === "object" && names.clientIp !== undefined) return names.clientIp;
  return s.remoteAddress ? unmapAddress(s.remoteAddress) : "";
}

/** Parsed ends (a PROXY header's, or the socket's when parsed anyway) as the log writes them. */
export function endNames(e: Ends): EndNames {
  return { client: endpointString(e.client), edge: formatEndpoint(e.edge) };
}

/** Is the client one whose connections must begin with a PROXY header? */
export function mustSendHeader(trusted: readonly Prefix[], client: Endpoint): boolean {
  return trusted.some((p) => prefixContains(p, client.addr));
}

/**
 * The PROXY header of a connection from a trusted load balancer, read as
 * its bytes come. The pipeline (pipeline.ts) owns the connection, its
 * deadline and its reset; this only decides.
 */
export class HeaderReader {
  private received: Uint8Array = new Uint8Array(0);

  /** Bytes seen so far: a connection closed before its first byte is a health check, not an error. */
  get started(): boolean {
    return this.received.length > 0;
  }

  /**
   * Add a chunk. "more": wait; an error reason (§2.1: reset "as soon as
   * possible"); or the header's ends (the socket's for §2.1 UNKNOWN and §2.2
   * LOCAL: "use the real connection endpoints") and the bytes after it.
   */
  feed(chunk: Uint8Array, own: Ends): "more" | { error: string } | { ends: Ends; rest: Uint8Array } {
    // The parser decides within 16 + V2_MAX_LENGTH (or 107) bytes, so this stays small.
    const all = new Uint8Array(this.received.length + chunk.length);
    all.set(this.received);
    all.set(chunk, this.received.length);
    this.received = all;
    const r = parseProxyHeader(all, "stream");
    if (r.kind === "need-more") return "more";
    if (r.kind === "error") return { error: r.reason };
    this.received = new Uint8Array(0);
    return { ends: r.addresses ? { client: r.addresses.src, edge: r.addresses.dst } : own, rest: all.subarray(r.consumed) };
  }
}
