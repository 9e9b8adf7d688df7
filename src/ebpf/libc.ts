import { dlopen } from "bun:ffi";
import { libcSymbols } from "./symbols";

/** glibc's calls for BPF's setup (namespaces, bpffs, its lock, libbpf's log), opened once. */
export const libc = dlopen("libc.so.6", libcSymbols).symbols;

// errno belongs to every libc call: src/system/libc.ts has it.
export { errno, errnoText } from "../system/libc";
