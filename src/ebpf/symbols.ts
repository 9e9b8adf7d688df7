// The native symbol table: libbpf.so.1 and the few libc calls edgeproxy needs.
// Logic-free on purpose: every wrapper with behaviour lives in libbpf.ts / libc.ts.
import { FFIType } from "bun:ffi";

const { i32, u32, u64, ptr, cstring, function: fn } = FFIType;
// size_t: edgeproxy runs on 64-bit Linux only (x86_64, aarch64).
const usize = FFIType.u64;

/** libbpf 1.x symbols (Debian 12: libbpf1 1.1). */
export const libbpfSymbols = {
  libbpf_set_print: { args: [fn], returns: ptr },
  libbpf_probe_bpf_prog_type: { args: [i32, ptr], returns: i32 },
  bpf_object__open_mem: { args: [ptr, usize, ptr], returns: ptr },
  bpf_object__load: { args: [ptr], returns: i32 },
  bpf_object__close: { args: [ptr], returns: FFIType.void },
  bpf_object__find_program_by_name: { args: [ptr, cstring], returns: ptr },
  bpf_object__find_map_by_name: { args: [ptr, cstring], returns: ptr },
  bpf_program__fd: { args: [ptr], returns: i32 },
  bpf_program__set_log_buf: { args: [ptr, ptr, usize], returns: i32 },
  bpf_program__set_log_level: { args: [ptr, u32], returns: i32 },
  bpf_program__attach_netns: { args: [ptr, i32], returns: ptr },
  bpf_map__fd: { args: [ptr], returns: i32 },
  bpf_map__set_max_entries: { args: [ptr, u32], returns: i32 },
  bpf_map__reuse_fd: { args: [ptr, i32], returns: i32 },
  bpf_object__next_map: { args: [ptr, ptr], returns: ptr },
  bpf_map__name: { args: [ptr], returns: cstring },
  bpf_map__is_internal: { args: [ptr], returns: FFIType.bool },
  bpf_map__type: { args: [ptr], returns: u32 },
  bpf_map__key_size: { args: [ptr], returns: u32 },
  bpf_map__value_size: { args: [ptr], returns: u32 },
  bpf_map__map_flags: { args: [ptr], returns: u32 },
  bpf_map__max_entries: { args: [ptr], returns: u32 },
  bpf_link__fd: { args: [ptr], returns: i32 },
  bpf_link__destroy: { args: [ptr], returns: i32 },
  bpf_link_update: { args: [i32, i32, ptr], returns: i32 },
  bpf_map_update_elem: { args: [i32, ptr, ptr, u64], returns: i32 },
  bpf_map_update_batch: { args: [i32, ptr, ptr, ptr, ptr], returns: i32 },
  bpf_prog_test_run_opts: { args: [i32, ptr], returns: i32 },
  bpf_map_lookup_elem: { args: [i32, ptr, ptr], returns: i32 },
  bpf_map_delete_elem: { args: [i32, ptr], returns: i32 },
  bpf_map_get_next_key: { args: [i32, ptr, ptr], returns: i32 },
  bpf_obj_get_info_by_fd: { args: [i32, ptr, ptr], returns: i32 },
  libbpf_num_possible_cpus: { args: [], returns: i32 },
  bpf_obj_pin: { args: [i32, cstring], returns: i32 },
  bpf_map_create: { args: [u32, cstring, u32, u32, u32, ptr], returns: i32 },
  bpf_obj_get: { args: [cstring], returns: i32 },
} as const;

/** glibc symbols. */
export const libcSymbols = {
  __errno_location: { args: [], returns: ptr },
  strerror: { args: [i32], returns: cstring },
  vsnprintf: { args: [ptr, usize, ptr, ptr], returns: i32 },
  unshare: { args: [i32], returns: i32 },
  setns: { args: [i32, i32], returns: i32 },
  gettid: { args: [], returns: i32 },
  close: { args: [i32], returns: i32 },
  flock: { args: [i32, i32], returns: i32 },
  pidfd_open: { args: [i32, u32], returns: i32 },
  pidfd_getfd: { args: [i32, i32, u32], returns: i32 },
  getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
  mount: { args: [cstring, cstring, cstring, u64, cstring], returns: i32 },
  // Sockets and epoll for the UDP data plane (Bun.udpSocket reports no original destination).
  socket: { args: [i32, i32, i32], returns: i32 },
  bind: { args: [i32, ptr, u32], returns: i32 },
  connect: { args: [i32, ptr, u32], returns: i32 },
  setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
  getsockname: { args: [i32, ptr, ptr], returns: i32 },
  send: { args: [i32, ptr, usize, i32], returns: FFIType.i64_fast },
  recv: { args: [i32, ptr, usize, i32], returns: FFIType.i64_fast },
  sendto: { args: [i32, ptr, usize, i32, ptr, u32], returns: FFIType.i64_fast },
  recvmmsg: { args: [i32, ptr, u32, i32, ptr], returns: i32 },
  epoll_create1: { args: [i32], returns: i32 },
  epoll_ctl: { args: [i32, i32, i32, ptr], returns: i32 },
  epoll_wait: { args: [i32, ptr, i32, i32], returns: i32 },
  eventfd: { args: [u32, i32], returns: i32 },
  read: { args: [i32, ptr, usize], returns: FFIType.i64_fast },
  write: { args: [i32, ptr, usize], returns: FFIType.i64_fast },
} as const;
