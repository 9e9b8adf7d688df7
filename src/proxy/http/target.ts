/*
 * Request targets (RFC 9112 §3.2): absolute-form turned into origin-form,
 * and the path normalised (RFC 3986 §6.2.2) before routing, so that
 * "/x/../admin", "/./admin", "//admin" and "/%61dmin" all meet an "/admin"
 * route, and the origin is sent the very path the route decision saw: a
 * route can never be passed by a spelling the origin reads another way.
 */

/** unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 3986 §2.3): the only octets decoded. */
const UNRESERVED = new Uint8Array(128);
for (const c of "-._~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") UNRESERVED[c.charCodeAt(0)] = 1;

const hexValue = (c: number) => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1);
const HEX = "0123456789ABCDEF";

/**
 * `path` (an absolute path, no query) normalised: percent-encoded unreserved
 * octets decoded and the remaining %xx upper-cased (§6.2.2.1, §6.2.2.2),
 * then dot segments removed (§6.2.2.3, §5.2.4) and empty segments between
 * slashes dropped (what nginx's merge_slashes does). "%2F" stays encoded: it
 * is data, not a separator. Undefined when a "%" is not followed by two hex
 * digits (RFC 3986 §2.1): no parser downstream could agree on what it means.
 */
export function normalizePath(path: string): string | undefined {
  let decoded = path;
  if (path.includes("%")) {
    decoded = "";
    let from = 0;
    for (let i = path.indexOf("%"); i >= 0; i = path.indexOf("%", from)) {
      const hi = hexValue(path.charCodeAt(i + 1));
      const lo = hexValue(path.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return undefined;
      const v = hi * 16 + lo;
      decoded += path.slice(from, i) + (v < 128 && UNRESERVED[v] === 1 ? String.fromCharCode(v) : `%${HEX[hi]}${HEX[lo]}`);
      from = i + 3;
    }
    decoded += path.slice(from);
  }
  const segments = decoded.split("/");
  const out: string[] = [];
  // segments[0] is "" (the path starts with "/"); a trailing "", "." or ".." leaves a trailing slash.
  let trailingSlash = false;
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === "" || s === ".") trailingSlash = last;
    else if (s === "..") {
      out.pop();
      trailingSlash = last;
    } else {
      out.push(s);
      trailingSlash = false;
    }
  }
  if (out.length === 0) return "/";
  const joined = `/${out.join("/")}`;
  return trailingSlash ? `${joined}/` : joined;
}

/**
 * Whether the path part of `target` (up to "?") may need normalising: it has
 * a "%", a "//", or a "/." (a dot segment or not, normalizePath decides).
 * One charCode pass, no allocation: the common path is left alone.
 */
export function mayNeedNormalizing(target: string): boolean {
  let prev = 0;
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 63 /* ? */) return false;
    if (c === 37 /* % */ || (prev === 47 /* / */ && (c === 47 || c === 46 /* . */))) return true;
    prev = c;
  }
  return false;
}

/** The normalised origin-form of an origin-form `target` (its query as it came), or undefined (malformed %-encoding). */
export function normalizeTarget(target: string): string | undefined {
  if (!mayNeedNormalizing(target)) return target;
  const q = target.indexOf("?");
  const path = normalizePath(q < 0 ? target : target.slice(0, q));
  if (path === undefined) return undefined;
  return q < 0 ? path : path + target.slice(q);
}

/**
 * absolute-form (RFC 9112 §3.2.2): "http" or "https" "://" authority, then
 * path-abempty and query. Its authority replaces Host. userinfo is refused:
 * RFC 9110 §4.2.4 forbids it in http(s) URIs, and a parser that misses the
 * "@" takes the user name for the host.
 */
export function splitAbsolute(target: string): { authority: string; target: string } | "userinfo" | undefined {
  const sep = target.indexOf("://");
  if (sep < 0) return undefined;
  const scheme = target.slice(0, sep).toLowerCase();
  if (scheme !== "http" && scheme !== "https") return undefined;
  let end = sep + 3;
  while (end < target.length) {
    const c = target.charCodeAt(end);
    if (c === 47 /* / */ || c === 63 /* ? */) break;
    if (c === 64 /* @ */) return "userinfo";
    end++;
  }
  const authority = target.slice(sep + 3, end);
  if (authority === "") return undefined;
  const rest = target.slice(end);
  return { authority, target: rest === "" ? "/" : rest.charCodeAt(0) === 63 ? `/${rest}` : rest };
}
