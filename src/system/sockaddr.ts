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

/**
 * Values made from a struct sockaddr_in / sockaddr_in6 (by `make`),
 * remembered per address and port: the edge of an accepted connection (its
 * original destination, getsockname) is one of the few a service answers on,
 * but comes as new bytes each time. Keyed without decoding: IPv4 as a number,
 * IPv6 as nine UTF-16 units. Bounded: a family's map is emptied when full.
 */
export class SockaddrMemo<T> {
  private readonly v4 = new Map<number, T>();
  private readonly v6 = new Map<string, T>();
  constructor(
    private readonly make: (buf: Uint8Array) => T | undefined,
    private readonly max = 4096,
  ) {}

  get(buf: Uint8Array): T | undefined {
    if (buf[0] === AF_INET && buf[1] === 0) {
      // sa_family in host order (little-endian here); sin_port at 2 and sin_addr at 4, network order.
      return this.memo(this.v4, (((buf[4]! << 24) | (buf[5]! << 16) | (buf[6]! << 8) | buf[7]!) >>> 0) * 65536 + ((buf[2]! << 8) | buf[3]!), buf);
    }
    if (buf[0] === AF_INET6 && buf[1] === 0) {
      // sin6_port at 2, sin6_addr at 8..24.
      const u = (i: number) => (buf[i]! << 8) | buf[i + 1]!;
      return this.memo(this.v6, String.fromCharCode(u(2), u(8), u(10), u(12), u(14), u(16), u(18), u(20), u(22)), buf);
    }
    return undefined;
  }

  private memo<K>(map: Map<K, T>, key: K, buf: Uint8Array): T | undefined {
    let v = map.get(key);
    if (v === undefined) {
      v = this.make(buf);
      if (v === undefined) return undefined;
      if (map.size >= this.max) map.clear();
      map.set(key, v);
    }
    return v;
  }
}
