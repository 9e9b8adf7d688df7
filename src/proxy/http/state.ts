/*
 * What an HTTP client connection's code shares across HTTP/1.1 (exchange.ts,
 * endings.ts, conn.ts) and HTTP/2 (h2exchange.ts, h2stream.ts): where a
 * connection is in its exchange, which deadline applies, and the byte helpers.
 */

/** Where a client connection is in its current exchange. */
export const enum Phase {
  /** Reading a request head. */
  Head,
  /** Forwarding the request body. */
  Body,
  /** The request is sent; the response is on its way (later requests wait in `inbuf`). */
  Wait,
  /** After a 101: bytes both ways. */
  Tunnel,
  /** Closing: input is discarded. */
  Done,
}

/** Which deadline the sweep checks for a connection. */
export const enum Deadline {
  None,
  Connect,
  FirstByte,
  Linger,
}

/** No bytes (shared, never written to). */
export const EMPTY = new Uint8Array(0);

/** `a` then `b`; `b` itself when `a` is empty (the common case: no copy). */
export const concat = (a: Uint8Array, b: Uint8Array) => (a.length ? Buffer.concat([a, b]) : b);

/** A latin1 head followed by `body`, in one buffer. */
export function withHead(head: string, body: Uint8Array): Uint8Array {
  const buf = Buffer.allocUnsafe(head.length + body.length);
  buf.write(head, 0, "latin1");
  if (body.length) buf.set(body, head.length);
  return buf;
}
