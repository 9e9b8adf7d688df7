import type { Family } from "../config/address";
import { errno, errnoText, libc } from "./libc";
import { Fd } from "./fd";
import { EdgeError } from "../errors";
import { AF_INET, AF_INET6 } from "./sockaddr";

/** A socket of this network namespace that already listens (TCP) or is bound unconnected (UDP). */
export interface Listener {
  readonly protocol: "tcp" | "udp";
  readonly family: Family;
  readonly addr: Uint8Array;
  readonly port: number;
  readonly inode: number;
  /** Its socket cookie (inet_diag_sockid.idiag_cookie). */
  readonly cookie: bigint;
}

/*
 * Asked of the kernel over NETLINK_SOCK_DIAG (sock_diag(7), linux/inet_diag.h) rather than read from
 * /proc/net/tcp: with a state filter of LISTEN alone the kernel walks only
 * its listening hash, while /proc/net/tcp lists every connection and
 * TIME_WAIT socket of the namespace (seconds on a busy edge machine, under
 * the pin lock). UDP: unconnected sockets are in state TCP_CLOSE with no
 * remote address.
 */
const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const TCP_LISTEN = 10;
const TCP_CLOSE = 7;
const IPPROTO = { tcp: 6, udp: 17 } as const;

function dump(protocol: "tcp" | "udp", family: Family): Listener[] {
  const sock = Fd.from(libc.socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG), "list listening sockets: netlink socket");
  const fd = sock.raw;
  try {
    // struct nlmsghdr (16) + struct inet_diag_req_v2 (56)
    const req = new Uint8Array(72);
    const v = new DataView(req.buffer);
    v.setUint32(0, req.length, true);
    v.setUint16(4, SOCK_DIAG_BY_FAMILY, true);
    v.setUint16(6, NLM_F_REQUEST | NLM_F_DUMP, true);
    v.setUint32(8, 1, true);
    req[16] = family === 4 ? AF_INET : AF_INET6;
    req[17] = IPPROTO[protocol];
    v.setUint32(20, 1 << (protocol === "tcp" ? TCP_LISTEN : TCP_CLOSE), true);
    if (libc.send(fd, req, req.length, 0) !== req.length) throw new EdgeError("list listening sockets", `netlink send: ${errnoText(errno())}`, "kernel");
    const out: Listener[] = [];
    const buf = new Uint8Array(1 << 16);
    const bv = new DataView(buf.buffer);
    for (;;) {
      const n = Number(libc.recv(fd, buf, buf.length, 0));
      if (n < 0) throw new EdgeError("list listening sockets", `netlink recv: ${errnoText(errno())}`, "kernel");
      for (let off = 0; off + 16 <= n; ) {
        const len = bv.getUint32(off, true);
        const type = bv.getUint16(off + 4, true);
        if (type === NLMSG_DONE) return out;
        if (type === NLMSG_ERROR) throw new EdgeError("list listening sockets", `netlink: ${errnoText(-bv.getInt32(off + 16, true))}`, "kernel");
        // struct inet_diag_msg: family, state, timer, retrans; id {sport, dport (big-endian), src[16], dst[16], if, cookie}; expires, rqueue, wqueue, uid, inode
        const m = off + 16;
        const dst = buf.subarray(m + 24, m + 24 + (family === 4 ? 4 : 16));
        if (protocol === "tcp" || dst.every((b) => b === 0)) {
          out.push({ protocol, family, addr: buf.slice(m + 8, m + 8 + (family === 4 ? 4 : 16)), port: bv.getUint16(m + 4, false), inode: bv.getUint32(m + 68, true), cookie: cookieAt(bv, m + 44) });
        }
        if (len < 16) break;
        off += (len + 3) & ~3;
      }
      if (n === 0) return out;
    }
  } finally {
    sock.close();
  }
}

/** idiag_cookie: two u32, the low half first (sock_diag_save_cookie()). */
const cookieAt = (v: DataView, at: number): bigint => (BigInt(v.getUint32(at + 4, true)) << 32n) | BigInt(v.getUint32(at, true));

/** Listening sockets of the calling process's network namespace. */
export function listeners(protocol: "tcp" | "udp"): Listener[] {
  return [...dump(protocol, 4), ...dump(protocol, 6)];
}

export const isWildcard = (addr: Uint8Array) => addr.every((b) => b === 0);
