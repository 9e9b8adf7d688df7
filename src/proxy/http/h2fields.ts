import type http2 from "node:http2";
import { connectionTokens } from "./fields";
import type { RequestHead, ResponseHead } from "./message";

/*
 * Field sections between HTTP/2 (RFC 9113 §8.2, §8.3) and the HTTP/1.1
 * messages the origins speak.
 */

// Connection-specific fields (RFC 9113 §8.2.2) and the framing ones we state ourselves.
const HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"]);

/** A stream's request that cannot be proxied: the status to answer with and why. */
export interface H2Refusal {
  readonly status: number;
  readonly message: string;
}

/**
 * The request of a stream's header list (node's raw name/value pairs) as a
 * RequestHead for originRequestHead(): pseudo-header fields taken out
 * (§8.3.1: :authority wins over Host), cookie crumbs joined again (§8.2.3),
 * Content-Length checked. `bodyFollows`: the HEADERS frame had no END_STREAM;
 * a body without a Content-Length then goes chunked to the origin. `bytes`:
 * the list's size as HPACK counts it (§4.1 of RFC 7541: name, value, 32).
 */
export function h2Request(raw: readonly string[], bodyFollows: boolean): { req: RequestHead; bytes: number } | H2Refusal {
  let method = "";
  let path = "";
  let authority: string | undefined;
  let host: string | undefined;
  let cl = -1;
  const names: string[] = [];
  const values: string[] = [];
  let cookie = "";
  let bytes = 0;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    bytes += name.length + value.length + 32;
    if (name.charCodeAt(0) === 58) {
      if (name === ":method") method = value;
      else if (name === ":path") path = value;
      else if (name === ":authority") authority = value;
      continue;
    }
    if (name === "cookie") {
      cookie = cookie ? `${cookie}; ${value}` : value;
      continue;
    }
    if (name === "host") host = value;
    else if (name === "content-length") {
      if (!/^\d{1,15}$/.test(value) || (cl >= 0 && Number(value) !== cl)) return { status: 400, message: "malformed content-length" };
      cl = Number(value);
      continue;
    }
    names.push(name);
    values.push(value);
  }
  if (cookie) {
    names.push("cookie");
    values.push(cookie);
  }
  if (method === "CONNECT") return { status: 501, message: "CONNECT is not supported" };
  // §8.3.1: :path is required, origin-form (or "*" for OPTIONS) for http and https.
  if (!method || !(path.startsWith("/") || (path === "*" && method === "OPTIONS"))) return { status: 400, message: "malformed request pseudo-header fields" };
  if (/[\s\x00-\x1f\x7f]/.test(path)) return { status: 400, message: "malformed :path" };
  const chunked = bodyFollows && cl < 0;
  return {
    req: { method, target: path, minor: 1, host: authority ?? host, rewritten: true, names, values, contentLength: cl, chunked, otherCoding: false, connection: "", upgrade: "", connectionAt: -1, connectionEnd: -1 },
    bytes,
  };
}

/**
 * The origin's response head as HTTP/2 fields: connection-specific ones
 * (and those its Connection names) dropped, Content-Length kept only when it
 * frames the body, repeated fields as arrays (node sends each).
 */
export function h2ResponseHeaders(res: ResponseHead, keepLength: boolean, requestId: string | undefined): http2.OutgoingHttpHeaders {
  const headers: http2.OutgoingHttpHeaders = { ":status": res.status };
  const { names, values } = res;
  const tokens = connectionTokens(res.connection);
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (HOP.has(name) || (tokens !== undefined && tokens.has(name))) continue;
    if (name === "content-length" && !keepLength) continue;
    const had = headers[name];
    headers[name] = had === undefined ? values[i]! : Array.isArray(had) ? [...had, values[i]!] : [had as string, values[i]!];
  }
  if (requestId !== undefined && !names.includes("x-request-id")) headers["x-request-id"] = requestId;
  return headers;
}

/** The built-in responder's Response as HTTP/2 fields and body. */
export async function h2Local(res: Response, head: boolean): Promise<{ headers: http2.OutgoingHttpHeaders; body: Uint8Array }> {
  const body = head ? new Uint8Array(0) : new Uint8Array(await res.arrayBuffer());
  const headers: http2.OutgoingHttpHeaders = { ":status": res.status };
  res.headers.forEach((v, k) => {
    if (!HOP.has(k) && k !== "content-length") headers[k] = v;
  });
  headers["content-length"] = head ? (res.headers.get("content-length") ?? "0") : body.length;
  return { headers, body };
}
