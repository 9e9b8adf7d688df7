import { isFieldChar, isTchar, parseFields } from "./fields";
import { HeadError, type RequestHead, type ResponseHead } from "./message";
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
 * names and values themselves. Here: where a head ends, its start line; its
 * field lines are fields.ts's, what it parses into message.ts's.
 */

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
