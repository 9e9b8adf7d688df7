import { describe, expect, test } from "bun:test";
import { ChunkedDecoder, MAX_CHUNK_LINE, reframe } from "./chunked";

/** Feed `body` in pieces of `step` bytes, re-framing as conn.ts does; the origin's bytes, or the error. */
function through(body: string, step = body.length, maxTrailer = 1024): { out: string; consumed: number; done: boolean } | string {
  const d = new ChunkedDecoder(maxTrailer);
  const b = Buffer.from(body, "latin1");
  let out = "";
  let consumed = 0;
  for (let i = 0; i < b.length && !d.done; i += step) {
    const runs: Uint8Array[] = [];
    const n = d.feed(b.subarray(i, Math.min(b.length, i + step)), 0, (x) => runs.push(x));
    if (n < 0) return d.error;
    consumed += n;
    out += Buffer.from(reframe(runs, d.done)).toString("latin1");
  }
  return { out, consumed, done: d.done };
}

describe("chunked request bodies re-framed (RFC 9112 §7.1)", () => {
  test("extensions and trailers are dropped; the origin gets canonical chunks, one per read", () => {
    const body = "4;a=1;b=\"x;y\"\r\nWiki\r\n5 ;ext\r\npedia\r\n000\r\nX-Trailer: 1\r\nX-Other:\tv a l\r\n\r\nNEXT";
    const one = through(body);
    expect(one).toEqual({ out: "9\r\nWikipedia\r\n0\r\n\r\n", consumed: body.length - 4, done: true });
    // Byte by byte: one chunk per data byte, the same data.
    const slow = through(body, 1) as { out: string; done: boolean };
    expect(slow.done).toBe(true);
    expect(slow.out).toStartWith("1\r\nW\r\n1\r\ni\r\n");
    expect(slow.out).toEndWith("1\r\na\r\n0\r\n\r\n");
    expect(slow.out).not.toContain("X-Trailer");
    // Upper-case hex and leading zeros are read right; the origin gets lower-case hex.
    expect(through(`00A\r\n${"x".repeat(10)}\r\n0\r\n\r\n`)).toMatchObject({ out: `a\r\n${"x".repeat(10)}\r\n0\r\n\r\n` });
  });

  test.each([
    ["junk after the size", "5 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"],
    ["TAB junk after the size", "5\tX\r\nhello\r\n0\r\n\r\n", "invalid chunk size"],
    ["BWS without an extension", "5 \r\nhello\r\n0\r\n\r\n", "invalid chunk size"],
    ["a sign", "+5\r\nhello\r\n0\r\n\r\n", "missing chunk size"],
    ["0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"],
    ["14 hex digits", "00000000000005\r\nhello\r\n0\r\n\r\n", "chunk size too large"],
    ["a bare LF after the size", "5\nhello\r\n0\r\n\r\n", "invalid chunk size"],
    ["a bare CR after the size", "5\rhello\r\n0\r\n\r\n", "chunk size line not ended by CRLF"],
    ["LF in an extension", "5;a\nb\r\nhello\r\n0\r\n\r\n", "invalid chunk extension"],
    ["NUL in an extension", "5;a\0\r\nhello\r\n0\r\n\r\n", "invalid chunk extension"],
    ["data longer than its size", "5\r\nhello!\r\n0\r\n\r\n", "chunk data not followed by CRLF"],
    ["a request in the trailer section", "0\r\nGET /SMUGGLED HTTP/1.1\r\nHost: a\r\n\r\n", "invalid trailer field name"],
    ["obs-fold in a trailer", "0\r\nX: a\r\n b\r\n\r\n", "obs-fold in trailer section"],
    ["space before a trailer colon", "0\r\nX : a\r\n\r\n", "invalid trailer field name"],
    ["NUL in a trailer", "0\r\nX: a\0b\r\n\r\n", "invalid character in trailer field"],
    ["bare CR in a trailer", "0\r\nX: a\rb\r\n\r\n", "trailer line not ended by CRLF"],
    ["bare LF ending", "0\r\n\n", "invalid trailer line"],
  ])("refused: %s", (_name, body, why) => {
    for (const step of [1, 7, body.length]) expect(through(body, step)).toBe(why);
  });

  test("extensions and trailer sections are bounded", () => {
    expect(through(`5;${"e".repeat(MAX_CHUNK_LINE)}\r\nhello\r\n0\r\n\r\n`)).toBe("chunk extension too long");
    expect(through(`5;${"e".repeat(MAX_CHUNK_LINE - 10)}\r\nhello\r\n0\r\n\r\n`)).toMatchObject({ out: "5\r\nhello\r\n0\r\n\r\n" });
    expect(through(`0\r\nX: ${"v".repeat(2000)}\r\n\r\n`, 100, 1024)).toBe("trailer section too large");
  });

  test("reframe: nothing to send, only the last chunk, several runs in one chunk", () => {
    expect(reframe([], false).length).toBe(0);
    expect(Buffer.from(reframe([], true)).toString()).toBe("0\r\n\r\n");
    expect(Buffer.from(reframe([Buffer.from("ab"), Buffer.from("c".repeat(20))], false)).toString()).toBe(`16\r\nab${"c".repeat(20)}\r\n`);
  });
});

describe("the body limit counts every byte of a chunked body", () => {
  test("framing, extensions and trailers count; the error says too large", () => {
    const body = Buffer.from(`1\r\nx\r\n0\r\n${`X-T: ${"t".repeat(100)}\r\n`.repeat(20)}\r\n`);
    for (const step of [1, 50, body.length]) {
      const d = new ChunkedDecoder(1 << 20, 1024);
      let r = 0;
      for (let i = 0; i < body.length && r >= 0; i += step) r = d.feed(body.subarray(i, i + step), 0);
      expect(r).toBe(-1);
      expect(d.tooLarge).toBe(true);
      expect(d.bytes).toBe(1025); // read one byte past the limit, no more
    }
    // Exactly at the limit is fine.
    const exact = Buffer.from(`5\r\nhello\r\n0\r\n\r\n`);
    const d = new ChunkedDecoder(1024, exact.length);
    expect(d.feed(exact, 0)).toBe(exact.length);
    expect(d.done).toBe(true);
  });
});
