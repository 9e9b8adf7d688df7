import { hasToken } from "./fields";
import type { RequestHead, ResponseHead } from "./message";

/*
 * Heads as the proxy sends them on: hop-by-hop fields removed (RFC 9110
 * §7.6.1), framing re-stated by us, forwarding fields added.
 */

// Always hop-by-hop (RFC 9110 §7.6.1), plus Proxy-Connection (never standard,
// still sent by old clients) and the framing fields, which we set ourselves.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"]);

/** Whether field `name` of a message with Connection tokens `connection` stops at this hop. */
function hopByHop(name: string, connection: string): boolean {
  return HOP_BY_HOP.has(name) || (connection !== "" && hasToken(connection, name));
}

// token (RFC 9110 §5.6.2), for RFC 7239 values that need no quotes.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** An RFC 7239 §4 value: a token as is, anything else as a quoted-string. */
function forwardedValue(v: string): string {
  return TOKEN.test(v) ? v : `"${v.replace(/["\\]/g, "\\$&")}"`;
}

/**
 * The client as an RFC 7239 node (§6): IPv4 as is; IPv6 in brackets, and
 * since ":" "[" "]" are not token characters, the whole quoted
 * (for="[2001:db8::1]"). The port is left out (§6.1 makes it optional).
 */
export function forwardedFor(ip: string): string {
  return ip.includes(":") ? `"[${ip}]"` : ip;
}

export interface ForwardContext {
  /** The client's IP, IPv4-mapped addresses unmapped. */
  readonly clientIp: string;
  readonly proto: "http" | "https";
  /** Host for the origin when the request had none (HTTP/1.0): the address:port the client dialled. */
  readonly fallbackHost: string;
  /** Keep Upgrade and say Connection: upgrade (a WebSocket handshake). */
  readonly upgrade: boolean;
  /** An X-Request-Id of ours to send (the client's, if any, is dropped); absent: the head's own goes on as it is. */
  /** undefined: none to add. The exchanges always pass it, so every request's object has one shape (no spread per request). */
  readonly requestId?: string | undefined;
}

/** The request head for the origin, as latin1 text. Always HTTP/1.1: we speak 1.1 to origins. */
export function originRequestHead(req: RequestHead, ctx: ForwardContext): string {
  let out = `${req.method} ${req.target} HTTP/1.1\r\n`;
  let xff = "";
  let fwd = "";
  let sawHost = false;
  const { names, values, connection } = req;
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (hopByHop(name, connection)) continue;
    switch (name) {
      case "x-forwarded-for":
        xff = xff ? `${xff}, ${values[i]}` : values[i]!;
        continue;
      case "forwarded":
        fwd = fwd ? `${fwd}, ${values[i]}` : values[i]!;
        continue;
      // Ours to say, at the edge: a client's own claims are dropped.
      case "x-forwarded-proto":
      case "x-forwarded-host":
        continue;
      case "x-request-id":
        if (ctx.requestId !== undefined) continue;
        break;
      case "host":
        sawHost = true;
        // absolute-form's authority wins over Host (RFC 9112 §3.2.2).
        out += `host: ${req.host}\r\n`;
        continue;
    }
    out += `${name}: ${values[i]}\r\n`;
  }
  const host = req.host ?? ctx.fallbackHost;
  if (!sawHost) out += `host: ${host}\r\n`;
  if (req.chunked) out += "transfer-encoding: chunked\r\n";
  else if (req.contentLength >= 0) out += `content-length: ${req.contentLength}\r\n`;
  if (ctx.upgrade) out += `upgrade: ${req.upgrade}\r\nconnection: upgrade\r\n`;
  const ip = ctx.clientIp;
  if (ctx.requestId !== undefined) out += `x-request-id: ${ctx.requestId}\r\n`;
  out += `x-forwarded-for: ${xff ? `${xff}, ${ip}` : ip}\r\n`;
  out += `x-forwarded-proto: ${ctx.proto}\r\nx-forwarded-host: ${host}\r\n`;
  // RFC 7239 §4: one forwarded-element per proxy, appended to the list.
  const element = `for=${forwardedFor(ip)};proto=${ctx.proto};host=${forwardedValue(host)}`;
  out += `forwarded: ${fwd ? `${fwd}, ${element}` : element}\r\n\r\n`;
  return out;
}

/**
 * Whether the client's head can go to the origin as it came, followed by our
 * forwarding fields: nothing hop-by-hop but one Connection field of just
 * "close" or "keep-alive" (cut out on the way: ConnectionForwarding.head),
 * no forwarding fields of the client's own to merge, an origin-form HTTP/1.1
 * request line. The common case, one connection per request included
 * (Connection: close), and it spares rebuilding the head field by field.
 * A Connection field naming anything else names fields that must go too
 * (RFC 9110 §7.6.1): that head is rebuilt.
 */
export function extendable(req: RequestHead): boolean {
  if (req.minor !== 1 || req.rewritten || req.host === undefined) return false;
  const names = req.names;
  let lengths = 0;
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (name === "connection") {
      // Its only option is this hop's (the parse's constants: one field, one token, any case); its line is cut out.
      if (req.connectionAt < 0 || (req.connection !== "close" && req.connection !== "keep-alive")) return false;
      continue;
    }
    if (name === "content-length") {
      // Kept as it came only when it is one line of plain digits; "5, 5", "05" or a repeated line is
      // re-stated as one value (RFC 9110 §8.6): the origin gets one Content-Length, not our reading of a list.
      if (++lengths > 1 || req.values[i] !== String(req.contentLength)) return false;
      continue;
    }
    if (HOP_BY_HOP.has(name) || name === "x-forwarded-for" || name === "forwarded" || name === "x-forwarded-proto" || name === "x-forwarded-host") return false;
  }
  return true;
}

const ID_FIELD = Buffer.from("x-request-id: ", "latin1");

// Buffer's copy works on any Uint8Array and takes a range: no subarray view of the source.
const bufferCopy = Buffer.prototype.copy as unknown as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;
/** `from[start, end)` into `to` at `at`. */
const copyRange = (from: Uint8Array, to: Uint8Array, at: number, start: number, end: number) => bufferCopy.call(from, to, at, start, end);
const NO_FIELDS = new Uint8Array(0);
/** The longest Host whose forwarding fields a ConnectionForwarding keeps: a DNS name (253, RFC 1035 §2.3.4) and a port. */
const MAX_KEPT_HOST = 260;

/** An X-Request-Id of ours, written as ASCII bytes (RequestLog's): its length, and the write that returns where it ends. */
export interface RequestIdBytes {
  readonly idLength: number;
  writeId(b: Uint8Array, at: number): number;
}

/**
 * The fields we add to the extendable requests of one client (the blank
 * line that ends the head included), shared by its connections on a thread
 * (forwardingFor). Its client and scheme are
 * fixed when it is made (a PROXY header is read before the connection is),
 * so they are the constructor's, not each request's: no later request can
 * be given a text made for another client. Its requests mostly name one
 * Host, so the text (with Forwarded's quoting checks) is made once per Host.
 */
export class ConnectionForwarding {
  private host: string | undefined;
  /** Our forwarding fields for `host` and the blank line, as bytes (set with `host`). */
  private fields: Uint8Array = NO_FIELDS;

  constructor(
    private readonly clientIp: string,
    private readonly proto: "http" | "https",
  ) {}

  /**
   * The origin's head: `raw`'s first `rawLength` bytes (the request as it
   * came, up to the CRLF of its last field; `raw` may go on) and our fields,
   * in one buffer. `host`: the request's Host (an
   * extendable request has one); `requestId`: ours to send, if any, written
   * as bytes (RequestLog.writeId: no string for it); `cutFrom`, `cutTo`: a
   * line of `raw` left out (the request's Connection field:
   * RequestHead.connectionAt and connectionEnd), -1 for none. The fields are
   * bytes made once per Host: a request copies them, no string is built or
   * encoded for it.
   */
  head(raw: Uint8Array, rawLength: number, host: string, requestId: RequestIdBytes | undefined, cutFrom = -1, cutTo = -1): Buffer {
    let fields = this.fields;
    if (host !== this.host) {
      const ip = this.clientIp;
      fields = Buffer.from(`x-forwarded-for: ${ip}\r\nx-forwarded-proto: ${this.proto}\r\nx-forwarded-host: ${host}\r\nforwarded: for=${forwardedFor(ip)};proto=${this.proto};host=${forwardedValue(host)}\r\n\r\n`, "latin1");
      // Kept for the next request only for a Host of a name's length: the client chooses it (up to
      // max_header_size), and kept fields live as long as the client's entry (forwardingFor), MAX_FORWARDINGS of them.
      if (host.length <= MAX_KEPT_HOST) {
        this.host = host;
        this.fields = fields;
      }
    }
    const cut = cutFrom < 0 ? 0 : cutTo - cutFrom;
    const length = rawLength - cut;
    const out = Buffer.allocUnsafe(length + (requestId === undefined ? 0 : ID_FIELD.length + requestId.idLength + 2) + fields.length);
    if (cut > 0) {
      // The head around the cut line (the request's Connection field). Buffer's copy takes a range of
      // any Uint8Array: no subarray view (≈ 0.7 µs a view of a small chunk, see conn.ts readHeads).
      copyRange(raw, out, 0, 0, cutFrom);
      copyRange(raw, out, cutFrom, cutTo, rawLength);
    } else {
      // The whole chunk when it fits (what follows the head is then overwritten by our fields), else the head's view.
      out.set(raw.length <= out.length ? raw : raw.subarray(0, rawLength), 0);
    }
    let at = length;
    if (requestId !== undefined) {
      out.set(ID_FIELD, at);
      at += ID_FIELD.length;
      at = requestId.writeId(out, at);
      out[at++] = 13;
      out[at++] = 10;
    }
    // Our fields end the buffer exactly: anything short of that would send the origin the rest of `raw` (a
    // pipelined request's bytes) or of the pool's memory after our blank line.
    if (at + fields.length !== out.length) throw new Error(`origin head: ${out.length - at - fields.length} bytes unaccounted for (request id ${requestId?.idLength} long)`);
    out.set(fields, at);
    return out;
  }
}

/**
 * Whether the origin's head can go to the client byte for byte: HTTP/1.1,
 * no hop-by-hop field except "Connection: keep-alive" (a proxy may put its
 * own options in place of Connection, RFC 9110 §7.6.1, and keep-alive is
 * ours), Transfer-Encoding exactly chunked and alone.
 */
export function verbatimResponse(res: ResponseHead): boolean {
  if (res.minor !== 1) return false;
  const { names, values } = res;
  let lengths = 0;
  for (let i = 0; i < names.length; i++) {
    switch (names[i]) {
      case "content-length":
        // One plain value, as for requests: "5, 5" or a repeat is re-stated once (RFC 9110 §8.6).
        if (++lengths > 1 || values[i] !== String(res.contentLength)) return false;
        break;
      case "connection":
        // One field "keep-alive" in any case is the parse's constant (lowerConnection): no lowercase copy made here.
        if (res.connection !== "keep-alive" && values[i]!.toLowerCase() !== "keep-alive") return false;
        break;
      case "transfer-encoding":
        if (values[i]!.toLowerCase() !== "chunked" || names.includes("content-length") || names.indexOf("transfer-encoding") !== i || names.lastIndexOf("transfer-encoding") !== i) return false;
        break;
      case "keep-alive":
      case "proxy-connection":
      case "te":
      case "trailer":
      case "upgrade":
        return false;
    }
  }
  return true;
}

const CLOSE_FIELD = Buffer.from("connection: close\r\n", "latin1");

/** Shared ConnectionForwardings kept (forwardingFor): at most ~1 KiB each (their fields, for a Host of at most MAX_KEPT_HOST). */
const MAX_FORWARDINGS = 1024;
const forwardings = { http: new Map<string, ConnectionForwarding>(), https: new Map<string, ConnectionForwarding>() };

/**
 * The ConnectionForwarding of client `clientIp` over `proto`, shared by all
 * of that client's connections on this thread: with one connection per
 * request, one made per connection was its text built and encoded per
 * request (≈ 0.56 µs, measured in one Bun process). Its text depends on the
 * client, scheme and Host only, which the key and head()'s Host check cover.
 * Bounded: cleared when full (a scan of many addresses makes them anew).
 */
export function forwardingFor(clientIp: string, proto: "http" | "https"): ConnectionForwarding {
  const m = forwardings[proto];
  let f = m.get(clientIp);
  if (f === undefined) {
    if (m.size >= MAX_FORWARDINGS) m.clear();
    m.set(clientIp, (f = new ConnectionForwarding(clientIp, proto)));
  }
  return f;
}

/**
 * A verbatim response (verbatimResponse) going on as it came, with `extra`
 * (whole field lines: our X-Request-Id) added before its blank line: one copy,
 * no rebuild. `whole` is the origin's head (`headLength` bytes with the blank
 * line) and what came after it; the result's head is `extra.length` longer.
 */
export function withFields(whole: Uint8Array, headLength: number, extra: string): Buffer {
  const blank = headLength - 2;
  const out = Buffer.allocUnsafe(whole.length + extra.length);
  // Copied whole, then its tail moved up in place: no view objects (two subarray()s cost more than the copies:
  // ≈ 176 vs 103 ns per response in one Bun process).
  out.set(whole, 0);
  out.copyWithin(blank + extra.length, blank, whole.length);
  out.write(extra, blank, "latin1");
  return out;
}

/**
 * A verbatim response (verbatimResponse) whose client connection closes
 * after it: `whole` (the origin's head, `headLength` bytes with the blank
 * line, and what came after it) with its Connection field (keep-alive: ours
 * to replace, RFC 9110 §7.6.1) replaced by "connection: close", or that field
 * added when it had none (RFC 9112 §9.6: the last response says close), and
 * `extra` (whole field lines) added before the blank line: the client sees
 * what clientResponseHead would say, with the origin's own lines copied, not
 * rebuilt. Its head is `out.length - whole.length` longer than the origin's.
 * undefined when the head has several Connection fields (then rebuilt).
 */
export function closingResponse(whole: Uint8Array, headLength: number, res: ResponseHead, extra: string): Buffer | undefined {
  const at = res.connectionAt;
  if (at === -2) return undefined;
  const blank = headLength - 2;
  const cut = at < 0 ? 0 : res.connectionEnd - at;
  const out = Buffer.allocUnsafe(whole.length - cut + extra.length + CLOSE_FIELD.length);
  let p: number;
  if (at >= 0) {
    // In the field's place: the head otherwise keeps its order.
    copyRange(whole, out, 0, 0, at);
    out.set(CLOSE_FIELD, at);
    p = at + CLOSE_FIELD.length;
    p += copyRange(whole, out, p, res.connectionEnd, blank);
  } else {
    p = copyRange(whole, out, 0, 0, blank);
  }
  if (extra) p += out.write(extra, p, "latin1");
  if (at < 0) {
    out.set(CLOSE_FIELD, p);
    p += CLOSE_FIELD.length;
  }
  copyRange(whole, out, p, blank, whole.length);
  return out;
}

/** How the response body reaches the client. */
export type ResponseFraming = "none" | "length" | "chunked" | "close";

/**
 * How an origin's response body is delimited (RFC 9112 §6.3), for HTTP/1.1
 * and HTTP/2 clients alike: none (a HEAD, 204, 304), chunked, a length, or
 * the origin's close (another transfer coding, or no length).
 */
export function originFraming(method: string, res: ResponseHead): ResponseFraming {
  if (method === "HEAD" || res.status === 204 || res.status === 304) return "none";
  if (res.chunked) return "chunked";
  if (res.otherCoding || res.contentLength < 0) return "close";
  return "length";
}

/** Whether the origin connection may carry another request after this response (RFC 9112 §9.3). */
export function originReusable(res: ResponseHead, framing: ResponseFraming): boolean {
  return res.minor === 1 && !hasToken(res.connection, "close") && framing !== "close";
}

/**
 * The response head for the client. `framing` is how the body goes on;
 * `keepAlive` whether the client connection stays open after it.
 */
export function clientResponseHead(res: ResponseHead, clientMinor: number, framing: ResponseFraming, keepAlive: boolean, upgrade: boolean, extra = ""): string {
  const reason = res.reason;
  let out = `HTTP/1.${clientMinor} ${res.status}${reason ? ` ${reason}` : ""}\r\n`;
  const { names, values, connection } = res;
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (hopByHop(name, connection)) continue;
    out += `${name}: ${values[i]}\r\n`;
  }
  out += extra;
  if (upgrade) return `${out}upgrade: ${res.upgrade}\r\nconnection: upgrade\r\n\r\n`;
  if (framing === "chunked") out += "transfer-encoding: chunked\r\n";
  else if (framing === "length" || (framing === "none" && res.contentLength >= 0 && res.status !== 204 && res.status >= 200)) out += `content-length: ${res.contentLength}\r\n`;
  if (res.status >= 200) {
    if (!keepAlive) out += "connection: close\r\n";
    else if (clientMinor === 0) out += "connection: keep-alive\r\n";
  }
  return `${out}\r\n`;
}

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** A response of our own: a one-line text body naming the cause; the connection closes after it. */
export function errorResponse(status: number, message: string, extra = ""): Uint8Array {
  const body = `${message}\n`;
  return Buffer.from(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}

/**
 * What an HTTP/2 client that sent the connection preface gets (RFC 9113
 * §3.4: the server preface is a SETTINGS frame, first): an empty SETTINGS
 * frame, then GOAWAY (§6.8) with last-stream-id 0 and HTTP_1_1_REQUIRED
 * (0xd, §7), whose debug data says why. Clients then retry over HTTP/1.1 or
 * say so, instead of reporting an empty reply to an HTTP/1.1 status line.
 */
export const H2_REFUSAL: Uint8Array = (() => {
  const debug = Buffer.from("HTTP/1.1 only");
  const frame = (type: number, payload: Uint8Array) => {
    // Frame header (§4.1): 24-bit length, type, flags 0, stream 0.
    const h = Buffer.alloc(9);
    h.writeUIntBE(payload.length, 0, 3);
    h[3] = type;
    return Buffer.concat([h, payload]);
  };
  const goaway = Buffer.alloc(8 + debug.length);
  goaway.writeUInt32BE(0, 0); // last-stream-id: no stream was processed
  goaway.writeUInt32BE(0xd, 4); // HTTP_1_1_REQUIRED
  debug.copy(goaway, 8);
  return new Uint8Array(Buffer.concat([frame(0x4, new Uint8Array(0)), frame(0x7, goaway)]));
})();
