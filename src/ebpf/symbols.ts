// The native symbol table: libbpf.so.1 and the few libc calls BPF's setup needs.
// Logic-free on purpose: every wrapper with behaviour lives in libbpf.ts, map.ts, object.ts / libc.ts.
// Descriptors, sockets, epoll and eventfd: src/system/symbols.ts.
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

/** glibc symbols for BPF's setup (descriptors, sockets and epoll are src/system/symbols.ts's). */
export const libcSymbols = {
  vsnprintf: { args: [ptr, usize, ptr, ptr], returns: i32 },
  unshare: { args: [i32], returns: i32 },
  setns: { args: [i32, i32], returns: i32 },
  gettid: { args: [], returns: i32 },
  flock: { args: [i32, i32], returns: i32 },
  mount: { args: [cstring, cstring, cstring, u64, cstring], returns: i32 },
} as const;
