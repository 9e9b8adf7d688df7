/*
 * The client's first flight, read without terminating TLS: the ClientHello's
 * server_name, to pick an origin pool by it (nginx ssl_preread, HAProxy
 * req.ssl_sni). Nothing is decrypted; the bytes read are forwarded as they
 * came, so the origin completes the handshake with the client.
 *
 * Strict, with every length checked against what encloses it:
 *   RFC 8446 §5.1  TLSPlaintext records: type 22 (handshake) only until the
 *                  ClientHello is complete (handshake messages "MUST NOT be
 *                  interleaved with other record types"), no zero-length
 *                  handshake fragments, at most 2^14 bytes each; a message
 *                  may span several records.
 *   RFC 8446 §4    Handshake: msg_type 1 (client_hello), uint24 length.
 *   RFC 8446 §4.1.2 ClientHello: legacy_version, random, session id <0..32>,
 *                  cipher suites <2..2^16-2> (even), compression methods
 *                  <1..2^8-1>, extensions to the message's end (absent in
 *                  older hellos, RFC 5246 §7.4.1.2); no two extensions of one
 *                  type (RFC 8446 §4.2).
 *   RFC 6066 §3    server_name (extension 0): a ServerNameList of exactly one
 *                  host_name (type 0), as OpenSSL accepts it; "ASCII ...
 *                  without a trailing dot" (one is stripped all the same),
 *                  compared lower-cased.
 * The whole ClientHello must fit in HELLO_LIMIT bytes on the wire (one full
 * record's worth); a hello that needs more is refused, so a client can make
 * a connection hold at most that much before it has a route.
 */

/** 16 KiB of handshake plus one record header (RFC 8446 §5.1: a record carries at most 2^14 bytes). */
export const HELLO_LIMIT = (1 << 14) + 5;

const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
const CONTENT_HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const HOST_NAME = 0;
// RFC 1035 §2.3.4: 255 octets on the wire, 253 as text without the root's dot.
const MAX_NAME = 253;

/** Why a connection that began as TLS was refused; the label of edgeproxy_sni_parse_errors_total. */
export type HelloError =
  /** The ClientHello needs more than HELLO_LIMIT bytes. */
  | "too_long"
  /** The client half-closed before the ClientHello was complete (set by the session, not the parser). */
  | "truncated"
  /** A record that is not a handshake record of TLS 1.x, or empty, or longer than 2^14. */
  | "bad_record"
  /** The first handshake message is not a ClientHello. */
  | "not_client_hello"
  /** The ClientHello's fields or extensions do not add up. */
  | "malformed"
  /** The server_name extension is malformed, or its name is not a host name. */
  | "bad_server_name"
  /** The handshake deadline passed first (set by the session). */
  | "timeout";

export const HELLO_ERRORS: readonly HelloError[] = ["too_long", "truncated", "bad_record", "not_client_hello", "malformed", "bad_server_name", "timeout"];

export type HelloVerdict =
  /** Not complete yet: feed more. */
  | { readonly kind: "more" }
  /** The first bytes are not a TLS handshake record: some other protocol. */
  | { readonly kind: "not_tls" }
  /** A complete, well-formed ClientHello; `sni` lower case without a trailing dot, absent without server_name. */
  | { readonly kind: "hello"; readonly sni: string | undefined }
  | { readonly kind: "error"; readonly reason: HelloError };

const MORE: HelloVerdict = { kind: "more" };
const NOT_TLS: HelloVerdict = { kind: "not_tls" };
const fail = (reason: HelloError): HelloVerdict => ({ kind: "error", reason });

/**
 * Reads one connection's first bytes as they arrive. Each byte is looked at
 * once (records are walked as they complete), so a client sending a byte at
 * a time costs no more than one sending it all. After a verdict other than
 * "more", feed() returns that verdict again.
 */
export class ClientHelloReader {
  // The bytes of the records so far (at most HELLO_LIMIT), and the handshake fragments joined.
  private raw: Uint8Array = new Uint8Array(0);
  private rawLength = 0;
  private hs: Uint8Array = new Uint8Array(0);
  private hsLength = 0;
  /** Where the next record header starts in raw. */
  private next = 0;
  private verdict: HelloVerdict = MORE;

  /** Bytes received so far (up to HELLO_LIMIT): 0 means the client has sent nothing. */
  get received(): number {
    return this.rawLength;
  }

  feed(chunk: Uint8Array): HelloVerdict {
    if (this.verdict.kind !== "more") return this.verdict;
    // Bytes past the limit are not needed: a hello that fits is complete within it.
    const take = Math.min(chunk.length, HELLO_LIMIT - this.rawLength);
    this.raw = grow(this.raw, this.rawLength, this.rawLength + take);
    this.raw.set(take === chunk.length ? chunk : chunk.subarray(0, take), this.rawLength);
    this.rawLength += take;
    this.verdict = this.step();
    if (this.verdict.kind === "more" && this.rawLength >= HELLO_LIMIT) this.verdict = fail("too_long");
    return this.verdict;
  }

  private step(): HelloVerdict {
    const raw = this.raw;
    // Anything but a handshake record of TLS 1.x (SSL 3.0 included) is another protocol (an SSLv2 hello too: it has no SNI).
    if (this.next === 0) {
      if (this.rawLength >= 1 && raw[0] !== CONTENT_HANDSHAKE) return NOT_TLS;
      if (this.rawLength >= 2 && raw[1] !== 3) return NOT_TLS;
    }
    while (this.rawLength - this.next >= RECORD_HEADER) {
      const at = this.next;
      const length = (raw[at + 3]! << 8) | raw[at + 4]!;
      if (raw[at] !== CONTENT_HANDSHAKE || raw[at + 1] !== 3 || raw[at + 2]! > 4 || length === 0 || length > 1 << 14) return fail("bad_record");
      // Known too long as soon as the header says so.
      if (at + RECORD_HEADER + length > HELLO_LIMIT) return fail("too_long");
      if (this.rawLength < at + RECORD_HEADER + length) return MORE;
      this.hs = grow(this.hs, this.hsLength, this.hsLength + length);
      this.hs.set(raw.subarray(at + RECORD_HEADER, at + RECORD_HEADER + length), this.hsLength);
      this.hsLength += length;
      this.next = at + RECORD_HEADER + length;
      if (this.hsLength >= HANDSHAKE_HEADER) {
        const hs = this.hs;
        if (hs[0] !== CLIENT_HELLO) return fail("not_client_hello");
        const bodyLength = (hs[1]! << 16) | (hs[2]! << 8) | hs[3]!;
        if (HANDSHAKE_HEADER + bodyLength > HELLO_LIMIT - RECORD_HEADER) return fail("too_long");
        const end = HANDSHAKE_HEADER + bodyLength;
        if (this.hsLength >= end) {
          // The message must end with its record: a next handshake message in the same flight is not a client's (RFC 8446 §5.1 allows
          // coalescing, but a client sends nothing else before the server's answer).
          if (this.hsLength > end) return fail("malformed");
          return parseClientHello(hs.subarray(HANDSHAKE_HEADER, end));
        }
      }
    }
    return MORE;
  }
}

/** `buf` with room for `need` bytes, its first `used` kept: doubled, at most HELLO_LIMIT. */
function grow(buf: Uint8Array, used: number, need: number): Uint8Array {
  if (need <= buf.length) return buf;
  const out = new Uint8Array(Math.min(HELLO_LIMIT, Math.max(need, buf.length * 2, 512)));
  out.set(buf.subarray(0, used));
  return out;
}

/** A bounds-checked cursor over one vector: every read fails (undefined) rather than run past `end`. */
class Cursor {
  constructor(
    private readonly b: Uint8Array,
    public at: number,
    readonly end: number,
  ) {}
  get left(): number {
    return this.end - this.at;
  }
  u8(): number | undefined {
    return this.at + 1 <= this.end ? this.b[this.at++] : undefined;
  }
  u16(): number | undefined {
    if (this.at + 2 > this.end) return undefined;
    const v = (this.b[this.at]! << 8) | this.b[this.at + 1]!;
    this.at += 2;
    return v;
  }
  skip(n: number): boolean {
    if (this.at + n > this.end) return false;
    this.at += n;
    return true;
  }
  /** A sub-cursor over the next `n` bytes, which this one skips. */
  take(n: number): Cursor | undefined {
    if (this.at + n > this.end) return undefined;
    const c = new Cursor(this.b, this.at, this.at + n);
    this.at += n;
    return c;
  }
  bytes(): Uint8Array {
    return this.b.subarray(this.at, this.end);
  }
}

/** The ClientHello body (after msg_type and length), RFC 8446 §4.1.2. */
export function parseClientHello(body: Uint8Array): HelloVerdict {
  const c = new Cursor(body, 0, body.length);
  // legacy_version: 0x0300-0x0303 in practice (TLS 1.3 sends 0x0303); major 3 is what makes it TLS.
  if (c.u8() !== 3 || c.u8() === undefined) return fail("malformed");
  if (!c.skip(32)) return fail("malformed");
  const session = c.u8();
  if (session === undefined || session > 32 || !c.skip(session)) return fail("malformed");
  const suites = c.u16();
  if (suites === undefined || suites < 2 || suites % 2 !== 0 || !c.skip(suites)) return fail("malformed");
  const compression = c.u8();
  if (compression === undefined || compression < 1 || !c.skip(compression)) return fail("malformed");
  // RFC 5246 §7.4.1.2: a hello may end here, without extensions (and so without SNI).
  if (c.left === 0) return { kind: "hello", sni: undefined };
  const extLength = c.u16();
  if (extLength === undefined || extLength !== c.left) return fail("malformed");
  const seen = new Set<number>();
  let sni: string | undefined;
  while (c.left > 0) {
    const type = c.u16();
    const length = c.u16();
    if (type === undefined || length === undefined) return fail("malformed");
    const data = c.take(length);
    if (!data) return fail("malformed");
    if (seen.has(type)) return fail("malformed");
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const name = serverName(data);
      if (name === undefined) return fail("bad_server_name");
      sni = name;
    }
  }
  return { kind: "hello", sni };
}

/** RFC 6066 §3 ServerNameList with exactly one host_name; the name lower case without a trailing dot, or undefined. */
function serverName(data: Cursor): string | undefined {
  const listLength = data.u16();
  if (listLength === undefined || listLength !== data.left || listLength === 0) return undefined;
  if (data.u8() !== HOST_NAME) return undefined;
  const nameLength = data.u16();
  if (nameLength === undefined || nameLength === 0 || nameLength !== data.left) return undefined;
  return hostName(data.bytes());
}

/**
 * A DNS name as letters, digits, hyphens and underscores in dot-separated
 * labels of 1-63 (RFC 1035 §2.3.4; underscores appear in real names);
 * lower-cased, one trailing dot stripped. No IDN decoding: A-labels are ASCII.
 */
export function hostName(bytes: Uint8Array): string | undefined {
  let n = bytes.length;
  if (n > 0 && bytes[n - 1] === 0x2e) n--;
  if (n === 0 || n > MAX_NAME) return undefined;
  let label = 0;
  let out = "";
  for (let i = 0; i < n; i++) {
    let ch = bytes[i]!;
    if (ch === 0x2e) {
      if (label === 0) return undefined;
      label = 0;
    } else {
      if (ch >= 0x41 && ch <= 0x5a) ch += 0x20;
      const ok = (ch >= 0x61 && ch <= 0x7a) || (ch >= 0x30 && ch <= 0x39) || ch === 0x2d || ch === 0x5f;
      if (!ok || ++label > 63) return undefined;
    }
    out += String.fromCharCode(ch);
  }
  return label === 0 ? undefined : out;
}
