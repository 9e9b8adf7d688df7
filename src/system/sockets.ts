import { EdgeError } from "../errors";
import { errno, errnoText, libc } from "./libc";
import { Fd } from "./fd";

import { AF_INET, AF_INET6 } from "./sockaddr";
import { IPV6_V6ONLY, SOL_IPV6, SOL_SOCKET } from "./udp";

const SO_ACCEPTCONN = 30;
const SO_PROTOCOL = 38;
const SO_DOMAIN = 39;
const SO_COOKIE = 57;

function intOption(fd: number, level: number, name: number, what: string): number {
  const value = new Int32Array(1);
  const len = new Uint32Array([4]);
  if (libc.getsockopt(fd, level, name, value, len) !== 0) throw new EdgeError(what, errnoText(errno()), "config");
  return value[0]!;
}

/**
 * The socket's cookie (SO_COOKIE, Linux 4.12): a u64 the kernel gives each
 * socket once, unique for the whole boot and across namespaces, and the value
 * a user-space lookup of a SOCKMAP entry returns (Documentation/bpf/map_sockmap.rst).
 * Unlike a pid or an fd number it does not repeat in another PID namespace or
 * after a close, so it is what says "this member entry holds my socket".
 */
export function socketCookie(fd: number, what = "socket"): bigint {
  const value = new BigUint64Array(1);
  const len = new Uint32Array([8]);
  if (libc.getsockopt(fd, SOL_SOCKET, SO_COOKIE, value, len) !== 0) throw new EdgeError(`${what} (fd ${fd}): read its cookie (SO_COOKIE)`, errnoText(errno()), "kernel");
  return value[0]!;
}

const IPPROTO_TCP = 6;
const TCP_INFO = 11;
/** include/net/tcp_states.h: the peer's FIN has come (and states past it). */
const TCP_CLOSE_WAIT = 8;
const TCP_LAST_ACK = 9;
const TCP_CLOSE = 7;

/**
 * Has the peer of a TCP socket finished sending (its FIN came, or the
 * connection is gone)? Read from TCP_INFO's tcpi_state: for a socket whose
 * unread bytes a peek keeps seeing, the only way to tell "more is coming"
 * from "that was all". An error reading it counts as closed.
 */
export function peerClosed(fd: number): boolean {
  const info = new Uint8Array(8);
  const len = new Uint32Array([info.length]);
  if (libc.getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, len) !== 0) return true;
  const state = info[0]!;
  return state === TCP_CLOSE_WAIT || state === TCP_LAST_ACK || state === TCP_CLOSE;
}

/** What kind of socket is open at fd. */
export interface SocketKind {
  readonly protocol: "tcp" | "udp";
  readonly family: 4 | 6;
  /** TCP: listen() was called. UDP: always true. */
  readonly listening: boolean;
  /** An IPv6 socket that also takes IPv4 (IPV6_V6ONLY off). */
  readonly dualStack: boolean;
}

export function socketKind(fd: number, what = "socket"): SocketKind {
  const domain = intOption(fd, SOL_SOCKET, SO_DOMAIN, what);
  if (domain !== AF_INET && domain !== AF_INET6) throw new EdgeError(what, "is not an IPv4 or IPv6 socket", "config");
  const proto = intOption(fd, SOL_SOCKET, SO_PROTOCOL, what);
  if (proto !== 6 && proto !== 17) throw new EdgeError(what, "is neither TCP nor UDP", "config");
  return {
    protocol: proto === 17 ? "udp" : "tcp",
    family: domain === AF_INET6 ? 6 : 4,
    listening: proto === 17 || intOption(fd, SOL_SOCKET, SO_ACCEPTCONN, what) === 1,
    dualStack: domain === AF_INET6 && intOption(fd, SOL_IPV6, IPV6_V6ONLY, what) === 0,
  };
}

/**
 * A duplicate, in this process, of file descriptor `fd` of process `pid`
 * (pidfd_open(2) + pidfd_getfd(2), Linux 5.6; needs PTRACE_MODE_ATTACH_REALCREDS
 * on the target: root, or CAP_SYS_PTRACE). The caller owns it.
 */
export function takeFd(pid: number, fd: number): Fd {
  const rc = libc.pidfd_open(pid, 0);
  if (rc < 0) {
    const e = errno();
    throw new EdgeError(`process ${pid}`, e === 3 ? "no such process" : errnoText(e), e === 3 ? "config" : "kernel");
  }
  const pidfd = new Fd(rc, `pidfd of process ${pid}`);
  try {
    const ours = libc.pidfd_getfd(pidfd.raw, fd, 0);
    if (ours < 0) {
      const e = errno();
      const why = e === 9 ? `has no file descriptor ${fd}` : e === 1 ? `cannot be read from: ${errnoText(e)} (needs root or CAP_SYS_PTRACE)` : errnoText(e);
      throw new EdgeError(`process ${pid}`, why, e === 9 ? "config" : "kernel");
    }
    return new Fd(ours, `fd ${fd} of process ${pid}`);
  } finally {
    pidfd.close();
  }
}
