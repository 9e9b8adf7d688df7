import { dlopen, read } from "bun:ffi";
import { constants } from "node:os";
import { systemSymbols } from "./symbols";

/** glibc's system calls on descriptors, sockets, epoll, eventfd and pidfds, opened once. */
export const libc = dlopen("libc.so.6", systemSymbols).symbols;

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value as number, name]));

/** The calling thread's errno; read it right after the failing call. */
export function errno(): number {
  const at = libc.__errno_location();
  return at === null ? 0 : read.i32(at, 0);
}

/** "Operation not permitted (EPERM)" for 1. */
export function errnoText(code: number): string {
  const n = Math.abs(code);
  return `${libc.strerror(n)} (${errnoNames.get(n) ?? `errno ${n}`})`;
}
