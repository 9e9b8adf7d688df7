// UDP sockets through bun:ffi, for what Bun.udpSocket cannot do: read the
// original destination of a steered datagram, and bind many sockets to one
// ip:port (SO_REUSEADDR) each connected to a different client.
import type { Family } from "../config/address";
import { EdgeError, type Fault } from "../errors";
import { errno, errnoText, libc } from "./libc";
import { Fd } from "./fd";
import { AF_INET, AF_INET6, SOCKADDR_IN6_SIZE, decodeSockaddr, encodeSockaddr, type Endpoint } from "./sockaddr";

const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_RCVBUFFORCE = 33;
export const SO_REUSEPORT = 15;
export const SOL_IP = 0;
export const SOL_IPV6 = 41;
export const IP_FREEBIND = 15;
/** Also the cmsg type of the reply (IP_ORIGDSTADDR), ip(7). */
export const IP_RECVORIGDSTADDR = 20;
export const IPV6_V6ONLY = 26;
/** Also the cmsg type of the reply (IPV6_ORIGDSTADDR), linux/in6.h. */
export const IPV6_RECVORIGDSTADDR = 74;
export const IPV6_FREEBIND = 78;

/** A failed socket call, with errno's name and whose fault it was. */
export class SocketError extends EdgeError {
  constructor(
    where: string,
    readonly code: number,
    fault: Fault,
  ) {
    super(where, errnoText(code), fault);
  }
}

const one = new Int32Array([1]);

/** A non-blocking, close-on-exec UDP socket; IPv6 ones are IPv6-only. The caller owns it. */
export function openUdpSocket(family: Family, where: string): Fd {
  const rc = libc.socket(family === 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (rc < 0) throw new SocketError(`${where}: socket`, errno(), "kernel");
  const fd = new Fd(rc, where);
  if (family === 6) {
    try {
      setIntOption(rc, SOL_IPV6, IPV6_V6ONLY, 1, where);
    } catch (e) {
      fd.close();
      throw e;
    }
  }
  return fd;
}

export function setIntOption(fd: number, level: number, name: number, value: number, where: string): void {
  const v = value === 1 ? one : new Int32Array([value]);
  if (libc.setsockopt(fd, level, name, v, 4) !== 0) throw new SocketError(`${where}: setsockopt(${level}, ${name})`, errno(), "kernel");
}

export function bindTo(fd: number, e: Endpoint, where: string): void {
  const sa = encodeSockaddr(e);
  if (libc.bind(fd, sa, sa.length) !== 0) throw new SocketError(`${where}: bind`, errno(), "kernel");
}

export function connectTo(fd: number, e: Endpoint, where: string, fault: Fault = "kernel"): void {
  const sa = encodeSockaddr(e);
  if (libc.connect(fd, sa, sa.length) !== 0) throw new SocketError(`${where}: connect`, errno(), fault);
}

/** The address a socket is bound to (getsockname). */
export function localEndpoint(fd: number, where: string): Endpoint {
  const sa = new Uint8Array(SOCKADDR_IN6_SIZE);
  const len = new Uint32Array([sa.length]);
  if (libc.getsockname(fd, sa, len) !== 0) throw new SocketError(`${where}: getsockname`, errno(), "kernel");
  return decodeSockaddr(sa)!;
}
