// The native symbol table of the system calls edgeproxy makes itself:
// descriptors, sockets, epoll, eventfd, inotify, pidfd, capabilities. Logic-free on
// purpose: the wrappers with behaviour live in libc.ts (errno), fd.ts
// (ownership), capabilities.ts and their users; BPF's own libc calls stay in
// src/ebpf/symbols.ts.
import { FFIType } from "bun:ffi";

const { i32, u32, u64, ptr, cstring } = FFIType;
// size_t: edgeproxy runs on 64-bit Linux only (x86_64, aarch64).
const usize = FFIType.u64;

/** glibc symbols. */
export const systemSymbols = {
  __errno_location: { args: [], returns: ptr },
  strerror: { args: [i32], returns: cstring },
  close: { args: [i32], returns: i32 },
  // fcntl(2) is variadic; its one int argument is passed as a fixed one (the same on x86_64 and aarch64 Linux).
  fcntl: { args: [i32, i32, i32], returns: i32 },
  pidfd_open: { args: [i32, u32], returns: i32 },
  pidfd_getfd: { args: [i32, i32, u32], returns: i32 },
  // Sockets for the UDP data plane (Bun.udpSocket reports no original destination) and sock_diag.
  socket: { args: [i32, i32, i32], returns: i32 },
  bind: { args: [i32, ptr, u32], returns: i32 },
  connect: { args: [i32, ptr, u32], returns: i32 },
  // The TCP engine (src/engine/): its listeners, accepts and half-closes.
  listen: { args: [i32, i32], returns: i32 },
  accept4: { args: [i32, ptr, ptr, i32], returns: i32 },
  shutdown: { args: [i32, i32], returns: i32 },
  getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
  setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
  getsockname: { args: [i32, ptr, ptr], returns: i32 },
  getpeername: { args: [i32, ptr, ptr], returns: i32 },
  send: { args: [i32, ptr, usize, i32], returns: FFIType.i64_fast },
  recv: { args: [i32, ptr, usize, i32], returns: FFIType.i64_fast },
  sendto: { args: [i32, ptr, usize, i32, ptr, u32], returns: FFIType.i64_fast },
  recvmmsg: { args: [i32, ptr, u32, i32, ptr], returns: i32 },
  epoll_create1: { args: [i32], returns: i32 },
  epoll_ctl: { args: [i32, i32, i32, ptr], returns: i32 },
  epoll_wait: { args: [i32, ptr, i32, i32], returns: i32 },
  eventfd: { args: [u32, i32], returns: i32 },
  // inotify (inotify.ts): the steering watchdog's pins.
  inotify_init1: { args: [i32], returns: i32 },
  inotify_add_watch: { args: [i32, ptr, u32], returns: i32 },
  statx: { args: [i32, ptr, i32, u32, ptr], returns: i32 },
  read: { args: [i32, ptr, usize], returns: FFIType.i64_fast },
  write: { args: [i32, ptr, usize], returns: FFIType.i64_fast },
  // io_uring (uring.ts): syscall(2) for io_uring_setup/enter/register (glibc has no wrappers), mmap(2) for its rings.
  // syscall is variadic; its integer arguments are passed as fixed ones (the same registers on x86_64 and aarch64 Linux).
  syscall: { args: [FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64, FFIType.i64], returns: FFIType.i64_fast },
  mmap: { args: [u64, usize, i32, i32, i32, FFIType.i64], returns: FFIType.i64_fast },
  munmap: { args: [u64, usize], returns: i32 },
  // Capability sets (capabilities.ts): capget(2), capset(2), prctl(2) for the ambient set.
  capget: { args: [ptr, ptr], returns: i32 },
  capset: { args: [ptr, ptr], returns: i32 },
  prctl: { args: [i32, u64, u64, u64, u64], returns: i32 },
} as const;
