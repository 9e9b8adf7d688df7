// The UDP data plane's datagram buffers: recvmmsg(2) on the steered socket,
// where bursts of new flows arrive (one syscall takes every datagram queued,
// up to the batch size, each with its source and original destination), and
// on flow sockets (without them), and plain send on flow sockets. Every datagram keeps HEADROOM bytes in
// front of it for a PROXY/SPP header.
import { ptr, type Pointer } from "bun:ffi";
import { libc } from "../../system/libc";
import { decodeSockaddr, SOCKADDR_IN6_SIZE, type Endpoint } from "../../system/sockaddr";
import { IP_RECVORIGDSTADDR, IPV6_RECVORIGDSTADDR, SOL_IP, SOL_IPV6 } from "../../system/udp";

// LP64 layouts from <sys/socket.h> / <bits/uio.h>:
// struct msghdr { void *name @0; socklen_t namelen @8; struct iovec *iov @16;
//   size_t iovlen @24; void *control @32; size_t controllen @40; int flags @48 } = 56
// struct mmsghdr { struct msghdr hdr; unsigned int len @56 } = 64
// struct iovec { void *base @0; size_t len @8 } = 16
const MMSG = 64;
const IOV = 16;
const NAME = 32; // sockaddr_in6 (28) rounded up
const CONTROL = 64; // CMSG_SPACE(sizeof(struct sockaddr_in6)) = 48, with room to spare
const MSG_DONTWAIT = 0x40;
const MSG_TRUNC = 0x20;

/** Room kept before every datagram for a PROXY v2 (≤ 52 bytes) or SPP (38 bytes) header. */
export const HEADROOM = 64;
/** Largest datagram read: above the 65,507 / 65,527-byte UDP payload limits, so MSG_TRUNC means a jumbogram. */
export const MAX_DATAGRAM = 65_536;
const SLOT = HEADROOM + MAX_DATAGRAM;

// Memory whose address the kernel keeps (in msghdrs) must not move: JSC
// keeps typed arrays up to 1000 bytes inline in the GC heap, where they can
// be moved, so every buffer here gets an ArrayBuffer of its own.
const pinned = (n: number) => new Uint8Array(new ArrayBuffer(n));

const splitPtr = (v: DataView, at: number, p: number) => {
  v.setUint32(at, p >>> 0, true);
  v.setUint32(at + 4, Math.floor(p / 4294967296), true);
};

/** Buffers for up to `size` datagrams. One per thread; reused for every socket. */
export class DatagramBatch {
  /** Datagram i's payload starts at dataAt(i) in `data`; `stageBytes` after the datagrams are the send ring's (stageAt). */
  readonly data: Uint8Array;
  /** Where the staging area starts in `data`. */
  readonly stageAt: number;
  private readonly names: Uint8Array;
  private readonly controls: Uint8Array;
  private readonly recvHdr: Uint8Array;
  private readonly recvIov: Uint8Array;
  private readonly rh: DataView;
  /** mmsghdrs without name or control, for connected sockets (recvConnected). */
  private readonly connHdr: Uint8Array;
  private readonly connPtr: Pointer;
  /** The headers the last receive filled: rh or the connected ones. */
  private last: DataView;
  private readonly connView: DataView;
  /** The address of `data`. */
  readonly dataPtr: number;
  private readonly recvPtr: Pointer;
  private readonly cv: DataView;
  private used = 0;

  constructor(
    readonly size = 16,
    readonly stageBytes = 0,
  ) {
    this.stageAt = size * SLOT;
    this.data = pinned(size * SLOT + stageBytes);
    this.names = pinned(size * NAME);
    this.controls = pinned(size * CONTROL);
    this.recvHdr = pinned(size * MMSG);
    this.recvIov = pinned(size * IOV);
    this.dataPtr = ptr(this.data);
    this.recvPtr = ptr(this.recvHdr);
    this.rh = new DataView(this.recvHdr.buffer);
    this.last = this.rh;
    this.connHdr = pinned(size * MMSG);
    this.connPtr = ptr(this.connHdr);
    const ch = (this.connView = new DataView(this.connHdr.buffer));
    this.cv = new DataView(this.controls.buffer);
    const ri = new DataView(this.recvIov.buffer);
    const namesPtr = ptr(this.names);
    const controlsPtr = ptr(this.controls);
    const recvIovPtr = ptr(this.recvIov);
    for (let i = 0; i < size; i++) {
      splitPtr(ri, i * IOV, this.dataPtr + i * SLOT + HEADROOM);
      ri.setUint32(i * IOV + 8, MAX_DATAGRAM, true);
      const h = i * MMSG;
      splitPtr(this.rh, h, namesPtr + i * NAME);
      splitPtr(this.rh, h + 16, recvIovPtr + i * IOV);
      this.rh.setUint32(h + 24, 1, true);
      splitPtr(this.rh, h + 32, controlsPtr + i * CONTROL);
      // name and control stay NULL (the kernel then writes neither, nor their lengths back).
      splitPtr(ch, h + 16, recvIovPtr + i * IOV);
      ch.setUint32(h + 24, 1, true);
    }
    this.used = size;
  }

  /** Read what fd has queued, up to the batch size. Returns the count, or -1 with errno set. */
  recv(fd: number): number {
    // The kernel rewrites namelen and controllen; restore the ones last used.
    for (let i = 0; i < this.used; i++) {
      const h = i * MMSG;
      this.rh.setUint32(h + 8, SOCKADDR_IN6_SIZE, true);
      this.rh.setUint32(h + 40, CONTROL, true);
    }
    const n = libc.recvmmsg(fd, this.recvPtr, this.size, MSG_DONTWAIT | MSG_TRUNC, null);
    this.used = n > 0 ? n : 0;
    this.last = this.rh;
    return n;
  }

  /**
   * Read what a connected socket has queued, up to the batch size, without
   * source or control data. Fewer than the batch size means the queue was
   * empty when the kernel tried again (recvmmsg stops at EAGAIN), which
   * is what an edge-triggered reader needs to know. Returns the count, or
   * -1 with errno set (EAGAIN: nothing queued; ECONNREFUSED: an ICMP
   * error, udp(7)). An error after the first datagram is kept by the
   * kernel for the next call (recvmmsg(2)).
   */
  recvConnected(fd: number): number {
    const n = libc.recvmmsg(fd, this.connPtr, this.size, MSG_DONTWAIT | MSG_TRUNC, null);
    this.last = this.connView;
    return n;
  }

  /** Send `length` bytes from offset `at` of `data` on a connected socket. Returns -1 with errno set on failure. */
  sendAt(fd: number, at: number, length: number): number {
    return libc.send(fd, (this.dataPtr + at) as Pointer, length, MSG_DONTWAIT) as number;
  }

  /** Offset of datagram i's payload in `data`. */
  dataAt(i: number): number {
    return i * SLOT + HEADROOM;
  }

  /** Datagram i's length: with MSG_TRUNC its full length, even if longer than the buffer. */
  length(i: number): number {
    return this.last.getUint32(i * MMSG + 56, true);
  }

  truncated(i: number): boolean {
    return (this.last.getInt32(i * MMSG + 48, true) & MSG_TRUNC) !== 0;
  }

  /** Who sent datagram i. */
  source(i: number): Endpoint | undefined {
    return decodeSockaddr(this.names, i * NAME);
  }

  /** Datagram i's destination before steering (IP_ORIGDSTADDR / IPV6_ORIGDSTADDR control message, ip(7), ipv6(7)). */
  originalDestination(i: number): Endpoint | undefined {
    const base = i * CONTROL;
    const end = base + this.rh.getUint32(i * MMSG + 40, true);
    // struct cmsghdr { size_t len @0; int level @8; int type @12; data @16 }, each CMSG_ALIGN'd to 8.
    for (let at = base; at + 16 <= end; ) {
      const len = this.cv.getUint32(at, true);
      const level = this.cv.getInt32(at + 8, true);
      const type = this.cv.getInt32(at + 12, true);
      if ((level === SOL_IP && type === IP_RECVORIGDSTADDR) || (level === SOL_IPV6 && type === IPV6_RECVORIGDSTADDR)) {
        return decodeSockaddr(this.controls, at + 16);
      }
      if (len < 16) break;
      at += (len + 7) & ~7;
    }
    return undefined;
  }
}
