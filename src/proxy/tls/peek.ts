import type { Socket } from "bun";
import { ptr } from "bun:ffi";
import { errno, libc } from "../../system/libc";
import { peerClosed } from "../../system/sockets";
import { HeaderReader, type Ends } from "../inbound";
import { V2_MAX_LENGTH } from "../proxyheader/parse";

// recv(2) flags.
const MSG_PEEK = 0x2;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const EINTR = 4;

/** The longest header the parser accepts (v2: 16 bytes and V2_MAX_LENGTH; v1: 107) and one byte to see it is longer. */
const buf = new Uint8Array(16 + V2_MAX_LENGTH + 1);

/**
 * Read a PROXY header (v1 or v2) at the start of a paused socket's stream
 * without taking a byte after it: peek, parse, then take exactly the
 * header's bytes. "more": nothing or part of a header is there yet (peek
 * again later); "eof": the peer closed before a byte; "truncated": part of a
 * header, then the peer's FIN or reset; else the parse result,
 * as HeaderReader.feed gives it (an error: reset; `rest` is left in the
 * socket, empty here).
 */
export function peekHeader(s: Socket<unknown>, own: Ends): "more" | "eof" | { error: string } | { ends: Ends; rest: Uint8Array } {
  const fd = (s as unknown as { fd: number }).fd;
  const n = Number(libc.recv(fd, ptr(buf), buf.length, MSG_PEEK | MSG_DONTWAIT));
  if (n === 0) return "eof";
  if (n < 0) {
    const e = errno();
    return e === EAGAIN || e === EINTR ? "more" : { error: "truncated" };
  }
  const r = new HeaderReader().feed(buf.subarray(0, n), own);
  if (r === "more") {
    if (n === buf.length) return { error: "too_long" };
    // Part of a header and the peer's FIN: no more will come (a peek sees the same bytes forever).
    return peerClosed(fd) ? { error: "truncated" } : "more";
  }
  if ("error" in r) return r;
  const header = n - r.rest.length;
  // The kernel holds at least these bytes (just peeked): take exactly them.
  const got = Number(libc.recv(fd, ptr(buf), header, MSG_DONTWAIT));
  if (got !== header) return { error: "truncated" };
  return { ends: r.ends, rest: new Uint8Array(0) };
}
