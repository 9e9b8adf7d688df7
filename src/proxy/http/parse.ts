import { normalizeTarget, splitAbsolute } from "./target";

/*
 * Strict HTTP/1.1 message heads (RFC 9112). Strict because edgeproxy sits in
 * front of origins that may parse differently: anything two parsers could
 * read two ways (obs-fold, whitespace before the colon, bare CR, CL with TE,
 * differing Content-Lengths) is refused, which is what closes the request
 * smuggling gap (RFC 9112 §11.2).
 *
 * A head is decoded once as latin1 (one string, byte-for-byte) and scanned
 * with charCodeAt: no regular expressions, no per-line slices but the field
 * names and values themselves.
 */

/** A head that cannot be proxied: the status to answer with and one line saying why. */
export class HeadError {
  constructor(
    readonly status: number,
    readonly reason: string,
    /** The HTTP/2 connection preface (RFC 9113 §3.4): answered in HTTP/2, not with an HTTP/1.1 status. */
    readonly h2Preface = false,
  ) {}
}

/** Header fields in arrival order; names lower-cased. */
export interface Message {
  readonly names: string[];
  readonly values: string[];
  /** -1: no Content-Length. */
  contentLength: number;
  /** Transfer-Encoding ends in chunked (RFC 9112 §6.3 rule 4). */
  chunked: boolean;
  /** Transfer-Encoding present but not ending in chunked: a response framed by close. */
  otherCoding: boolean;
  /** Connection's tokens, lower case, comma-joined ("" when absent). */
  connection: string;
  /** The Upgrade field's value ("" when absent). */
  upgrade: string;
  /**
   * Where the Connection field's line starts in the head as received: -1
   * without one, -2 with more than one. With `connectionEnd` (where the next
   * line starts) it lets a head go on with that line cut out or replaced
   * (headers.ts), the rest copied as it came.
   */
  connectionAt: number;
  connectionEnd: number;
}

export interface RequestHead extends Message {
  readonly method: string;
  /** origin-form (absolute-form is rewritten to it, its authority becoming `host`). */
  readonly target: string;
  /** 0 or 1: HTTP/1.0 or HTTP/1.1. */
  readonly minor: number;
  /** The Host field's value, or the absolute-form authority; undefined when absent. */
  host: string | undefined;
  /** The request line is not sent as it came (absolute-form, a normalised path, leading empty lines). */
  readonly rewritten: boolean;
}

export interface ResponseHead extends Message {
  readonly status: number;
  readonly reason: string;
  readonly minor: number;
}

// tchar (RFC 9110 §5.6.2).
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

const isTchar = (c: number) => c < 128 && TCHAR[c] === 1;
// field-vchar / SP / HTAB (RFC 9110 §5.5): no CTL but HTAB, no DEL; obs-text allowed.
const isFieldChar = (c: number) => c === 9 || (c >= 32 && c !== 127 && c < 256);

/** Index of the CRLFCRLF ending the head in `buf` (searching from `from`), or -1. */
export function headEnd(buf: Uint8Array, from = 0): number {
  for (let i = Math.max(0, from); i + 3 < buf.length; i++) {
    if (buf[i + 3] === 10) {
      if (buf[i + 2] === 13 && buf[i + 1] === 10 && buf[i] === 13) return i;
    } else if (buf[i + 3] !== 13) {
      i += 3; // neither CR nor LF at i+3: no CRLFCRLF can start at i..i+3
    }
  }
  return -1;
}

/** No registered method is longer (VERSION-CONTROL, UPDATEREDIRECTREF). */
const MAX_METHOD = 20;

/**
 * Why an incomplete head can already never parse, or undefined: a bare LF,
 * or a CR followed by anything but LF, from `from` on (we do not take a
 * single LF as a line end, which RFC 9112 §2.2 leaves optional); or a first
 * line that does not start with a method token (a TLS ClientHello on a plain
 * port, binary noise). Refused when it arrives instead of waiting for a
 * CRLFCRLF that may never come. Only incomplete heads are scanned, the new
 * bytes and at most the first MAX_METHOD; a complete one is the parser's.
 */
export function hopelessHead(buf: Uint8Array, from: number): string | undefined {
  for (let i = Math.max(0, from); i < buf.length; i++) {
    const c = buf[i]!;
    if (c === 10 ? i === 0 || buf[i - 1] !== 13 : c === 13 && i + 1 < buf.length && buf[i + 1] !== 10) return "bare LF or CR in request head (lines end with CRLF)";
  }
  let i = 0;
  while (i + 1 < buf.length && buf[i] === 13 && buf[i + 1] === 10) i += 2;
  const start = i;
  for (; i < buf.length && buf[i] !== 32 && buf[i] !== 13; i++) {
    if (i - start >= MAX_METHOD || !isTchar(buf[i]!)) return "malformed request line";
  }
  return undefined;
}

// Buffer's latin1Slice works on any Uint8Array and takes a range: no subarray view, no TextDecoder.
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, start: number, end: number): string }).latin1Slice;

/**
 * Field names this proxy meets on nearly every message (RFC 9110 §16.3.1's
 * registry, the common ones), by length: a name is compared with these
 * case-insensitively in place and the constant returned, so the usual head
 * makes no string per field name (a slice and its lowercase copy cost most
 * of a head's parse: bench/profiles/http.md).
 */
const KNOWN_NAMES: readonly (readonly string[])[] = (() => {
  const names = [
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "content-length", "content-type",
    "transfer-encoding", "upgrade", "date", "server", "cache-control", "etag", "last-modified", "expires", "vary",
    "location", "set-cookie", "cookie", "authorization", "referer", "origin", "content-encoding", "keep-alive",
    "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via", "accept-ranges",
    "if-modified-since", "if-none-match", "range", "pragma", "te", "expect", "age", "content-range", "x-real-ip",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions",
  ];
  const byLength: string[][] = [];
  for (const n of names) {
    // fieldName's `| 0x20` comparison is exact only for these characters (see there): a name with another would
    // match a wrong name ("~" under "^") or never match ("_" | 0x20 is DEL), so one that slips in fails at load.
    if (!/^[a-z-]+$/.test(n)) throw new Error(`KNOWN_NAMES: "${n}" has a character other than a-z and "-"`);
    (byLength[n.length] ??= []).push(n);
  }
  return byLength;
})();

/**
 * The lowercase name of the field at text[from, to) (tchar only, checked by
 * the caller): a constant for a known name, else a new string. The known
 * names hold only a-z and "-"; the tchar c with `c | 0x20` equal to one of
 * those are exactly that character and its upper case ("-" | 0x20 is "-",
 * and CR, the only other c with c | 0x20 == "-", is no tchar), so the
 * comparison is exact.
 */
function fieldName(text: string, from: number, to: number): string {
  const candidates = KNOWN_NAMES[to - from];
  if (candidates !== undefined) {
    for (let c = 0; c < candidates.length; c++) {
      const known = candidates[c]!;
      let k = 0;
      while (k < known.length && (text.charCodeAt(from + k) | 0x20) === known.charCodeAt(k)) k++;
      if (k === known.length) return known;
    }
  }
  return text.slice(from, to).toLowerCase();
}

/** Field lines from `pos` up to `text.length` (each ending CRLF) into m; the framing fields interpreted. */
function parseFields(text: string, pos: number, m: Message, who: "request" | "response"): HeadError | undefined {
  const status = who === "request" ? 400 : 502;
  let te = "";
  let sawTe = false;
  // One pass per line: the name's characters up to the colon, the value's up to the CR, each checked as it is
  // passed (no separate search for the line's end). charCodeAt past the end is NaN, which no check accepts.
  while (pos < text.length) {
    let c = text.charCodeAt(pos);
    // obs-fold (RFC 9112 §5.2): a server may reject it; a proxy must not pass it on as is.
    if (c === 32 || c === 9) return new HeadError(status, `${who} header line folding (obs-fold) is not accepted`);
    let i = pos;
    while (isTchar(c)) c = text.charCodeAt(++i);
    // No whitespace between name and colon (RFC 9112 §5.1: MUST reject with 400).
    if (i === pos || c !== 58) return new HeadError(status, `malformed ${who} header line`);
    const name = fieldName(text, pos, i);
    let v = i + 1;
    c = text.charCodeAt(v);
    while (c === 32 || c === 9) c = text.charCodeAt(++v);
    let eol = v;
    while (isFieldChar(c)) c = text.charCodeAt(++eol);
    // The value ends at CRLF; any other stop is a character no field value may hold (a bare CR or LF, a control).
    if (c !== 13 || text.charCodeAt(eol + 1) !== 10) return new HeadError(status, `invalid character in ${who} header ${name}`);
    let e = eol;
    while (e > v && (text.charCodeAt(e - 1) === 32 || text.charCodeAt(e - 1) === 9)) e--;
    const value = text.slice(v, e);
    m.names.push(name);
    m.values.push(value);
    switch (name) {
      case "content-length": {
        // A list of identical values is one value (RFC 9110 §8.6); anything else is a smuggling attempt.
        const n = contentLength(value, m.contentLength);
        if (n === -2) return new HeadError(status, `conflicting ${who} Content-Length values`);
        if (n < 0) return new HeadError(status, `invalid ${who} Content-Length "${value}"`);
        m.contentLength = n;
        break;
      }
      case "transfer-encoding":
        sawTe = true;
        te = te ? `${te},${value}` : value;
        break;
      case "connection":
        m.connection = m.connection ? `${m.connection},${lowerConnection(text, v, e, value)}` : lowerConnection(text, v, e, value);
        m.connectionAt = m.connectionAt === -1 ? pos : -2;
        m.connectionEnd = eol + 2;
        break;
      case "upgrade":
        m.upgrade = value;
        break;
    }
    pos = eol + 2;
  }
  if (sawTe) {
    // OWS is SP / HTAB only (RFC 9110 §5.6.3): String.trim() would also take NBSP and turn "chunked\xa0" into chunked.
    const codings = te.toLowerCase().split(",").map(trimOws).filter(Boolean);
    m.chunked = codings[codings.length - 1] === "chunked";
    m.otherCoding = !m.chunked || codings.length > 1;
  }
  return undefined;
}

/** Whether text[at, at + known.length) is `known` (a-z and "-" only) in any case: fieldName's comparison (CR, the other c with c | 0x20 == "-", is in no field value). */
function isLower(text: string, at: number, known: string): boolean {
  for (let k = 0; k < known.length; k++) if ((text.charCodeAt(at + k) | 0x20) !== known.charCodeAt(k)) return false;
  return true;
}

/**
 * A Connection value (text[v, e), `value`) in lowercase: the two common
 * ones as constants, so no string is made (a slice's lowercase copy is a
 * malloc per message: bench/profiles/http.md), else a lowercase copy.
 */
function lowerConnection(text: string, v: number, e: number, value: string): string {
  if (e - v === 10 && isLower(text, v, "keep-alive")) return "keep-alive";
  if (e - v === 5 && isLower(text, v, "close")) return "close";
  return value.toLowerCase();
}

const isOws = (c: number) => c === 32 || c === 9;

/** `s` without leading and trailing SP / HTAB. */
function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isOws(s.charCodeAt(a))) a++;
  while (b > a && isOws(s.charCodeAt(b - 1))) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * A Content-Length field value: 1*DIGIT, or a list of them (RFC 9110 §5.6.1
 * list, OWS = SP / HTAB only) that must all equal `seen` (-1: none yet) and
 * each other. Returns the value, -1 when malformed, -2 when values differ.
 * At most 15 digits: exact in a double, and far beyond any body limit.
 */
function contentLength(value: string, seen: number): number {
  let n = seen;
  let any = false;
  let k = 0;
  while (k < value.length) {
    const c = value.charCodeAt(k);
    if (isOws(c) || c === 44 /* , */) {
      k++;
      continue;
    }
    const start = k;
    let v = 0;
    while (k < value.length) {
      const d = value.charCodeAt(k) - 48;
      if (d < 0 || d > 9) break;
      v = v * 10 + d;
      k++;
    }
    if (k === start || k - start > 15) return -1;
    while (k < value.length && isOws(value.charCodeAt(k))) k++;
    if (k < value.length && value.charCodeAt(k) !== 44) return -1;
    if (n >= 0 && n !== v) return -2;
    n = v;
    any = true;
  }
  return any ? n : -1;
}

/** True when a comma-separated, lower-case list contains `token`. */
export function hasToken(list: string, token: string): boolean {
  if (!list) return false;
  let from = 0;
  for (;;) {
    const i = list.indexOf(token, from);
    if (i < 0) return false;
    const before = i === 0 ? 44 : list.charCodeAt(i - 1);
    const after = i + token.length >= list.length ? 44 : list.charCodeAt(i + token.length);
    const sep = (c: number) => c === 44 || c === 32 || c === 9;
    if (sep(before) && sep(after)) return true;
    from = i + 1;
  }
}

/**
 * Methods forwarded: the IANA HTTP Method Registry (RFC 9110 §16.1), and
 * PURGE, which caches take. A method is a token (§9.1), so any word would
 * parse here; but origins' parsers commonly know a fixed list (llhttp does),
 * and a method they cannot parse is a request they read differently from
 * us. RFC 9110 §9.1: an unrecognised method may be answered 501.
 */
const METHODS = new Set([
  "ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "CONNECT", "COPY", "DELETE", "GET", "HEAD", "LABEL", "LINK", "LOCK", "MERGE", "MKACTIVITY",
  "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE", "OPTIONS", "ORDERPATCH", "PATCH", "POST", "PROPFIND", "PROPPATCH", "PURGE", "PUT", "QUERY",
  "REBIND", "REPORT", "SEARCH", "TRACE", "UNBIND", "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE", "UPDATEREDIRECTREF", "VERSION-CONTROL",
]);

/** The HTTP/2 connection preface's first line (RFC 9113 §3.4), which an HTTP/1.1 parser sees as a request line. */
const H2_PREFACE_LINE = "PRI * HTTP/2.0\r\n";

/**
 * Parse a request head: `buf[0..end)` where `end` is where headEnd found
 * CRLFCRLF. Leading empty lines are skipped (RFC 9112 §2.2).
 */
export function parseRequestHead(buf: Uint8Array, end: number): RequestHead | HeadError {
  const text = latin1Slice.call(buf, 0, end + 2);
  let pos = 0;
  while (text.startsWith("\r\n", pos)) pos += 2;
  if (text.startsWith(H2_PREFACE_LINE, pos)) return new HeadError(505, "HTTP/2 is not supported: use HTTP/1.1", true);
  const eol = text.indexOf("\r\n", pos);
  // request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
  const sp1 = text.indexOf(" ", pos);
  if (sp1 <= pos || sp1 > eol) return new HeadError(400, "malformed request line");
  for (let i = pos; i < sp1; i++) if (!isTchar(text.charCodeAt(i))) return new HeadError(400, "malformed request method");
  const method = text.slice(pos, sp1);
  // Tunnels are not proxied, whatever form the target has (the README's promise).
  if (method === "CONNECT") return new HeadError(501, "CONNECT is not supported");
  if (!METHODS.has(method)) return new HeadError(501, "unknown request method");
  const sp2 = text.indexOf(" ", sp1 + 1);
  if (sp2 <= sp1 + 1 || sp2 > eol) return new HeadError(400, "malformed request line");
  // HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3); only 1.0 and 1.1 are spoken.
  let minor = -1;
  if (eol - sp2 === 9 && text.startsWith("HTTP/", sp2 + 1) && text.charCodeAt(sp2 + 7) === 46) {
    const major = text.charCodeAt(sp2 + 6) - 48;
    const m = text.charCodeAt(sp2 + 8) - 48;
    if (major >= 0 && major <= 9 && m >= 0 && m <= 9) {
      if (major !== 1 || m > 1) return new HeadError(505, "HTTP version not supported");
      minor = m;
    }
  }
  if (minor < 0) return new HeadError(400, "malformed HTTP version");
  for (let i = sp1 + 1; i < sp2; i++) {
    const c = text.charCodeAt(i);
    // No fragment in a request-target (RFC 9112 §3.2).
    if (c <= 32 || c >= 127 || c === 35 /* # */) return new HeadError(400, "invalid character in request target");
  }
  const raw = text.slice(sp1 + 1, sp2);
  let target = raw;
  let host: string | undefined;
  if (target.charCodeAt(0) !== 47 /* / */) {
    const abs = splitAbsolute(target);
    if (abs === "userinfo") return new HeadError(400, "userinfo in the request target");
    if (abs) {
      host = abs.authority;
      target = abs.target;
    } else if (!(target === "*" && method === "OPTIONS")) {
      return new HeadError(400, "malformed request target");
    }
  }
  if (target !== "*") {
    const normal = normalizeTarget(target);
    if (normal === undefined) return new HeadError(400, "malformed percent-encoding in request target");
    target = normal;
  }
  const req: RequestHead = { names: [], values: [], contentLength: -1, chunked: false, otherCoding: false, connection: "", upgrade: "", connectionAt: -1, connectionEnd: -1, method, target, minor, host: undefined, rewritten: target !== raw || pos > 0 };
  const err = parseFields(text, eol + 2, req, "request");
  if (err) return err;
  let hosts = 0;
  for (let i = 0; i < req.names.length; i++) {
    if (req.names[i] !== "host") continue;
    hosts++;
    host ??= req.values[i];
  }
  // RFC 9112 §3.2: a 1.1 request without Host, or with more than one, gets 400.
  if (hosts > 1 || (hosts === 0 && req.minor === 1 && host === undefined)) return new HeadError(400, hosts > 1 ? "more than one Host header" : "missing Host header");
  if (host !== undefined && !/^[A-Za-z0-9._~!$&'()*+,;=%:[\]-]*$/.test(host)) return new HeadError(400, "invalid Host header");
  req.host = host;
  if (req.names.includes("transfer-encoding")) {
    // RFC 9112 §6.1: TE in 1.0 means faulty framing; with CL, a smuggling attempt (§6.3 rule 3).
    if (req.minor === 0) return new HeadError(400, "Transfer-Encoding in an HTTP/1.0 request");
    if (req.contentLength >= 0) return new HeadError(400, "both Content-Length and Transfer-Encoding");
    if (!req.chunked) return new HeadError(400, "request Transfer-Encoding does not end in chunked");
    if (req.otherCoding) return new HeadError(501, "transfer codings other than chunked are not supported");
  }
  return req;
}

/** Parse a response head (`buf[0..end)`, `end` from headEnd). Errors are the origin's: 502. */
export function parseResponseHead(buf: Uint8Array, end: number): ResponseHead | HeadError {
  const text = latin1Slice.call(buf, 0, end + 2);
  const eol = text.indexOf("\r\n");
  // status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 §4)
  if (eol < 12 || !text.startsWith("HTTP/1.") || text.charCodeAt(12) !== 32 && eol !== 12) return new HeadError(502, "malformed origin status line");
  const minor = text.charCodeAt(7) - 48;
  const status = Number(text.slice(9, 12));
  if (text.charCodeAt(8) !== 32 || minor < 0 || minor > 9 || !(status >= 100 && status <= 999) || !/^\d{3}$/.test(text.slice(9, 12))) {
    return new HeadError(502, "malformed origin status line");
  }
  const reason = eol > 13 ? text.slice(13, eol) : "";
  for (let i = 0; i < reason.length; i++) if (!isFieldChar(reason.charCodeAt(i))) return new HeadError(502, "malformed origin reason phrase");
  const res: ResponseHead = { names: [], values: [], contentLength: -1, chunked: false, otherCoding: false, connection: "", upgrade: "", connectionAt: -1, connectionEnd: -1, status, reason, minor: minor === 0 ? 0 : 1 };
  const err = parseFields(text, eol + 2, res, "response");
  if (err) return err;
  // RFC 9112 §6.3 rule 3: with Transfer-Encoding, Content-Length is ignored (and removed on forwarding).
  if (res.names.includes("transfer-encoding")) res.contentLength = -1;
  return res;
}
