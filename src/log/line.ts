/*
 * The pieces of an access log line (src/log/access.ts): JSON text made by
 * hand (RFC 8259), as JSON.stringify would write it, and the writer that puts
 * a line's bytes straight into the log's buffer.
 */
import { formatAddress } from "../config/address";
import { decodeSockaddr, SockaddrMemo, type Endpoint } from "../system/sockaddr";

// Endpoints formatted so far: an edge Endpoint is shared by its connections
// (src/proxy/inbound.ts), so its text is made once, not per line.
const endpointText = new WeakMap<Endpoint, string>();

/** "ip:port", IPv6 in brackets (RFC 3986 §3.2.2), remembered per Endpoint object: for endpoints shared by many connections (edges). */
export function formatEndpoint(e: Endpoint): string {
  let t = endpointText.get(e);
  if (t !== undefined) return t;
  t = endpointString(e);
  endpointText.set(e, t);
  return t;
}

/**
 * "ip:port" made each time: for a client's endpoint, an object of its own
 * connection that is formatted once, where a WeakMap entry (a weak-table
 * insert and its sweep) would cost more than the formatting.
 */
export function endpointString(e: Endpoint): string {
  const a = formatAddress(e.addr);
  return e.family === 6 ? `[${a}]:${e.port}` : `${a}:${e.port}`;
}

/**
 * "ip:port" of a struct sockaddr_in / sockaddr_in6, remembered per address
 * and port (SockaddrMemo): for edges, one of the few a service answers on,
 * whose text is then neither made nor kept in a WeakMap per connection.
 */
export class SockaddrTexts extends SockaddrMemo<string> {
  constructor(max?: number) {
    super(sockaddrString, max);
  }

  text(buf: Uint8Array): string | undefined {
    return this.get(buf);
  }
}

/** "ip:port" of a struct sockaddr_in / sockaddr_in6 made each time (a client's: its own port), IPv4 without decoding it into an Endpoint. */
export function sockaddrString(buf: Uint8Array): string | undefined {
  if (buf[0] === 2 && buf[1] === 0) return `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}:${(buf[2]! << 8) | buf[3]!}`;
  const e = decodeSockaddr(buf);
  return e && endpointString(e);
}

// What JSON (RFC 8259 §7) escapes in a string: quote, backslash, controls; and lone surrogates (JSON.stringify's well-formed output).
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** `s` as a JSON string: most values (paths, hosts, ids) need no escape and are quoted as they are. */
export function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/**
 * A non-negative duration in ms rounded to 0.1, as JSON.stringify(Math.round(x * 10) / 10)
 * writes it ("12", "12.3"), from integers: double-to-string is the slow part of a number.
 */
export function tenths(ms: number): string {
  const r = Math.round(ms * 10);
  const d = r % 10;
  return d === 0 ? `${r / 10}` : `${(r - d) / 10}.${d}`;
}

/** `s` escaped for inside a JSON string's quotes: itself (no new string) when nothing needs escaping, as is usual. */
export function jsonInner(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s).slice(1, -1) : s;
}

/** A JSON string, or null. */
export function jsonOrNull(s: string | null | undefined): string {
  return s == null ? "null" : jsonString(s);
}

/** "ip:port" from Bun's address strings (IPv4-mapped addresses unmapped). */
export function joinHostPort(host: string, port: number): string {
  const h = host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host;
  return h.includes(":") ? `[${h}]:${port}` : `${h}:${port}`;
}

/**
 * From this many characters a text is copied by one native call
 * (Buffer#latin1Write: ≈ 20 ns, then memcpy's speed) rather than the loop
 * (≈ 1.4 ns a character). Measured (bun, this machine): 200 characters
 * 290 ns by the loop against 26 ns; 14 characters 17 ns against 19 ns.
 */
const NATIVE_FROM = 24;
/** Buffer#latin1Write: Bun's and Node's (not in @types/node); the unit tests check its bytes on the bun the build pins. */
type Latin1Buffer = Buffer & { latin1Write(s: string, offset: number, length?: number): number };

/**
 * `s` up to `end` at `at` by one native copy: at most what the buffer holds
 * from there (latin1Write throws past its end, where the loop's writes are
 * dropped: a caller's wrong worst-case bound must not throw on the data
 * plane). The bytes written.
 */
function native(buf: Buffer, s: string, at: number, end: number): number {
  const room = buf.length - at;
  return room > 0 ? (buf as Latin1Buffer).latin1Write(s, at, end < room ? end : room) : 0;
}

/**
 * Writes one line's members straight into the log's buffer (ServiceLog.begin):
 * no string for the line, no rope of its pieces to flatten, no string per
 * number. A line made as a string costs its flattened copy (≈ 300 bytes per
 * http request, a malloc and a free) plus the UTF-8 encoding call; this
 * copies a short printable ASCII text byte by byte in JIT-compiled code, a
 * long one (NATIVE_FROM) in one native copy, and sends only what needs
 * escaping or is not ASCII the slow way.
 */
export class LineWriter {
  buf: Buffer = Buffer.alloc(0);
  /** Where the next byte goes. */
  p = 0;

  /** Text known to need no JSON escaping and to be ASCII: constants, tokens, our ids, addresses. */
  raw(s: string): this {
    if (s.length >= NATIVE_FROM) {
      this.p += native(this.buf, s, this.p, s.length);
      return this;
    }
    const b = this.buf;
    let p = this.p;
    for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i);
    this.p = p;
    return this;
  }

  /** Bytes made once (a connection's constant members): one copy, not a loop over their characters. */
  bytes(b: Uint8Array): this {
    this.buf.set(b, this.p);
    this.p += b.length;
    return this;
  }

  /**
   * `s` up to `end` for inside a JSON string's quotes (RFC 8259 §7):
   * printable ASCII as it is, anything else through jsonInner. At most 6
   * bytes per UTF-16 unit.
   */
  text(s: string, end = s.length): this {
    if (end >= NATIVE_FROM) {
      // The check alone first: a text with nothing to escape (the usual path or host) is then one copy.
      for (let i = 0; i < end; i++) {
        const c = s.charCodeAt(i);
        if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) {
          this.p += this.buf.write(jsonInner(end === s.length ? s : s.slice(0, end)), this.p, "utf8");
          return this;
        }
      }
      this.p += native(this.buf, s, this.p, end);
      return this;
    }
    const b = this.buf;
    let p = this.p;
    for (let i = 0; i < end; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c === 0x22 || c === 0x5c || c > 0x7e) {
        this.p += b.write(jsonInner(end === s.length ? s : s.slice(0, end)), this.p, "utf8");
        return this;
      }
      b[p++] = c;
    }
    this.p = p;
    return this;
  }

  /** A non-negative integer as JSON writes it; anything else as a template would (`${n}`). */
  int(n: number): this {
    if (!(n >= 0 && n <= Number.MAX_SAFE_INTEGER && Number.isInteger(n))) return this.raw(`${n}`);
    let len = 1;
    for (let x = n; x >= 10; x = Math.floor(x / 10)) len++;
    const b = this.buf;
    let p = (this.p += len);
    do {
      const q = Math.floor(n / 10);
      b[--p] = 48 + (n - q * 10);
      n = q;
    } while (n > 0);
    return this;
  }

  /** A duration in ms rounded to 0.1, as tenths() writes it. */
  tenths(ms: number): this {
    const r = Math.round(ms * 10);
    if (!(r >= 0 && r <= Number.MAX_SAFE_INTEGER)) return this.raw(tenths(ms));
    const d = r % 10;
    this.int((r - d) / 10);
    if (d !== 0) {
      this.buf[this.p++] = 46;
      this.buf[this.p++] = 48 + d;
    }
    return this;
  }
}
