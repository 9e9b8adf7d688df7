// struct sockaddr_in / sockaddr_in6 (linux/in.h, linux/in6.h) as bytes, for
// the FFI socket calls of the UDP data plane.
import type { Family } from "../config/address";

export const AF_INET = 2;
export const AF_INET6 = 10;
/** sizeof(struct sockaddr_in) */
export const SOCKADDR_IN_SIZE = 16;
/** sizeof(struct sockaddr_in6); also the buffer size that holds either. */
export const SOCKADDR_IN6_SIZE = 28;

/** An endpoint: address bytes in network order (4 or 16) and a port. */
export interface Endpoint {
  readonly family: Family;
  readonly addr: Uint8Array;
  readonly port: number;
}

/** Encode an endpoint as struct sockaddr_in (family 4) or sockaddr_in6 (family 6). */
export function encodeSockaddr(e: Endpoint): Uint8Array {
  const out = new Uint8Array(e.family === 4 ? SOCKADDR_IN_SIZE : SOCKADDR_IN6_SIZE);
  const v = new DataView(out.buffer);
  v.setUint16(0, e.family === 4 ? AF_INET : AF_INET6, true); // sa_family_t is host order
  v.setUint16(2, e.port, false); // sin_port / sin6_port are network order
  out.set(e.addr, e.family === 4 ? 4 : 8);
  return out;
}

/** Decode a sockaddr_in / sockaddr_in6 at `offset`; undefined for any other family. */
export function decodeSockaddr(buf: Uint8Array, offset = 0): Endpoint | undefined {
  const v = new DataView(buf.buffer, buf.byteOffset + offset);
  const family = v.getUint16(0, true);
  const port = v.getUint16(2, false);
  if (family === AF_INET) return { family: 4, port, addr: buf.slice(offset + 4, offset + 8) };
  if (family === AF_INET6) return { family: 6, port, addr: buf.slice(offset + 8, offset + 24) };
  return undefined;
}
