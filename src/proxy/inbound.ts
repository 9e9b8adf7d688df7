import type { Socket } from "bun";
import { parseAddress, prefixContains, unmapAddress, type Prefix } from "../config/address";
import { decodeSockaddr, type Endpoint } from "../system/sockaddr";
import { endpointString, formatEndpoint } from "../log/access";
import { sockaddrString, SockaddrTexts } from "../log/line";
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

function endpoint(address: string | undefined, port: number): Endpoint | undefined {
  const addr = address ? parseAddress(unmapAddress(address)) : undefined;
  return addr ? unmapEndpoint({ family: addr.length === 4 ? 4 : 6, addr, port }) : undefined;
}

/*
 * The edge end of accepted sockets, parsed once per address and port: a
 * listener's connections share a few (many with sk_lookup ranges, hence the
 * bound), and one Endpoint object per edge lets its text be formatted once
 * (formatEndpoint's memo, src/log/access.ts) instead of per connection.
 */
const EDGE_CACHE_MAX = 4096;
// By address text as Bun gives it, then port: no key string made per connection.
const edges = new Map<string, Map<number, Endpoint>>();
let edgeCount = 0;

function edgeEndpoint(address: string | undefined, port: number): Endpoint | undefined {
  if (!address) return undefined;
  let byPort = edges.get(address);
  const known = byPort?.get(port);
  if (known) return known;
  const e = endpoint(address, port);
  if (!e) return undefined;
  if (edgeCount >= EDGE_CACHE_MAX) {
    edges.clear();
    edgeCount = 0;
    byPort = undefined;
  }
  if (!byPort) edges.set(address, (byPort = new Map()));
  byPort.set(port, e);
  edgeCount++;
  return e;
}

/** The socket's own ends; undefined when Bun no longer knows them (the peer is already gone). */
export function socketEnds(s: Socket<any>): Ends | undefined {
  const client = endpoint(s.remoteAddress, s.remotePort);
  const edge = edgeEndpoint(s.localAddress, s.localPort);
  return client && edge ? { client, edge } : undefined;
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
  /** The client's IPv4 address alone, when socketNames read it (the HTTP code's clientIp, without asking Bun again). */
  readonly clientIp?: string | undefined;
}

// The edge's text by its sockaddr bytes: one of the few a service answers on (bounded, line.ts).
const edgeTexts = new SockaddrTexts();

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
  const v4 = peer[0] === 2 && peer[1] === 0;
  const client = v4 ? sockaddrString(peer) : mappedOrV6(peer);
  if (client === undefined) return undefined;
  const clientIp = v4 ? `${peer[4]}.${peer[5]}.${peer[6]}.${peer[7]}` : undefined;
  const local = localAddress(fd);
  if (!local) return undefined;
  const edge = local[0] === 10 && isMappedSockaddr(local) ? mappedOrV6(local) : edgeTexts.text(local);
  if (edge === undefined) return undefined;
  return { client, edge, clientIp };
}

/** A sockaddr_in6's "ip:port", an IPv4-mapped one's (a dual-stack listener's IPv4 peer) as IPv4: the text Bun's getters gave. */
function mappedOrV6(buf: Uint8Array): string | undefined {
  const e = decodeSockaddr(buf);
  return e && endpointString(unmapEndpoint(e));
}

/** Is a sockaddr_in6's address IPv4-mapped (::ffff:a.b.c.d, RFC 4291 §2.5.5.2)? sin6_addr is at 8..24. */
function isMappedSockaddr(buf: Uint8Array): boolean {
  for (let i = 8; i < 18; i++) if (buf[i] !== 0) return false;
  return buf[18] === 0xff && buf[19] === 0xff;
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
