// A standalone TCP relay that splices each client/origin pair in the kernel
// (bench/sockmap-relay.bpf.c: SOCKMAP + an sk_skb verdict that redirects
// every skb a member receives to its peer's egress), for the question issue
// 19 leaves: can moving the bytes off the proxy's thread altogether beat
// nginx, where a relay through bun:ffi (bench/epoll-relay.ts,
// bench/uring-relay.ts) stays at 0.96–1.04× of its CPU? User space accepts,
// connects, puts the pair in the maps and waits for FINs and errors; it never
// reads a byte. bench/sockmap.sh measures it (whole-machine CPU: the kernel
// then does the relay in softirq and kworker context, wherever it runs).
//
// A probe, not a relay to ship; what it skips, each of which a real one needs:
//   - ordering at splice time: the origin goes in the map before the client;
//     a byte the origin sends between the two inserts is redirected to a
//     socket not yet there and dropped (an origin that speaks first).
//   - bounds: there are none. A redirected skb is uncharged from its source
//     and queued on the peer's psock without a limit, so a fast sender to a
//     slow reader grows kernel memory (bench/profiles/tcp.md, "Kernel
//     splicing", which also says why SK_PASS cannot be the way out).
//   - deadlines, stats, the access log, resets on our side.
// A FIN is passed on only once every byte before it is handed over: the
// source's tcpi_bytes_received against the peer's tcpi_bytes_acked plus its
// send queue (SIOCOUTQ), polled every millisecond; a shutdown before the
// psock worker sent them would lose them (net/core/skmsg.c, sk_psock_backlog).
//
// bun bench/sockmap-relay.ts --listen 192.0.2.10:8080 --origin 127.0.0.1:9000
import { dlopen, FFIType } from "bun:ffi";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BpfObject } from "../src/ebpf/object";
import { EPOLLERR, EPOLLET, EPOLLHUP, EPOLLOUT, EPOLLRDHUP } from "../src/system/epoll";
import { libc } from "../src/system/libc";
import { relayArgs } from "./relay-args";
import { PairLoop } from "./relay-loop";
import { socketCookie } from "../src/system/sockets";
import { resetOnClose, shutdownWrite, socketError } from "../src/system/tcp";

const BPF_SK_SKB_VERDICT = 38; // enum bpf_attach_type
const SOL_SOCKET = 1, SO_RCVLOWAT = 18, IPPROTO_TCP = 6, TCP_INFO = 11, SIOCOUTQ = 0x5411;
const bpf = dlopen("libbpf.so.1", { bpf_prog_attach: { args: [FFIType.i32, FFIType.i32, FFIType.u32, FFIType.u32], returns: FFIType.i32 } }).symbols;
const sys = dlopen("libc.so.6", { ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 } }).symbols;

const { listen: at, listenText, origin } = relayArgs("sockmap-relay");

// The program, built here (the bench machine has clang; build.ts builds only bpf/*.bpf.c into the binary).
const object = join(tmpdir(), `sockmap-relay-${process.pid}.bpf.o`);
const arch = process.arch === "arm64" ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
const cc = Bun.spawnSync(["clang", "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", `-I/usr/include/${arch}`, "-c", join(import.meta.dir, "sockmap-relay.bpf.c"), "-o", object]);
if (cc.exitCode !== 0) {
  console.error(`sockmap-relay: clang failed: ${cc.stderr.toString().trim()}`);
  process.exit(1);
}
const image = new Uint8Array(readFileSync(object));
rmSync(object);
const obj = BpfObject.open(image);
obj.load();
const socks = obj.map("splice_socks");
const peers = obj.map("splice_peer");
if (bpf.bpf_prog_attach(obj.program("splice_verdict").fd, socks.fd, BPF_SK_SKB_VERDICT, 0) !== 0) {
  console.error("sockmap-relay: attaching the verdict program to the SOCKMAP failed");
  process.exit(1);
}

const loop = new PairLoop<Pair>("sockmap-relay", at, origin);
// Only the FIN and errors: the verdict's data-ready wake-ups (EPOLLIN) are not asked for, so they wake nobody.
const CONN = EPOLLRDHUP | EPOLLET;

const u32 = new Uint32Array(new ArrayBuffer(4));
const u64 = new BigUint64Array(new ArrayBuffer(8));
const cookie = new BigUint64Array(new ArrayBuffer(8));
const u32b = new Uint8Array(u32.buffer), u64b = new Uint8Array(u64.buffer), cookieb = new Uint8Array(cookie.buffer);
const one = new Int32Array(new ArrayBuffer(4));
one[0] = 1;
const info = new BigUint64Array(new ArrayBuffer(256));
const infoLen = new Uint32Array(new ArrayBuffer(4));
const outq = new Int32Array(new ArrayBuffer(4));

class Pair {
  connecting = true;
  done = false;
  /** The client's (c) or the origin's (o) FIN came; ours went to the client or the origin. */
  cEof = false;
  oEof = false;
  cShut = false;
  oShut = false;
  cCookie = 0n;
  oCookie = 0n;
  constructor(
    readonly c: number,
    readonly o: number,
  ) {}
}
const waiting = new Set<Pair>();

function put(fd: number): void {
  u32[0] = fd;
  u64[0] = BigInt(fd);
  socks.update(u32b, u64b);
}
function link(from: bigint, to: number): void {
  cookie[0] = from;
  u32[0] = to;
  peers.update(cookieb, u32b);
}
function unlink(from: bigint): void {
  cookie[0] = from;
  peers.delete(cookieb);
}

function finish(x: Pair, rst: boolean): void {
  if (x.done) return;
  x.done = true;
  waiting.delete(x);
  if (rst) {
    resetOnClose(x.c);
    resetOnClose(x.o);
  }
  // The SOCKMAP entries go with the sockets' close (sock_map_close); the cookies' do not.
  if (x.cCookie) unlink(x.cCookie);
  if (x.oCookie) unlink(x.oCookie);
  loop.close(x.c);
  loop.close(x.o);
}

/** Has every byte `from` received been handed to `to` (written to its send queue or acknowledged)? */
function handedOver(from: number, to: number): boolean {
  infoLen[0] = 256;
  if (libc.getsockopt(from, IPPROTO_TCP, TCP_INFO, info, infoLen) !== 0) return true;
  const received = info[16]!; // tcpi_bytes_received, offset 128
  infoLen[0] = 256;
  if (libc.getsockopt(to, IPPROTO_TCP, TCP_INFO, info, infoLen) !== 0) return true;
  const acked = info[15]!; // tcpi_bytes_acked, offset 120
  if (sys.ioctl(to, SIOCOUTQ, outq) !== 0) return true;
  return acked + BigInt(outq[0]!) >= received;
}

function passFins(x: Pair): void {
  if (x.cEof && !x.oShut) {
    if (!handedOver(x.c, x.o)) return void waiting.add(x);
    x.oShut = true;
    shutdownWrite(x.o);
  }
  if (x.oEof && !x.cShut) {
    if (!handedOver(x.o, x.c)) return void waiting.add(x);
    x.cShut = true;
    shutdownWrite(x.c);
  }
  waiting.delete(x);
  if (x.cShut && x.oShut) finish(x, false);
}

function splice(x: Pair): void {
  x.cCookie = socketCookie(x.c);
  x.oCookie = socketCookie(x.o);
  link(x.cCookie, x.o);
  link(x.oCookie, x.c);
  put(x.o);
  put(x.c);
  // Bytes that came before the insert sit in the receive queue; setting SO_RCVLOWAT runs the socket's
  // data-ready (tcp_set_rcvlowat → tcp_data_ready), which is now the verdict's: they go to the peer first, in order.
  libc.setsockopt(x.c, SOL_SOCKET, SO_RCVLOWAT, one, 4);
  libc.setsockopt(x.o, SOL_SOCKET, SO_RCVLOWAT, one, 4);
}

function event(x: Pair, fd: number, ev: number): void {
  if (x.done) return;
  if (fd === x.o && x.connecting) {
    if (ev & (EPOLLERR | EPOLLHUP) || socketError(x.o) !== 0) return finish(x, true);
    if (!(ev & EPOLLOUT)) return;
    x.connecting = false;
    try {
      splice(x);
    } catch {
      // A socket past ESTABLISHED (the client left meanwhile) cannot join a SOCKMAP (EOPNOTSUPP).
      return finish(x, true);
    }
  }
  if (ev & EPOLLERR) return finish(x, true);
  if (ev & (EPOLLRDHUP | EPOLLHUP)) {
    if (fd === x.c) x.cEof = true;
    else x.oEof = true;
    passFins(x);
  }
}


await loop.run(
  listenText,
  () => loop.accept((c, o) => new Pair(c, o), CONN, CONN | EPOLLOUT, (x) => finish(x, true)),
  event,
  // A FIN waiting for its bytes to be handed over is looked at again every millisecond.
  () => {
    if (waiting.size) for (const x of [...waiting]) passFins(x);
  },
  () => (waiting.size ? 1 : 100),
);
