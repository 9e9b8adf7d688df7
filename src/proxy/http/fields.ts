import { HeadError, type Message } from "./message";

/*
 * The field lines of an HTTP/1.1 head (RFC 9112 §5), scanned in place in the
 * head's latin1 text (parse.ts), and the framing fields' values read as
 * strictly: Content-Length, Transfer-Encoding, Connection (RFC 9112 §6, RFC
 * 9110 §7.6.1). Anything two parsers could read two ways is refused.
 */

// tchar (RFC 9110 §5.6.2).
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") TCHAR[c.charCodeAt(0)] = 1;

export const isTchar = (c: number) => c < 128 && TCHAR[c] === 1;
// field-vchar / SP / HTAB (RFC 9110 §5.5): no CTL but HTAB, no DEL; obs-text allowed.
export const isFieldChar = (c: number) => c === 9 || (c >= 32 && c !== 127 && c < 256);

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
export function parseFields(text: string, pos: number, m: Message, who: "request" | "response"): HeadError | undefined {
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

/**
 * The tokens of a comma-separated, lower-case list (a Connection value: its
 * options, RFC 9110 §7.6.1), split where hasToken splits (comma, SP, HTAB);
 * undefined for "". Made once per message for the field-by-field check of
 * which fields it names: hasToken per field scans the whole list each time,
 * which a head of a long Connection list and thousands of fields turned into
 * 136 ms of one thread's time per 15 KB head (both within max_header_size).
 */
export function connectionTokens(list: string): ReadonlySet<string> | undefined {
  if (!list) return undefined;
  const tokens = new Set<string>();
  let from = 0;
  for (let i = 0; i <= list.length; i++) {
    const c = i < list.length ? list.charCodeAt(i) : 44;
    if (c !== 44 && c !== 32 && c !== 9) continue;
    if (i > from) tokens.add(list.slice(from, i));
    from = i + 1;
  }
  return tokens;
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
