import { connectionTokens } from "./fields";
import type { RequestHead } from "./message";

/*
 * Request heads as the proxy sends them on to origins: hop-by-hop fields
 * removed (RFC 9110 §7.6.1), framing re-stated by us, forwarding fields
 * added. Responses to clients: response.ts.
 */

// Always hop-by-hop (RFC 9110 §7.6.1), plus Proxy-Connection (never standard,
// still sent by old clients) and the framing fields, which we set ourselves.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"]);

/** Whether field `name` of a message whose Connection names `tokens` (connectionTokens) stops at this hop. */
export function hopByHop(name: string, tokens: ReadonlySet<string> | undefined): boolean {
  return HOP_BY_HOP.has(name) || (tokens !== undefined && tokens.has(name));
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
  const { names, values } = req;
  const tokens = connectionTokens(req.connection);
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (hopByHop(name, tokens)) continue;
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
export const copyRange = (from: Uint8Array, to: Uint8Array, at: number, start: number, end: number) => bufferCopy.call(from, to, at, start, end);
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
