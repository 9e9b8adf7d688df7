// Headers that tell an origin who the client is: PROXY protocol v1 and v2
// (haproxy.org/download/2.9/doc/proxy-protocol.txt) for TCP connections and
// UDP flows, and Cloudflare's Simple Proxy Protocol for UDP datagrams.
// Pure byte work: the UDP worker bundle imports this too.
import { formatAddress } from "../../config/address";
import type { Endpoint } from "../../system/sockaddr";

/** The 12-byte v2 signature (§2.2); also what the parser detects v2 by. */
export const V2_SIGNATURE: readonly number[] = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
/** §2.2: version 2 in the high nibble, command PROXY (1) in the low one. */
const V2_PROXY = 0x21;
// §2.2, 14th byte: address family (high nibble: 1 AF_INET, 2 AF_INET6) and transport (low: 1 STREAM, 2 DGRAM).
const V2_FAMILY = { 4: 0x10, 6: 0x20 } as const;
const V2_TRANSPORT = { stream: 0x01, dgram: 0x02 } as const;

/** Which socket type a v2 header describes: TCP connections are STREAM, UDP flows DGRAM. */
export type Transport = keyof typeof V2_TRANSPORT;

// RFC 4291 §2.5.5.2: ::ffff:a.b.c.d.
const mapped = (e: Endpoint): Endpoint => {
  if (e.family === 6) return e;
  const addr = new Uint8Array(16);
  addr[10] = 0xff;
  addr[11] = 0xff;
  addr.set(e.addr, 12);
  return { family: 6, addr, port: e.port };
};

const isMapped = (a: Uint8Array) => a.length === 16 && a.subarray(0, 10).every((b) => b === 0) && a[10] === 0xff && a[11] === 0xff;

/** An IPv4-mapped IPv6 endpoint as the plain IPv4 one; any other as it is. */
export function unmapEndpoint(e: Endpoint): Endpoint {
  return e.family === 6 && isMapped(e.addr) ? { family: 4, addr: e.addr.slice(12), port: e.port } : e;
}

// Both ends of a header share one family (§2.1 "matches the same family",
// §2.2 one family byte). Mapped addresses are unmapped first; if the ends
// still differ (an IPv4 client of an IPv6 edge cannot arise from the kernel,
// but can from a trusted balancer's header), both are written as IPv6.
function pair(client: Endpoint, edge: Endpoint): [Endpoint, Endpoint] {
  const c = unmapEndpoint(client);
  const e = unmapEndpoint(edge);
  return c.family === e.family ? [c, e] : [mapped(c), mapped(e)];
}

/** The PROXY v1 line (§2.1): "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", 104 bytes at most. */
export function proxyV1Header(client: Endpoint, edge: Endpoint): Uint8Array {
  const [c, e] = pair(client, edge);
  // formatAddress writes RFC 5952 text: lower-case hex, the longest zero run as "::", as §2.1 allows.
  const line = `PROXY TCP${c.family} ${formatAddress(c.addr)} ${formatAddress(e.addr)} ${c.port} ${e.port}\r\n`;
  return new TextEncoder().encode(line);
}

/**
 * The PROXY v2 header (§2.2) with the PROXY command: 28 bytes for IPv4, 52
 * for IPv6; `transport` is stream for TCP connections, dgram for UDP flows.
 */
export function proxyV2Header(client: Endpoint, edge: Endpoint, transport: Transport): Uint8Array {
  const [c, e] = pair(client, edge);
  const addrLen = c.family === 4 ? 12 : 36;
  const out = new Uint8Array(16 + addrLen);
  const v = new DataView(out.buffer);
  out.set(V2_SIGNATURE, 0);
  out[12] = V2_PROXY;
  out[13] = V2_FAMILY[c.family] | V2_TRANSPORT[transport];
  v.setUint16(14, addrLen);
  // §2.2: source address, destination address, source port, destination port.
  const a = c.addr.length;
  out.set(c.addr, 16);
  out.set(e.addr, 16 + a);
  v.setUint16(16 + 2 * a, c.port);
  v.setUint16(18 + 2 * a, e.port);
  return out;
}

// Cloudflare's Simple Proxy Protocol (developers.cloudflare.com/spectrum/reference/simple-proxy-protocol-header):
// magic 0x56EC, client and proxy address as IPv6 (IPv4-mapped for IPv4, RFC 4291
// §2.5.5.2), client port, proxy port; network order; on every datagram both ways.
export const SPP_MAGIC = 0x56ec;
export const SPP_HEADER_SIZE = 38;

/** The SPP header for datagrams from `client` to `edge`. */
export function sppHeader(client: Endpoint, edge: Endpoint): Uint8Array {
  const out = new Uint8Array(SPP_HEADER_SIZE);
  const v = new DataView(out.buffer);
  v.setUint16(0, SPP_MAGIC);
  out.set(mapped(client).addr, 2);
  out.set(mapped(edge).addr, 18);
  v.setUint16(34, client.port);
  v.setUint16(36, edge.port);
  return out;
}

/** Whether a datagram from an SPP origin starts with the header (which the proxy strips). */
export function hasSppHeader(data: Uint8Array, offset: number, length: number): boolean {
  return length >= SPP_HEADER_SIZE && data[offset] === 0x56 && data[offset + 1] === 0xec;
}
