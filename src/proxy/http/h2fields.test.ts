import { expect, test } from "bun:test";
import { h2Request, h2ResponseHeaders } from "./h2fields";
import { parseResponseHead } from "./parse";

const GET = [":method", "GET", ":scheme", "https", ":path", "/a?b=1", ":authority", "shop.example"];

test("a request: pseudo-header fields out, :authority over Host, cookie crumbs joined (RFC 9113 §8.2.3), order kept", () => {
  const r = h2Request([...GET, "host", "other.example", "cookie", "a=1", "x-one", "1", "cookie", "b=2"], false);
  if ("status" in r) throw new Error(r.message);
  expect(r.req).toMatchObject({ method: "GET", target: "/a?b=1", host: "shop.example", minor: 1, contentLength: -1, chunked: false });
  expect(r.req.names).toEqual(["host", "x-one", "cookie"]);
  expect(r.req.values).toEqual(["other.example", "1", "a=1; b=2"]);
  // RFC 7541 §4.1: name + value + 32 per field.
  expect(r.bytes).toBe(GET.reduce((n, s) => n + s.length, 0) + 4 * 32 + 4 + 13 + 32 + 6 + 3 + 32 + 5 + 1 + 32 + 6 + 3 + 32);
});

test("a body without content-length goes chunked; with one, it is stated once; bad ones refused", () => {
  const chunked = h2Request(GET, true);
  expect("req" in chunked && chunked.req.chunked).toBe(true);
  const sized = h2Request([...GET, "content-length", "5"], true);
  expect("req" in sized && [sized.req.chunked, sized.req.contentLength, sized.req.names.includes("content-length")]).toEqual([false, 5, false]);
  expect(h2Request([...GET, "content-length", "5", "content-length", "6"], true)).toEqual({ status: 400, message: "malformed content-length" });
  expect(h2Request([...GET, "content-length", "-1"], true)).toMatchObject({ status: 400 });
});

test("CONNECT, a missing or non-origin-form :path, control characters: refused", () => {
  expect(h2Request([":method", "CONNECT", ":authority", "a:443"], false)).toMatchObject({ status: 501 });
  expect(h2Request([":method", "GET", ":scheme", "https"], false)).toMatchObject({ status: 400 });
  expect(h2Request([":method", "GET", ":path", "http://x/"], false)).toMatchObject({ status: 400 });
  expect(h2Request([":method", "GET", ":path", "/a b"], false)).toMatchObject({ status: 400 });
  expect("req" in h2Request([":method", "OPTIONS", ":path", "*"], false)).toBe(true);
});

test("a response: connection-specific fields dropped, repeats as arrays, content-length only when it frames, our X-Request-Id unless the origin's", () => {
  const text = "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-End: y\r\n\r\n";
  const buf = Buffer.from(text, "latin1");
  const res = parseResponseHead(buf, text.length - 4);
  if (!("status" in res) || !("names" in res)) throw new Error("parse");
  expect(h2ResponseHeaders(res, false, "id-1")).toEqual({ ":status": 200, "set-cookie": ["a=1", "b=2"], "x-end": "y", "x-request-id": "id-1" });
  const sized = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-Request-Id: theirs\r\n\r\n";
  const r2 = parseResponseHead(Buffer.from(sized, "latin1"), sized.length - 4);
  if (!("names" in r2)) throw new Error("parse");
  expect(h2ResponseHeaders(r2, true, "ours")).toEqual({ ":status": 404, "content-length": "3", "x-request-id": "theirs" });
  expect(h2ResponseHeaders(r2, false, undefined)).toEqual({ ":status": 404, "x-request-id": "theirs" });
});
