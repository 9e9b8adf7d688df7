import { describe, expect, test } from "bun:test";
import { ChunkedDecoder } from "./chunked";
import { hasToken } from "./fields";
import { HeadError, type RequestHead } from "./message";
import { headEnd, hopelessHead, parseRequestHead, parseResponseHead } from "./parse";

const req = (s: string) => {
  const b = Buffer.from(s, "latin1");
  const end = headEnd(b);
  expect(end).toBeGreaterThanOrEqual(0);
  return parseRequestHead(b, end);
};
const ok = (s: string) => {
  const r = req(s);
  if (r instanceof HeadError) throw new Error(`unexpected ${r.status} ${r.reason}`);
  return r as RequestHead;
};
const status = (s: string) => {
  const r = req(s);
  return r instanceof HeadError ? r.status : 200;
};

describe("request heads (RFC 9112)", () => {
  test("finds the end of the head across any alignment", () => {
    for (let pad = 0; pad < 8; pad++) {
      const b = Buffer.from(`${"x".repeat(pad)}\r\n\r\nrest`);
      expect(headEnd(b)).toBe(pad);
    }
    expect(headEnd(Buffer.from("GET / HTTP/1.1\r\nHost: a\r\n\r"))).toBe(-1);
    expect(headEnd(Buffer.from("a\n\n\r\n\r\n"))).toBe(3);
  });

  test("a plain request: method, target, version, fields in order, names lower-cased", () => {
    const r = ok("GET /a?b=c HTTP/1.1\r\nHost: Example.COM:8080\r\nX-Thing:  spaced value \t\r\nAccept: */*\r\n\r\n");
    expect([r.method, r.target, r.minor, r.host]).toEqual(["GET", "/a?b=c", 1, "Example.COM:8080"]);
    expect(r.names).toEqual(["host", "x-thing", "accept"]);
    expect(r.values[1]).toBe("spaced value");
    expect(r.contentLength).toBe(-1);
    expect(r.chunked).toBe(false);
  });

  test("leading empty lines are skipped; absolute-form's authority becomes the host", () => {
    const r = ok("\r\nGET http://a.example:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n");
    expect([r.target, r.host]).toEqual(["/x?y", "a.example:81"]);
  });

  test("framing: Content-Length, identical repeats, chunked", () => {
    expect(ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").contentLength).toBe(12);
    expect(ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n").contentLength).toBe(5);
    expect(ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").chunked).toBe(true);
  });

  test.each([
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n", 400],
    ["space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400],
    ["CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["differing CLs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400],
    ["differing CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400],
    ["signed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400],
    ["TE not ending in chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400],
    ["other coding before chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501],
    ["TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["no Host in 1.1", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400],
    ["two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["bare CR in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400],
    ["bare LF line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400],
    ["NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400],
    ["no target", "GET  HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400],
    ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505],
    ["HTTP/1.9", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505],
    ["HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505],
    ["HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400],
    ["HTTP/1.1 and more", "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400],
    ["NBSP before a Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\xa04\r\n\r\n", 400],
    ["NBSP after a Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\xa0\r\n\r\n", 400],
    ["negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400],
    ["hex CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400],
    ["empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400],
    ["CL list with a blank between digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", 400],
    ["16-digit CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456\r\n\r\n", 400],
    ["TE chunked with NBSP", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\xa0\r\n\r\n", 400],
    ["TE xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400],
    ["TE chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400],
    ["userinfo", "GET http://user:pw@evil.example/t/x HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["other scheme", "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["fragment", "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["bad %-encoding", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["CONNECT origin-form", "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", 501],
    ["CONNECT absolute-form", "CONNECT http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 501],
    ["unknown method", "XGET / HTTP/1.1\r\nHost: a\r\n\r\n", 501],
    ["lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 501],
    ["asterisk but not OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["junk", "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", 400],
    ["bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
    ["CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 501],
  ])("refused: %s", (_name, text, want) => {
    expect(status(text)).toBe(want);
  });

  test("Content-Length: a list of one value and repeated lines are one value", () => {
    expect(ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").contentLength).toBe(5);
    expect(ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").contentLength).toBe(5);
    expect(ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n").contentLength).toBe(7);
    expect(ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t9\t\r\n\r\n").contentLength).toBe(9);
  });

  test("the target is normalised and, when changed, the request line is rewritten", () => {
    for (const t of ["/x/../admin", "/./admin", "//admin", "/%61dmin"]) {
      const r = ok(`GET ${t} HTTP/1.1\r\nHost: a\r\n\r\n`);
      expect([r.target, r.rewritten]).toEqual(["/admin", true]);
    }
    expect(ok("GET /admin?x=/../ HTTP/1.1\r\nHost: a\r\n\r\n")).toMatchObject({ target: "/admin?x=/../", rewritten: false });
    expect(ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")).toMatchObject({ target: "*", rewritten: false });
    expect(ok("GET http://b.example/x/../y HTTP/1.1\r\nHost: a\r\n\r\n")).toMatchObject({ target: "/y", host: "b.example", rewritten: true });
  });

  test("the HTTP/2 preface is told apart from a bad request", () => {
    const r = req("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    expect(r).toBeInstanceOf(HeadError);
    expect((r as HeadError).h2Preface).toBe(true);
    expect((req("GET / HTTP/2.0\r\nHost: a\r\n\r\n") as HeadError).h2Preface).toBe(false);
  });

  test("an incomplete head that can never parse is seen at once: bare LF or CR, no method token", () => {
    const b = (s: string) => Buffer.from(s, "latin1");
    expect(hopelessHead(b("GET / HTTP/1.1\r\nHost: a\r\n"), 0)).toBeUndefined();
    expect(hopelessHead(b("GET / HTTP/1.1\r"), 0)).toBeUndefined(); // the LF may be next
    expect(hopelessHead(b("GE"), 0)).toBeUndefined();
    expect(hopelessHead(b("\r\n\r\nPOS"), 0)).toBeUndefined();
    expect(hopelessHead(b("GET / HTTP/1.1\nHost: a\n\n"), 0)).toMatch(/bare LF/);
    expect(hopelessHead(b("\n"), 0)).toMatch(/bare LF/);
    expect(hopelessHead(b("GET / HTTP/1.1\rX"), 0)).toMatch(/bare LF or CR/);
    expect(hopelessHead(b("ab\r\ncd"), 3)).toBeUndefined(); // the scan resumes after the CR: still paired
    expect(hopelessHead(b("\x16\x03\x01\x02\x00\x01"), 0)).toBe("malformed request line"); // a TLS ClientHello
    expect(hopelessHead(b("G\0T"), 0)).toBe("malformed request line");
    expect(hopelessHead(b("A".repeat(21)), 0)).toBe("malformed request line");
    expect(hopelessHead(b("VERSION-CONTROL"), 0)).toBeUndefined();
  });

  test("HTTP/1.0 without Host is fine", () => {
    const r = ok("GET / HTTP/1.0\r\n\r\n");
    expect([r.minor, r.host]).toEqual([0, undefined]);
  });

  test("Connection tokens", () => {
    expect(hasToken("keep-alive, close", "close")).toBe(true);
    expect(hasToken("x-close", "close")).toBe(false);
    expect(hasToken("upgrade", "upgrade")).toBe(true);
    expect(hasToken("", "close")).toBe(false);
  });

  test("Connection values lower-cased, the common ones in any case too, lists joined", () => {
    const conn = (v: string) => ok(`GET / HTTP/1.1\r\nHost: a\r\n${v}\r\n\r\n`).connection;
    expect(conn("Connection: Keep-Alive")).toBe("keep-alive");
    expect(conn("Connection: CLOSE")).toBe("close");
    expect(conn("Connection: close")).toBe("close");
    // One character off, or longer: not the constant.
    expect(conn("Connection: keep-alivE2")).toBe("keep-alive2");
    expect(conn("Connection: kEEp_alive")).toBe("keep_alive");
    expect(conn("Connection: Upgrade")).toBe("upgrade");
    expect(conn("Connection: Keep-Alive\r\nConnection: Upgrade")).toBe("keep-alive,upgrade");
    // The value as sent stays in values.
    expect(ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n").values[1]).toBe("Keep-Alive");
  });
});

describe("response heads", () => {
  const res = (s: string) => {
    const b = Buffer.from(s);
    return parseResponseHead(b, headEnd(b));
  };
  test("status, reason, framing; TE wins over CL", () => {
    const r = res("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n");
    expect(r).not.toBeInstanceOf(HeadError);
    expect(r).toMatchObject({ status: 404, reason: "Not Found", contentLength: 3 });
    expect(res("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")).toMatchObject({ chunked: true, contentLength: -1 });
    expect(res("HTTP/1.1 204\r\n\r\n")).toMatchObject({ status: 204, reason: "" });
  });
  test("malformed is the origin's fault: 502", () => {
    for (const t of ["HTTP/1.1 20 OK\r\n\r\n", "ICY 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nX : y\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"]) {
      const r = res(t);
      expect(r).toBeInstanceOf(HeadError);
      expect((r as HeadError).status).toBe(502);
    }
  });
});

describe("chunked bodies (RFC 9112 §7.1)", () => {
  const body = Buffer.from("4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\nNEXT");
  test("finds the end byte by byte and in one piece, with the data", () => {
    for (const step of [1, 3, body.length]) {
      const d = new ChunkedDecoder();
      let data = "";
      let consumed = 0;
      for (let i = 0; i < body.length && !d.done; i += step) {
        const piece = body.subarray(i, Math.min(body.length, i + step));
        const n = d.feed(piece, 0, (x) => (data += Buffer.from(x).toString()));
        expect(n).toBeGreaterThanOrEqual(0);
        consumed += n;
      }
      expect(d.done).toBe(true);
      expect(body.subarray(consumed).toString()).toBe("NEXT");
      expect(data).toBe("Wikipedia in\r\n\r\nchunks.");
      expect(d.dataBytes).toBe(23);
    }
  });
  test.each(["x\r\n", "4\nWiki", "4\r\nWikiX\r\n", "ffffffffffffff\r\n", "0\r\n\n"])("refuses %p", (bad) => {
    const d = new ChunkedDecoder();
    expect(d.feed(Buffer.from(bad), 0)).toBe(-1);
    expect(d.error).not.toBe("");
  });
});

describe("field lines: names compared in place, one pass per line", () => {
  const head = (fields: string) => `POST / HTTP/1.1\r\nHost: a\r\n${fields}\r\n`;
  const reason = (s: string) => {
    const r = req(s);
    return r instanceof HeadError ? `${r.status} ${r.reason}` : "ok";
  };

  test("a known name in any case is the known name; a name one character off is its own, lower-cased", () => {
    const r = ok(head("CONTENT-LENGTH: 3\r\ncOnTeNt-TyPe: x\r\nX-REQUEST-IE: y\r\nX-Request-Idd: z\r\n"));
    expect(r.names).toEqual(["host", "content-length", "content-type", "x-request-ie", "x-request-idd"]);
    expect(r.contentLength).toBe(3);
  });

  // Names of a known name's length that differ from it in a character only a sloppy `| 0x20` on both sides, or a
  // case fold of non-letters, would confuse: none may be taken for the known name (and so none may frame the body).
  test.each([
    ["Content_Length", "content_length"], // "_" | 0x20 is DEL, "-" | 0x20 is "-"
    ["Content^Length", "content^length"], // "^" | 0x20 is "~"
    ["Content~Length", "content~length"],
    ["Content.Length", "content.length"], // "." is "\x0e" | 0x20
    ["Transfer`Encoding", "transfer`encoding"], // "`" is "@" | 0x20
    ["Transfer|Encoding", "transfer|encoding"], // "|" is "\\" | 0x20
    ["Hos~", "hos~"],
    ["Hos^", "hos^"],
  ])("%s is not a known name", (raw, lower) => {
    const r = ok(head(`${raw}: 5\r\n`));
    expect(r.names).toEqual(["host", lower]);
    expect([r.contentLength, r.chunked, r.host]).toEqual([-1, false, "a"]);
  });

  const malformed = "400 malformed request header line";
  const invalid = "400 invalid character in request header x";
  test.each([
    ["@ in a name", "Hos@: a\r\n", malformed],
    ["[ in a name", "Content[Length: 5\r\n", malformed],
    ["{ in a name", "Content{Length: 5\r\n", malformed],
    ["\\ in a name", "Transfer\\Encoding: chunked\r\n", malformed],
    ["NUL in a name", "Ho\0st: b\r\n", malformed],
    ["bare CR in a name", "X\ry: 1\r\n", malformed],
    ["bare LF in a name", "X\ny: 1\r\n", malformed],
    ["missing colon", "X-Thing value\r\n", malformed],
    ["empty name", ": value\r\n", malformed],
    ["space before colon", "X-Thing : value\r\n", malformed],
    ["bare CR in a value", "X: a\rb\r\n", invalid],
    ["bare CR ending a value", "X: ab\r\r\n", invalid],
    ["bare LF in a value", "X: a\nb\r\n", invalid],
    ["NUL in a value", "X: a\0b\r\n", invalid],
    ["DEL in a value", "X: a\x7fb\r\n", invalid],
    ["a control in the trailing OWS", "X: a \x01\r\n", invalid],
  ])("refused: %s", (_what, fields, why) => {
    expect(reason(head(fields))).toBe(why);
  });

  test("obs-fold is refused, not joined", () => {
    expect(reason(head("X: a\r\n\tb\r\n"))).toBe("400 request header line folding (obs-fold) is not accepted");
  });

  test("OWS around a value is not part of it; inner blanks and obs-text are; the last line and empty values parse", () => {
    const r = ok(head("A: \t v  1 \t\r\nB:\r\nC:   \r\nD: caf\xe9\r\nE:x\r\n"));
    expect(r.names).toEqual(["host", "a", "b", "c", "d", "e"]);
    expect(r.values).toEqual(["a", "v  1", "", "", "caf\xe9", "x"]);
  });

  test("the same from a response: the origin's fault", () => {
    const res = (s: string) => parseResponseHead(Buffer.from(s, "latin1"), headEnd(Buffer.from(s, "latin1")));
    expect((res("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX: a\rb\r\n\r\n") as HeadError).reason).toBe("invalid character in response header x");
    expect((res("HTTP/1.1 200 OK\r\nContent_Length: 1\r\n\r\n") as { names: string[]; contentLength: number }).contentLength).toBe(-1);
  });
});
