import { describe, expect, test } from "bun:test";
import { ConnectionForwarding, extendable, forwardedFor, forwardingFor, originRequestHead } from "./headers";
import { clientResponseHead, closingResponse, errorResponse, verbatimResponse, withFields } from "./response";
import { HeadError, type RequestHead, type ResponseHead } from "./message";
import { headEnd, parseRequestHead, parseResponseHead } from "./parse";
import { connectionTokens, hasToken } from "./fields";

// An id as the request log writes it (RequestIdBytes), from its text.
const ofText = (id: string | undefined) => (id === undefined ? undefined : { idLength: id.length, writeId: (b: Uint8Array, at: number) => at + Buffer.from(b.buffer, b.byteOffset, b.byteLength).write(id, at, "latin1") });

const req = (s: string) => {
  const b = Buffer.from(s);
  const r = parseRequestHead(b, headEnd(b));
  if (r instanceof HeadError) throw new Error(r.reason);
  return r as RequestHead;
};
const res = (s: string) => {
  const b = Buffer.from(s);
  const r = parseResponseHead(b, headEnd(b));
  if (r instanceof HeadError) throw new Error(r.reason);
  return r as ResponseHead;
};
const ctx = { clientIp: "192.0.2.1", proto: "http" as const, fallbackHost: "192.0.2.80:8080", upgrade: false };

describe("forwarding headers (RFC 7239, X-Forwarded-*)", () => {
  test("RFC 7239 §6: IPv4 bare, IPv6 bracketed and quoted", () => {
    expect(forwardedFor("192.0.2.43")).toBe("192.0.2.43");
    expect(forwardedFor("2001:db8:cafe::17")).toBe('"[2001:db8:cafe::17]"');
  });

  test("appended to the client's own; host quoted when not a token; a client's X-Forwarded-Proto dropped", () => {
    const head = originRequestHead(
      req("GET /p HTTP/1.1\r\nHost: a.example:8080\r\nX-Forwarded-For: 203.0.113.1\r\nX-Forwarded-For: 203.0.113.2\r\nForwarded: for=203.0.113.1\r\nX-Forwarded-Proto: https\r\n\r\n"),
      { ...ctx, clientIp: "2001:db8::1", proto: "https" },
    );
    expect(head).toStartWith("GET /p HTTP/1.1\r\nhost: a.example:8080\r\n");
    expect(head).toContain("x-forwarded-for: 203.0.113.1, 203.0.113.2, 2001:db8::1\r\n");
    expect(head).toContain('forwarded: for=203.0.113.1, for="[2001:db8::1]";proto=https;host="a.example:8080"\r\n');
    expect(head).toContain("x-forwarded-proto: https\r\n");
    expect(head.match(/x-forwarded-proto/g)).toHaveLength(1);
    expect(head).toEndWith("\r\n\r\n");
  });

  test("HTTP/1.0 without Host gets the address dialled; absolute-form's authority is the Host", () => {
    expect(originRequestHead(req("GET / HTTP/1.0\r\n\r\n"), ctx)).toContain("host: 192.0.2.80:8080\r\n");
    const abs = originRequestHead(req("GET http://b.example/x HTTP/1.1\r\nHost: ignored\r\n\r\n"), ctx);
    expect(abs).toStartWith("GET /x HTTP/1.1\r\nhost: b.example\r\n");
  });

  test("the fast path (head as it came plus our fields) only for heads with nothing to strip or merge", () => {
    // Our fields alone: the head of an empty request as text.
    const fieldsOf = (c: ConnectionForwarding, host: string, id: string | undefined) => c.head(new Uint8Array(0), 0, host, ofText(id)).toString("latin1");
    const plain = req("GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
    expect(extendable(plain)).toBe(true);
    const conn = new ConnectionForwarding(ctx.clientIp, ctx.proto);
    expect(fieldsOf(conn, "a", undefined)).toBe("x-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: a\r\nforwarded: for=192.0.2.1;proto=http;host=a\r\n\r\n");
    // A connection's requests: the text kept from an earlier Host is never given to another, with or without a request id;
    // it is what a fresh one (nothing kept) makes.
    for (const [host, id] of [["a", "id-1"], ["b:8080", undefined], ["[2001:db8::9]:80", undefined], ["a", "id-2"], ["a", undefined]] as const) {
      const got = fieldsOf(conn, host, id);
      expect(got).toBe(fieldsOf(new ConnectionForwarding(ctx.clientIp, ctx.proto), host, id));
      expect(got).toContain(`x-forwarded-host: ${host}\r\n`);
      expect(got.startsWith("x-request-id: ")).toBe(id !== undefined);
    }
    expect(fieldsOf(conn, "[2001:db8::9]:80", undefined)).toContain('host="[2001:db8::9]:80"\r\n');
    const conn6 = new ConnectionForwarding("2001:db8::1", "https");
    expect(fieldsOf(conn6, "a", undefined)).toContain('x-forwarded-for: 2001:db8::1\r\nx-forwarded-proto: https\r\n');
    expect(fieldsOf(conn6, "a", undefined)).toContain('forwarded: for="[2001:db8::1]";proto=https;host=a');
    // With the request as it came in front: its bytes, then the id, then the forwarding fields; bytes after the head left out.
    const raw = Buffer.from("GET / HTTP/1.1\r\nhost: a\r\n", "latin1");
    expect(conn.head(raw, raw.length, "a", ofText("id-3")).toString("latin1")).toBe(`GET / HTTP/1.1\r\nhost: a\r\nx-request-id: id-3\r\n${fieldsOf(conn, "a", undefined)}`);
    const withBody = Buffer.concat([raw, Buffer.from("\r\nnext request bytes")]);
    expect(conn.head(withBody, raw.length, "a", undefined).toString("latin1")).toBe(`GET / HTTP/1.1\r\nhost: a\r\n${fieldsOf(conn, "a", undefined)}`);
    const withMore = Buffer.concat([raw, Buffer.alloc(1000, 0x78)]);
    expect(conn.head(withMore, raw.length, "a", ofText("id-4")).toString("latin1")).toBe(`GET / HTTP/1.1\r\nhost: a\r\nx-request-id: id-4\r\n${fieldsOf(conn, "a", undefined)}`);
    for (const extra of ["Connection: close, x-hop", "Connection: close\r\nConnection: close", "Connection: upgrade", "Connection: ", "Keep-Alive: 5", "TE: trailers", "X-Forwarded-For: 1.2.3.4", "Forwarded: for=1.2.3.4", "Transfer-Encoding: chunked"]) {
      expect(extendable(req(`POST / HTTP/1.1\r\nHost: a\r\n${extra}\r\n\r\n`))).toBe(false);
    }
    expect(extendable(req("GET / HTTP/1.0\r\nHost: a\r\n\r\n"))).toBe(false);
    expect(extendable(req("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))).toBe(false);
    expect(extendable(req("GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n"))).toBe(false);
    expect(extendable(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"))).toBe(true);
  });

  test("forwardingFor: one per client address and scheme, its text that client's", () => {
    const a = forwardingFor("192.0.2.77", "http");
    expect(forwardingFor("192.0.2.77", "http")).toBe(a);
    expect(forwardingFor("192.0.2.78", "http")).not.toBe(a);
    expect(forwardingFor("192.0.2.77", "https")).not.toBe(a);
    const text = (f: ConnectionForwarding) => f.head(new Uint8Array(0), 0, "h", undefined).toString("latin1");
    expect(text(forwardingFor("192.0.2.78", "http"))).toBe(text(new ConnectionForwarding("192.0.2.78", "http")));
    expect(text(forwardingFor("192.0.2.77", "https"))).toBe(text(new ConnectionForwarding("192.0.2.77", "https")));
    expect(text(a)).toContain("x-forwarded-for: 192.0.2.77\r\n");
  });

  test("a client's long Host (up to max_header_size) is forwarded right but its fields are not kept in the shared entry", () => {
    const f = new ConnectionForwarding("192.0.2.79", "http");
    const fresh = (host: string) => new ConnectionForwarding("192.0.2.79", "http").head(new Uint8Array(0), 0, host, undefined).toString("latin1");
    const head = (host: string) => f.head(new Uint8Array(0), 0, host, undefined).toString("latin1");
    const long = `${"a".repeat(16_000)}.example`;
    expect(head("short.example")).toBe(fresh("short.example"));
    // Each request with the long Host gets its own fields, and the kept ones stay the short Host's (16 KB not held per client).
    expect(head(long)).toBe(fresh(long));
    expect(head(long)).toBe(fresh(long));
    expect((f as unknown as { host: string }).host).toBe("short.example");
    expect(head("short.example")).toBe(fresh("short.example"));
  });

  test("one connection per request: a Connection field of just close or keep-alive is cut out, the rest goes as it came", () => {
    const conn = new ConnectionForwarding(ctx.clientIp, ctx.proto);
    const ours = conn.head(new Uint8Array(0), 0, "a", undefined).toString("latin1");
    for (const value of ["close", "Close", "CLOSE", "keep-alive", "Keep-Alive"]) {
      for (const [before, after] of [["", "Accept: */*\r\n"], ["Accept: */*\r\n", ""], ["X-A: 1\r\n", "X-B: 2\r\n"]]) {
        const text = `GET /p HTTP/1.1\r\nHost: a\r\n${before}Connection: ${value}\r\n${after}\r\n`;
        const r = req(text);
        expect(extendable(r)).toBe(true);
        const b = Buffer.from(text, "latin1");
        const want = `GET /p HTTP/1.1\r\nHost: a\r\n${before}${after}`;
        // The request alone, with a body or the next request after it (the chunk's bytes past the head are not copied).
        for (const tail of ["", "hello", "x".repeat(2000)]) {
          const chunk = Buffer.concat([b, Buffer.from(tail)]);
          expect(conn.head(chunk, text.length - 2, "a", undefined, r.connectionAt, r.connectionEnd).toString("latin1")).toBe(want + ours);
          expect(conn.head(chunk, text.length - 2, "a", ofText("id-5"), r.connectionAt, r.connectionEnd).toString("latin1")).toBe(`${want}x-request-id: id-5\r\n${ours}`);
        }
        // What the rebuilt head says, field for field (names aside, which the rebuild lower-cases).
        const spliced = req(conn.head(b, text.length - 2, "a", undefined, r.connectionAt, r.connectionEnd).toString("latin1"));
        const rebuilt = req(originRequestHead(r, ctx));
        expect(spliced.names).toEqual(rebuilt.names);
        expect(spliced.values).toEqual(rebuilt.values);
        expect(spliced.connection).toBe("");
      }
    }
  });

  test("one Content-Length reaches the origin: lists, repeats and leading zeros re-stated (RFC 9110 §8.6)", () => {
    for (const cl of ["Content-Length: 5, 5", "Content-Length: 5\r\nContent-Length: 5", "Content-Length: 005", "Content-Length: 5,"]) {
      const r = req(`POST / HTTP/1.1\r\nHost: a\r\n${cl}\r\n\r\n`);
      expect(extendable(r)).toBe(false);
      const head = originRequestHead(r, ctx);
      expect(head.match(/content-length/gi)).toEqual(["content-length"]);
      expect(head).toContain("content-length: 5\r\n");
    }
  });

  test("the normalised target is what the origin's request line says", () => {
    expect(originRequestHead(req("GET /x/%2e%2e//admin/%7euser?q=/../ HTTP/1.1\r\nHost: a\r\n\r\n"), ctx)).toStartWith("GET /admin/~user?q=/../ HTTP/1.1\r\n");
  });
});

describe("responses: one Content-Length to the client", () => {
  test("a list or a repeat is re-stated as one value", () => {
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))).toBe(true);
    for (const cl of ["Content-Length: 5, 5", "Content-Length: 5\r\nContent-Length: 5", "Content-Length: 05"]) {
      const r = res(`HTTP/1.1 200 OK\r\n${cl}\r\n\r\n`);
      expect(verbatimResponse(r)).toBe(false);
      expect(clientResponseHead(r, 1, "length", true, false).match(/content-length: 5\r\n/g)).toHaveLength(1);
    }
  });
});

describe("hop-by-hop fields (RFC 9110 §7.6.1)", () => {
  test("request: Connection and what it names, the fixed list; framing re-stated", () => {
    const head = originRequestHead(
      req("POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\nX-Keep: 2\r\n\r\n"),
      ctx,
    );
    for (const h of ["connection", "x-hop", "keep-alive", "te:", "trailer", "proxy-connection", "upgrade"]) expect(head.toLowerCase()).not.toContain(`\r\n${h}`);
    expect(head).toContain("x-keep: 2\r\n");
    expect(head.match(/transfer-encoding: chunked/g)).toHaveLength(1);
  });

  test("WebSocket: Upgrade kept and Connection: upgrade said", () => {
    const head = originRequestHead(req("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n"), { ...ctx, upgrade: true });
    expect(head).toContain("upgrade: websocket\r\nconnection: upgrade\r\n");
    expect(head).toContain("sec-websocket-key: k\r\n");
  });

  test("response: stripped, framing and connection options ours", () => {
    const r = res("HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\nX-Keep: 2\r\n\r\n");
    const to11 = clientResponseHead(r, 1, "length", true, false);
    expect(to11).toBe("HTTP/1.1 200 OK\r\nx-keep: 2\r\ncontent-length: 2\r\n\r\n");
    expect(clientResponseHead(r, 0, "length", true, false)).toBe("HTTP/1.0 200 OK\r\nx-keep: 2\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n");
    expect(clientResponseHead(r, 1, "close", false, false)).toBe("HTTP/1.1 200 OK\r\nx-keep: 2\r\nconnection: close\r\n\r\n");
  });

  test("verbatim only with nothing hop-by-hop but Connection: keep-alive", () => {
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"))).toBe(true);
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n"))).toBe(true);
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\n"))).toBe(true);
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: x\r\nContent-Length: 2\r\n\r\n"))).toBe(false);
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"))).toBe(true);
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"))).toBe(false);
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n"))).toBe(false);
    expect(verbatimResponse(res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"))).toBe(false);
    expect(verbatimResponse(res("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"))).toBe(false);
  });

  test("a closing verbatim response: its keep-alive replaced by close in place, or close added; the same fields as rebuilt", () => {
    const ka = "Connection: keep-alive\r\n";
    const heads = [
      `HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n${ka}\r\n`,
      `HTTP/1.1 200 OK\r\n${ka.toUpperCase()}Content-Length: 3\r\nX-B: 2\r\n\r\n`,
      "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: Keep-Alive\r\nX-B: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
    ];
    for (const head of heads) {
      for (const extra of ["", "x-request-id: r-1\r\n"]) {
        for (const body of ["", "ok\n", "3\r\nok\n\r\n0\r\n\r\n"]) {
          const whole = Buffer.from(head + body, "latin1");
          const r = res(head);
          expect(verbatimResponse(r)).toBe(true);
          const out = closingResponse(whole, head.length, r, extra)!;
          const headLength = head.length + out.length - whole.length;
          expect(out.subarray(headLength).toString("latin1")).toBe(body);
          const got = res(out.subarray(0, headLength).toString("latin1"));
          const framing = r.chunked ? "chunked" : "length";
          const want = res(clientResponseHead(r, 1, framing, false, false, extra));
          expect(got.status).toBe(r.status);
          expect(got.reason).toBe(r.reason);
          expect(got.connection).toBe("close");
          expect(got.names.filter((n) => n === "connection")).toHaveLength(1);
          // As the rebuild: the same fields, our Connection and extra where it puts them (order aside).
          const fields = (m: ResponseHead) => m.names.map((n, i) => `${n}: ${m.values[i]}`).sort();
          expect(fields(got)).toEqual(fields(want));
          // The origin's own lines as they came, in their order.
          const kept = head.split("\r\n").slice(1, -2).filter((l) => !/^connection:/i.test(l));
          const gotLines = out.subarray(0, headLength).toString("latin1").split("\r\n");
          expect(gotLines.filter((l) => kept.includes(l))).toEqual(kept);
        }
      }
    }
    // Two Connection fields: no splice (the head is rebuilt).
    const two = "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
    expect(closingResponse(Buffer.from(two), two.length, res(two), "")).toBeUndefined();
  });

  test("a kept-alive verbatim response with our fields: the origin's head as it came, the fields before its blank line, the body after", () => {
    const head = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\n";
    for (const body of ["", "ok\n", "ok\nHTTP/1.1 200 OK\r\n"]) {
      const extra = "x-request-id: r-1\r\n";
      const out = withFields(Buffer.from(head + body, "latin1"), head.length, extra).toString("latin1");
      expect(out).toBe(`HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n${extra}\r\n${body}`);
      const got = res(out.slice(0, head.length + extra.length));
      expect(got.values[got.names.indexOf("x-request-id")]).toBe("r-1");
    }
  });

  test("our own errors: one line, length-framed, closing", () => {
    const e = Buffer.from(errorResponse(502, "origin 10.0.0.1:80: connection refused")).toString();
    expect(e).toBe("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nconnection: close\r\n\r\norigin 10.0.0.1:80: connection refused\n");
  });
});

test("connectionTokens splits where hasToken does: the same answer for every name", () => {
  for (const list of ["", "close", "keep-alive, x-a", "x-a,,x-b", " x-a ,\tx-b\t", "a b", "closex,xclose", ","]) {
    const tokens = connectionTokens(list);
    for (const name of ["close", "keep-alive", "x-a", "x-b", "a", "b", "closex", "xclose", "x"]) expect(tokens?.has(name) ?? false).toBe(hasToken(list, name));
  }
  expect(connectionTokens("")).toBeUndefined();
  expect([...connectionTokens(" x-a ,\tx-b,,")!]).toEqual(["x-a", "x-b"]);
});
