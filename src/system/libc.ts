import { dlopen, read } from "bun:ffi";
import { constants } from "node:os";
import { systemSymbols } from "./symbols";

/** glibc's system calls on descriptors, sockets, epoll, eventfd and pidfds, opened once. */
export const libc = dlopen("libc.so.6", systemSymbols).symbols;

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value as number, name]));

/**
 * errno's address: thread-local, so fixed for the thread that evaluates this
 * module, and every thread (each Bun Worker) evaluates its own copy of it.
 * Asked once instead of at every failed call (an EAGAIN per short accept batch,
 * an EINPROGRESS per origin connect on the engine).
 */
const errnoAt = libc.__errno_location();

/** The calling thread's errno; read it right after the failing call. */
export function errno(): number {
  return errnoAt === null ? 0 : read.i32(errnoAt, 0);
}

/** "EPERM" for 1 (os.constants.errno's names); undefined for a number it does not name. */
export const errnoName = (code: number): string | undefined => errnoNames.get(Math.abs(code));

/** "Operation not permitted (EPERM)" for 1. */
export function errnoText(code: number): string {
  const n = Math.abs(code);
  return `${libc.strerror(n)} (${errnoNames.get(n) ?? `errno ${n}`})`;
}
