// Headers that tell a UDP origin who the client is.
import type { Endpoint } from "../../system/sockaddr";


// PROXY protocol v2 (haproxy.org/download/2.9/doc/proxy-protocol.txt, §2.2):
// 12-byte signature, version 2 + PROXY command, family + SOCK_DGRAM, length,
// then source and destination address and port.
const V2_SIGNATURE = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
const V2_PROXY = 0x21;
const V2_INET_DGRAM = 0x12;
const V2_INET6_DGRAM = 0x22;

/** The PROXY v2 header for a datagram from `client` to `edge` (28 bytes for IPv4, 52 for IPv6). */
export function proxyV2Header(client: Endpoint, edge: Endpoint): Uint8Array {
  const addrLen = client.family === 4 ? 12 : 36;
  const out = new Uint8Array(16 + addrLen);
  const v = new DataView(out.buffer);
  out.set(V2_SIGNATURE, 0);
  out[12] = V2_PROXY;
  out[13] = client.family === 4 ? V2_INET_DGRAM : V2_INET6_DGRAM;
  v.setUint16(14, addrLen);
  const a = client.addr.length;
  out.set(client.addr, 16);
  out.set(edge.addr, 16 + a);
  v.setUint16(16 + 2 * a, client.port);
  v.setUint16(18 + 2 * a, edge.port);
  return out;
}

// Cloudflare's Simple Proxy Protocol (developers.cloudflare.com/spectrum/reference/simple-proxy-protocol-header):
// magic 0x56EC, client and proxy address as IPv6 (IPv4-mapped for IPv4, RFC 4291
// §2.5.5.2), client port, proxy port; network order; on every datagram both ways.
export const SPP_MAGIC = 0x56ec;
export const SPP_HEADER_SIZE = 38;

const mapped = (e: Endpoint): Uint8Array => {
  if (e.family === 6) return e.addr;
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(e.addr, 12);
  return out;
};

/** The SPP header for datagrams from `client` to `edge`. */
export function sppHeader(client: Endpoint, edge: Endpoint): Uint8Array {
  const out = new Uint8Array(SPP_HEADER_SIZE);
  const v = new DataView(out.buffer);
  v.setUint16(0, SPP_MAGIC);
  out.set(mapped(client), 2);
  out.set(mapped(edge), 18);
  v.setUint16(34, client.port);
  v.setUint16(36, edge.port);
  return out;
}

/** Whether a datagram from an SPP origin starts with the header (which the proxy strips). */
export function hasSppHeader(data: Uint8Array, offset: number, length: number): boolean {
  return length >= SPP_HEADER_SIZE && data[offset] === 0x56 && data[offset + 1] === 0xec;
}
