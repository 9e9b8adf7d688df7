// Strict HTTP/1.1 framing end to end (RFC 9112, RFC 9110): a corpus of
// crafted requests sent through a real edgeproxy (http mode, steered by
// sk_lookup in the test's own namespace) to an origin whose parser is not
// ours (Node's llhttp, see helpers/node-origin.ts). For each case: what
// edgeproxy answers, and exactly what the origin parsed; the origin never
// meets bytes it cannot parse.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { parseReply } from "./helpers/http";
import { exchange } from "./helpers/net";
import { headerValues, isParseError, isTruncation, NodeOrigin, type NodeRequest } from "./helpers/node-origin";

const f = proxyFixture();

/** What the origin must have parsed: method, url, body; `admin`: through the /admin route. */
interface Want {
  readonly method?: string;
  readonly url: string;
  readonly body?: string;
  readonly host?: string;
  readonly admin?: boolean;
  /** Fields the origin must not get (besides Connection, which it never gets: RFC 9110 §7.6.1). */
  readonly absent?: string[];
}

interface Case {
  readonly name: string;
  readonly send: string;
  /** Status of edgeproxy's first answer; "goaway": HTTP/2 frames. */
  readonly status: number | "goaway";
  /** Requests the origin parses, in order (none when absent). */
  readonly origin?: Want[];
  /** Keep the connection open (no FIN): the answer must come anyway, at once. */
  readonly noFin?: boolean;
  /** edgeproxy resets the origin connection mid-request (a request it gave up after forwarding its head). */
  readonly cutOff?: boolean;
}

const H = "Host: a.example\r\n";
const ok = (url: string, extra: Partial<Want> = {}): Want => ({ method: "GET", url, body: "", ...extra });
const post = (url: string, body: string, extra: Partial<Want> = {}): Want => ({ method: "POST", url, body, ...extra });

const CASES: Case[] = [
  // ---- the cases measured on main (issue 15) ----
  { name: "absolute-form with userinfo", send: `GET http://user:pw@evil.example/t/x HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: "absolute-form: its authority replaces Host", send: `GET http://b.example/t/x?q HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/t/x?q", { host: "b.example" })] },
  {
    name: "a request hidden in a chunk trailer section",
    send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nGET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n`,
    status: 400,
  },
  { name: "valid trailers are dropped", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 5\r\n\r\n`, status: 200, origin: [post("/t", "hello")] },
  { name: "junk after a chunk size (SP)", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5 5\r\nhello\r\n0\r\n\r\n`, status: 400 },
  { name: "junk after a chunk size (HTAB)", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\tX\r\nhello\r\n0\r\n\r\n`, status: 400 },
  { name: "chunk extensions are dropped, BWS before ';' accepted", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5 ;a=b;c="d;e"\r\nhello\r\n6;x\r\n world\r\n0;last\r\n\r\n`, status: 200, origin: [post("/t", "hello world")] },
  { name: "Content-Length after NBSP", send: `POST /t HTTP/1.1\r\n${H}Content-Length:\xa04\r\n\r\nbody`, status: 400 },
  { name: "Content-Length: 5, 5 forwarded as one value", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 5, 5\r\n\r\nhello`, status: 200, origin: [post("/t", "hello")] },
  { name: "identical Content-Length lines forwarded as one", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`, status: 200, origin: [post("/t", "hello")] },
  { name: "Content-Length with leading zeros re-stated", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 005\r\n\r\nhello`, status: 200, origin: [post("/t", "hello")] },
  { name: "differing Content-Length lines", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`, status: 400 },
  { name: "differing Content-Length list", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 5, 6\r\n\r\nhello!`, status: 400 },
  { name: "HTTP/1.9", send: `GET / HTTP/1.9\r\n${H}\r\n`, status: 505 },
  { name: "HTTP/2.0 request line", send: `GET / HTTP/2.0\r\n${H}\r\n`, status: 505 },
  { name: "HTTP/1.10", send: `GET / HTTP/1.10\r\n${H}\r\n`, status: 400 },
  { name: "lower-case version", send: `GET / http/1.1\r\n${H}\r\n`, status: 400 },
  { name: "CONNECT origin-form", send: `CONNECT /x HTTP/1.1\r\n${H}\r\n`, status: 501 },
  { name: "CONNECT authority-form", send: "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", status: 501 },
  { name: "a head of bare LFs is refused at once", send: "GET / HTTP/1.1\nHost: a.example\n\n", status: 400, noFin: true },
  { name: "a bare CR in an unfinished head is refused at once", send: "GET / HTTP/1.1\r\nHost: a.example\rX", status: 400, noFin: true },
  { name: "routes see the normalised path: /x/../admin", send: `GET /x/../admin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/admin", { admin: true })] },
  { name: "routes see the normalised path: /./admin", send: `GET /./admin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/admin", { admin: true })] },
  { name: "routes see the normalised path: //admin", send: `GET //admin/x HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/admin/x", { admin: true })] },
  { name: "routes see the normalised path: /%61dmin", send: `GET /%61dmin?a=%2e HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/admin?a=%2e", { admin: true })] },
  { name: "routes see the normalised path: /%2e%2e/admin", send: `GET /a/%2e%2e/admin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/admin", { admin: true })] },
  { name: "an encoded slash stays encoded", send: `GET /%2fadmin HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/%2Fadmin")] },
  { name: "an encoded slash is not a separator", send: `GET /admin%2F..%2Fx HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/admin%2F..%2Fx")] },
  { name: "malformed percent-encoding", send: `GET /%zz HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: "the HTTP/2 preface", send: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: "goaway" },

  // ---- the classic smuggling set ----
  { name: "CL and TE", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE and CL", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE: chunked, identity", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE: identity, chunked", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n`, status: 501 },
  { name: "TE: xchunked", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE: chunked with NBSP", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\xa0\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE: vertical tab", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE twice, second identity", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE: CHUNKED (case-insensitive) is chunked", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n`, status: 200, origin: [post("/t", "abc")] },
  { name: "TE obs-fold", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "space before colon", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: "TE in HTTP/1.0", send: "POST /t HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400 },
  { name: "NUL in a value", send: `GET / HTTP/1.1\r\n${H}X: a\0b\r\n\r\n`, status: 400 },
  { name: "bare CR in a value", send: `GET / HTTP/1.1\r\n${H}X: a\rb\r\n\r\n`, status: 400 },
  { name: "bare LF inside a complete head", send: `GET / HTTP/1.1\r\nX: a\nTransfer-Encoding: chunked\r\n${H}\r\n`, status: 400 },
  { name: "non-token header name", send: `GET / HTTP/1.1\r\n${H}X\x80Y: 1\r\n\r\n`, status: 400 },
  { name: "obs-text in a value is passed on", send: `GET / HTTP/1.1\r\n${H}X: caf\xe9\r\nConnection: close\r\n\r\n`, status: 200, origin: [ok("/")] },
  { name: "oversized chunk size", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n`, status: 400 },
  { name: "chunk size with 0x", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n`, status: 400 },
  { name: "negative Content-Length", send: `POST /t HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`, status: 400 },
  { name: "hex Content-Length", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 0x5\r\n\r\nhello`, status: 400 },
  { name: "signed Content-Length", send: `POST /t HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello`, status: 400 },
  { name: "Content-Length over the limit", send: `POST /t HTTP/1.1\r\n${H}Content-Length: 1099511627776\r\n\r\nhello`, status: 413 },
  { name: "two Hosts", send: `GET / HTTP/1.1\r\n${H}${H}\r\n`, status: 400 },
  { name: "no Host in 1.1", send: "GET / HTTP/1.1\r\nX: y\r\n\r\n", status: 400 },
  { name: "Host with userinfo", send: "GET / HTTP/1.1\r\nHost: u@a.example\r\n\r\n", status: 400 },
  { name: "TAB in the request line", send: `GET\t/ HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: "fragment in the target", send: `GET /a#b HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: "a TLS ClientHello on a plain port is refused at once", send: "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x5f\x11", status: 400, noFin: true },
  {
    name: "CL.0: what follows a zero-length body is the next request",
    send: `GET /one HTTP/1.1\r\n${H}Content-Length: 0\r\n\r\nGET /two HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
    status: 200,
    origin: [ok("/one"), ok("/two")],
  },
  {
    name: "TE.CL: what follows the last chunk is the next request",
    send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /next HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
    status: 200,
    origin: [post("/t", "hello"), ok("/next")],
  },
  {
    name: "CL.TE: the body is exactly Content-Length bytes; junk after it is a bad next request",
    send: `POST /t HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhello0\r\n\r\nGET /x HTTP/1.1\r\n\r\n`,
    status: 200,
    origin: [post("/t", "hello")],
  },
  { name: "a method origins may not know", send: `xxGET / HTTP/1.1\r\n${H}\r\n`, status: 501 },
  { name: "a registered method", send: `PROPFIND /dav HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [{ method: "PROPFIND", url: "/dav", body: "" }] },
  {
    name: "a pipelined request whose body stops short, then FIN: reset at once, not left waiting",
    send: `GET /one HTTP/1.1\r\n${H}\r\nPOST /t HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nab`,
    status: 200,
    origin: [ok("/one")],
    cutOff: true,
  },
  // ---- one connection per request: the Connection line is cut out of a head otherwise sent as it came ----
  { name: "Connection: close before Host, with a body", send: `POST /t HTTP/1.1\r\nConnection: close\r\n${H}Content-Length: 5\r\n\r\nhello`, status: 200, origin: [post("/t", "hello")] },
  { name: "Connection: CLOSE, chunked body", send: `POST /t HTTP/1.1\r\n${H}Connection: CLOSE\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, status: 200, origin: [post("/t", "hello")] },
  { name: "Connection: keep-alive then close on the next request", send: `GET /one HTTP/1.1\r\nConnection: keep-alive\r\n${H}\r\nGET /two HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/one"), ok("/two")] },
  { name: "Connection: close, X-Hop: the field it names is cut too", send: `GET / HTTP/1.1\r\n${H}Connection: close, X-Hop\r\nX-Hop: secret\r\n\r\n`, status: 200, origin: [ok("/", { absent: ["x-hop"] })] },
  { name: "leading empty line", send: `\r\nGET /lead HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [ok("/lead")] },
  { name: "HTTP/1.0 without Host", send: "GET /old HTTP/1.0\r\n\r\n", status: 200, origin: [ok("/old")] },
  { name: "OPTIONS *", send: `OPTIONS * HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [{ method: "OPTIONS", url: "*" }] },

  // ---- the body limit counts framing (max_body_size = 1KiB here) ----
  // 1,024 bytes: 2 size lines (5 + 5), 1,005 data bytes, 2 CRLFs (4), the last chunk and the empty trailer section (5).
  { name: "a chunked body of exactly 1 KiB, framing included, passes", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n200\r\n${"a".repeat(512)}\r\n1ed\r\n${"b".repeat(493)}\r\n0\r\n\r\n`, status: 200, origin: [post("/t", "a".repeat(512) + "b".repeat(493))] },
  { name: "one byte more is 413", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n200\r\n${"a".repeat(512)}\r\n1ee\r\n${"b".repeat(494)}\r\n0\r\n\r\n`, status: 413 },
  { name: "100 KB of chunk extensions", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${`1;${"e".repeat(1000)}\r\nx\r\n`.repeat(100)}0\r\n\r\n`, status: 413 },
  { name: "100 KB of trailers", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n${`X-T: ${"t".repeat(1000)}\r\n`.repeat(100)}\r\n`, status: 413 },
  // ---- max_header_size (16 KiB by default), the blank line included ----
  { name: "a head of exactly 16 KiB passes", send: `GET /big HTTP/1.1\r\n${H}Connection: close\r\nX: ${"a".repeat(16384 - 62)}\r\n\r\n`, status: 200, origin: [ok("/big")] },
  { name: "a head one byte over 16 KiB is 431", send: `GET /big HTTP/1.1\r\n${H}Connection: close\r\nX: ${"a".repeat(16385 - 62)}\r\n\r\n`, status: 431 },
  { name: "an unfinished head one byte over 16 KiB is 431 at once", send: `GET /big HTTP/1.1\r\n${H}X: ${"a".repeat(16385 - 39)}`, status: 431, noFin: true },
  { name: "1,500 empty-valued fields within 16 KiB are passed on", send: `GET /many HTTP/1.1\r\n${H}Connection: close\r\n${"x-a:\r\n".repeat(1500)}\r\n`, status: 200, origin: [ok("/many")] },
  { name: "a HEAD pipelined before a GET", send: `HEAD /h HTTP/1.1\r\n${H}\r\nGET /g HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200, origin: [{ method: "HEAD", url: "/h" }, ok("/g")] },
  { name: "HTTP/1.0 keep-alive, then a second request", send: "GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /k2 HTTP/1.0\r\n\r\n", status: 200, origin: [ok("/k1"), ok("/k2")] },
  { name: "HTTP/1.0 without keep-alive: what follows is not read", send: "GET /k1 HTTP/1.0\r\n\r\nGET /k2 HTTP/1.0\r\n\r\n", status: 200, origin: [ok("/k1")] },
  { name: "an Upgrade other than websocket is dropped, the request served", send: `GET /u HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n`, status: 200, origin: [ok("/u", { absent: ["upgrade", "http2-settings"] })] },
  { name: "Upgrade in an HTTP/1.0 request is ignored (RFC 9110 §7.8)", send: "GET /w HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", status: 200, origin: [ok("/w", { absent: ["upgrade"] })] },
  { name: "an overlong chunk extension line", send: `POST /t HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1;${"e".repeat(5000)}\r\nx\r\n0\r\n\r\n`, status: 413 },
];

async function start(dir: string, origin: NodeOrigin, engine: "epoll" | "bun"): Promise<void> {
  const file = join(dir, "edgeproxy.toml");
  writeFileSync(
    file,
    `[admin]\nsocket = "${join(dir, "admin.sock")}"\n\n[[service]]\nname = "web"\nmode = "http"\norigin = "127.0.0.1:${origin.ports[0]}"\nengine = "${engine}"\nmax_body_size = "1KiB"\n\n` +
      `[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["80"]\n\n` +
      `[[service.route]]\npath = "/admin"\norigin = "127.0.0.1:${origin.ports[1]}"\n`,
  );
  f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);
}

/** Send without a FIN and collect until the peer closes or `ms` pass. */
function sendOpen(bytes: Uint8Array, ms: number): Promise<{ got: Buffer; closed: boolean; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let sock: { end(): void } | undefined;
    const timer = setTimeout(() => {
      sock?.end();
      resolve({ got: Buffer.concat(chunks), closed: false, ms: performance.now() - t0 });
    }, ms);
    Bun.connect({
      hostname: "192.0.2.1",
      port: 80,
      allowHalfOpen: true,
      socket: {
        open(s) {
          sock = s;
          s.write(bytes);
        },
        data(_s, d) {
          chunks.push(Buffer.from(d));
        },
        end(s) {
          s.end();
        },
        close() {
          clearTimeout(timer);
          resolve({ got: Buffer.concat(chunks), closed: true, ms: performance.now() - t0 });
        },
      },
    }).catch(reject);
  });
}

/** The origin's view against what was wanted; one line per difference. */
function compare(got: NodeRequest[], want: Want[], ports: number[]): string[] {
  const out: string[] = [];
  if (got.length !== want.length) out.push(`origin parsed ${got.length} requests, want ${want.length}: ${got.map((r) => `${r.method} ${r.url}`).join(", ")}`);
  for (let i = 0; i < Math.min(got.length, want.length); i++) {
    const g = got[i]!;
    const w = want[i]!;
    if (w.method !== undefined && g.method !== w.method) out.push(`#${i} method ${g.method}, want ${w.method}`);
    if (g.url !== w.url) out.push(`#${i} url ${g.url}, want ${w.url}`);
    if (w.body !== undefined && g.body !== w.body) out.push(`#${i} body ${JSON.stringify(g.body.slice(0, 80))} (${g.body.length}), want ${w.body.length} bytes`);
    if (g.port !== ports[w.admin ? 1 : 0]) out.push(`#${i} reached port ${g.port}, want the ${w.admin ? "/admin" : "default"} origin`);
    const hosts = headerValues(g, "host");
    if (hosts.length !== 1 || (w.host !== undefined && hosts[0] !== w.host)) out.push(`#${i} host ${JSON.stringify(hosts)}`);
    const cl = headerValues(g, "content-length");
    const te = headerValues(g, "transfer-encoding");
    if (cl.length > 1 || (cl.length === 1 && !/^\d+$/.test(cl[0]!))) out.push(`#${i} content-length ${JSON.stringify(cl)}`);
    if (te.length > 1 || (te.length === 1 && te[0] !== "chunked") || (te.length && cl.length)) out.push(`#${i} transfer-encoding ${JSON.stringify(te)} with content-length ${JSON.stringify(cl)}`);
    if (g.trailers.length) out.push(`#${i} trailers reached the origin: ${JSON.stringify(g.trailers)}`);
    for (const name of ["connection", ...(w.absent ?? [])]) if (headerValues(g, name).length) out.push(`#${i} ${name} reached the origin: ${JSON.stringify(headerValues(g, name))}`);
  }
  return out;
}

describe("strict HTTP/1.1 framing, checked by an independent parser at the origin", () => {
  // On each data plane (the HTTP code is shared; reads, writes and closes are each engine's own).
  test.each(["epoll", "bun"] as const)(`a corpus of ${CASES.length} crafted requests, engine %s`, async (engine) => {
    const dir = mkdtempSync(join(tmpdir(), "ep-framing-"));
    const origin = await NodeOrigin.start(2);
    try {
      await start(dir, origin, engine);
      const failures: string[] = [];
      for (const c of CASES) {
        const before = origin.requests.length;
        const beforeErrors = origin.errors.length;
        const bytes = new Uint8Array(Buffer.from(c.send, "latin1"));
        let got: Buffer;
        let quick = true;
        if (c.noFin) {
          const r = await sendOpen(bytes, 3000);
          got = r.got;
          quick = r.closed && r.ms < 1500;
        } else {
          const t0 = performance.now();
          const r = await exchange("192.0.2.1", 80, bytes, 10_000);
          got = Buffer.from(r.kind === "data" || r.kind === "reset" ? r.bytes : new Uint8Array());
          // exchange() resets at its bound and the close may report first: the time tells.
          if (r.kind === "timeout" || performance.now() - t0 > 3000) quick = false;
        }
        await origin.sync();
        const problems: string[] = [];
        if (!quick) problems.push("no answer at once");
        if (c.status === "goaway") {
          // RFC 9113 §3.4/§6.8: an empty SETTINGS frame, then GOAWAY(last-stream-id 0, HTTP_1_1_REQUIRED).
          if (got.length < 26 || got.readUIntBE(0, 3) !== 0 || got[3] !== 4 || got[12] !== 7 || got.readUInt32BE(18) !== 0 || got.readUInt32BE(22) !== 0xd) problems.push(`not SETTINGS+GOAWAY(HTTP_1_1_REQUIRED): ${got.toString("hex").slice(0, 80)}`);
        } else {
          const status = parseReply(got.toString("latin1")).status;
          if (status !== c.status) problems.push(`status ${status}, want ${c.status}: ${JSON.stringify(got.toString("latin1").slice(0, 200))}`);
        }
        problems.push(...compare(origin.requests.slice(before), c.origin ?? [], origin.ports));
        for (const e of origin.errors.slice(beforeErrors)) {
          if (isParseError(e)) problems.push(`origin parse error ${e.code} ${e.reason}: ${JSON.stringify(e.raw)}`);
          // A cut-off message only where edgeproxy refused the request after forwarding its head.
          else if (isTruncation(e) && !c.cutOff && (c.status === 200 || c.status === "goaway")) problems.push(`origin saw a request cut off (${e.code})`);
        }
        if (problems.length) failures.push(`${c.name}:\n    ${problems.join("\n    ")}`);
      }
      expect(failures).toEqual([]);
      expect(origin.parseErrors()).toEqual([]);
      // Every refusal counted by reason; the CL.TE case's junk after its body is one more "malformed".
      const want: Record<string, number> = { malformed: 1, too_large: 0, version: 0, unsupported: 0, http2: 0 };
      for (const c of CASES) {
        if (c.status === "goaway") want.http2!++;
        else if (c.status === 400) want.malformed!++;
        else if (c.status === 413 || c.status === 431) want.too_large!++;
        else if (c.status === 505) want.version!++;
        else if (c.status === 501) want.unsupported!++;
      }
      const metrics = await (await fetch("http://localhost/metrics", { unix: join(dir, "admin.sock") } as RequestInit)).text();
      const got: Record<string, number> = {};
      for (const m of metrics.matchAll(/^edgeproxy_http_requests_refused_total\{service="web",reason="(\w+)"\} (\d+)$/gm)) got[m[1]!] = Number(m[2]);
      expect(got).toEqual(want);
    } finally {
      await origin.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  test("HTTP/2 clients read the refusal: GOAWAY with HTTP_1_1_REQUIRED (node's http2, curl)", async () => {
    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "80", "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1:9"]);
    const run = async (cmd: string[]) => {
      const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
      const timer = setTimeout(() => p.kill("SIGKILL"), 10_000);
      const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      clearTimeout(timer);
      return out + err;
    };
    const node = await run([
      "node",
      "-e",
      `const c = require("http2").connect("http://192.0.2.1:80");
       c.on("goaway", (code, last, data) => console.log("goaway", code, last, String(data)));
       c.on("error", () => {});
       const r = c.request({ ":path": "/" }); r.on("error", () => {}); r.end();`,
    ]);
    expect(node).toContain("goaway 13 0 HTTP/1.1 only");
    const curl = await run(["curl", "-sS", "-v", "--http2-prior-knowledge", "http://192.0.2.1:80/"]);
    expect(curl).toMatch(/GOAWAY, error=13/);
    expect(curl).not.toContain("Empty reply");
  }, 30_000);
});
