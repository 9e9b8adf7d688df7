import { describe, expect, test } from "bun:test";
import { ClientHelloReader, HELLO_ERRORS, HELLO_LIMIT, hostName, type HelloVerdict } from "./hello";
import { CURL, CURL_TLS12, OPENSSL_A, OPENSSL_MIXED_CASE, OPENSSL_NO_SNI, OPENSSL_TLS12 } from "./hello.fixtures";

const read = (...chunks: Uint8Array[]): HelloVerdict => {
  const r = new ClientHelloReader();
  let v: HelloVerdict = { kind: "more" };
  for (const c of chunks) v = r.feed(c);
  return v;
};
const bytes = (...parts: (number | number[] | Uint8Array)[]) => Uint8Array.from(parts.flatMap((p) => (typeof p === "number" ? [p] : [...p])));
const u16 = (n: number) => [n >> 8, n & 0xff];
const u24 = (n: number) => [n >> 16, (n >> 8) & 0xff, n & 0xff];
const vec16 = (b: Uint8Array | number[]) => bytes(u16(b.length), b instanceof Uint8Array ? b : b);

/** A server_name extension's data: a ServerNameList of the given (type, name) entries. */
const serverNames = (...entries: [number, string][]) => vec16(bytes(...entries.flatMap(([t, n]) => [t, ...vec16([...Buffer.from(n, "latin1")])])));

/** A ClientHello body (RFC 8446 §4.1.2) from its parts; `extensions` undefined: none at all (a pre-TLS 1.2 hello). */
function helloBody(o: { version?: number[]; session?: number; suites?: number; compression?: number; extensions?: [number, Uint8Array][]; extLengthDelta?: number; trailing?: number } = {}): Uint8Array {
  const ext = o.extensions && bytes(...o.extensions.flatMap(([t, d]) => [...u16(t), ...u16(d.length), ...d]));
  return bytes(
    o.version ?? [3, 3],
    new Uint8Array(32).fill(7),
    o.session ?? 32,
    new Uint8Array(o.session ?? 32).fill(1),
    u16(o.suites ?? 4),
    new Uint8Array(o.suites ?? 4).fill(0x13),
    o.compression ?? 1,
    new Uint8Array(o.compression ?? 1),
    ext ? bytes(u16(ext.length + (o.extLengthDelta ?? 0)), ext) : [],
    new Uint8Array(o.trailing ?? 0),
  );
}

/** A handshake message in records of the given fragment sizes (the last takes the rest). */
function records(message: Uint8Array, sizes: number[] = [], type = 1, recordVersion = [3, 1]): Uint8Array {
  const hs = bytes(type, u24(message.length), message);
  const out: number[] = [];
  let at = 0;
  for (const size of [...sizes, hs.length]) {
    if (at >= hs.length) break;
    const frag = hs.subarray(at, Math.min(hs.length, at + size));
    out.push(22, ...recordVersion, ...u16(frag.length), ...frag);
    at += frag.length;
  }
  return Uint8Array.from(out);
}

/** The ClientHello body of a captured single-record hello (after the record and handshake headers), to re-frame. */
const messageOf = (capture: Uint8Array) => capture.subarray(9);

describe("ClientHellos from real clients", () => {
  test.each([
    ["openssl s_client (TLS 1.3)", OPENSSL_A, "a.example"],
    ["openssl s_client -tls1_2", OPENSSL_TLS12, "x.b.example"],
    ["openssl s_client -noservername", OPENSSL_NO_SNI, undefined],
    ["curl", CURL, "x.b.example"],
    ["curl --tls-max 1.2", CURL_TLS12, "mixed.case.example"],
    ["openssl, upper case and a trailing dot", OPENSSL_MIXED_CASE, "mixed.case.b.example"],
  ])("%s", (_, capture, sni) => {
    expect(read(capture)).toEqual({ kind: "hello", sni });
    // A byte at a time, the same.
    const r = new ClientHelloReader();
    for (let i = 0; i < capture.length - 1; i++) expect(r.feed(capture.subarray(i, i + 1)).kind).toBe("more");
    expect(r.feed(capture.subarray(capture.length - 1))).toEqual({ kind: "hello", sni });
    // Spread over several records (RFC 8446 §5.1 lets a handshake message span records), whatever the cut.
    for (const sizes of [[1], [3, 1, 1], [4], [40, 2, 100], [5, 5, 5, 5, 5, 5, 5]]) expect(read(records(messageOf(capture), sizes))).toEqual({ kind: "hello", sni });
  });

  test("bytes after the ClientHello (the client's next records) do not change the verdict", () => {
    const ccs = bytes(20, 3, 3, 0, 1, 1);
    expect(read(bytes(OPENSSL_A, ccs))).toEqual({ kind: "hello", sni: "a.example" });
  });
});

describe("not TLS: another protocol, sent to the default origins", () => {
  test.each([
    ["HTTP", "GET / HTTP/1.1\r\n"],
    ["SSH", "SSH-2.0-OpenSSH_9.2\r\n"],
    ["0x16 then not a TLS version", "\x16\x00\x01"],
    ["an SSLv2-framed hello", "\x80\x2e\x01\x03\x01"],
  ])("%s", (_, text) => {
    expect(read(Buffer.from(text, "latin1"))).toEqual({ kind: "not_tls" });
  });

  test("one byte 0x16 is not enough to tell", () => {
    expect(read(bytes(22))).toEqual({ kind: "more" });
    expect(read(bytes(22), bytes(3))).toEqual({ kind: "more" });
    expect(read(new Uint8Array(0))).toEqual({ kind: "more" });
  });
});

describe("refused", () => {
  const ok = helloBody({ extensions: [[0, serverNames([0, "a.example"])]] });
  const err = (reason: string) => ({ kind: "error", reason }) as HelloVerdict;

  test("the built hello itself parses (so each case below fails for its one change)", () => {
    expect(read(records(ok))).toEqual({ kind: "hello", sni: "a.example" });
    expect(read(records(helloBody()))).toEqual({ kind: "hello", sni: undefined });
    expect(read(records(helloBody({ extensions: [] })))).toEqual({ kind: "hello", sni: undefined });
  });

  test.each([
    ["an empty handshake record", bytes(22, 3, 1, 0, 0), "bad_record"],
    ["a record longer than 2^14", bytes(22, 3, 1, u16((1 << 14) + 1)), "bad_record"],
    ["record version 3.9", bytes(22, 3, 9, 0, 4, 1, 0, 0, 0), "bad_record"],
    ["a change_cipher_spec record inside the hello", bytes(records(ok, [10]).subarray(0, 15), 20, 3, 3, 0, 1, 1), "bad_record"],
    ["a ServerHello", records(ok, [], 2), "not_client_hello"],
    ["a handshake message that says 20000 bytes", bytes(22, 3, 1, 0, 4, 1, u24(20_000)), "too_long"],
    ["a second record that would end past the limit", bytes(22, 3, 1, 0, 4, 1, u24(16_000), 22, 3, 1, u16(1 << 14)), "too_long"],
    ["legacy_version 2.0", helloBodyRecords({ version: [2, 0] }), "malformed"],
    ["a 33-byte session id", helloBodyRecords({ session: 33 }), "malformed"],
    ["an odd cipher suites length", helloBodyRecords({ suites: 3 }), "malformed"],
    ["no cipher suites", helloBodyRecords({ suites: 0 }), "malformed"],
    ["no compression method", helloBodyRecords({ compression: 0 }), "malformed"],
    ["an extensions length one short", helloBodyRecords({ extensions: [[0, serverNames([0, "a.example"])]], extLengthDelta: -1 }), "malformed"],
    ["an extensions length one long", helloBodyRecords({ extensions: [[0, serverNames([0, "a.example"])]], extLengthDelta: 1 }), "malformed"],
    ["bytes after the extensions", helloBodyRecords({ extensions: [[0, serverNames([0, "a.example"])]], trailing: 1 }), "malformed"],
    ["two server_name extensions", helloBodyRecords({ extensions: [[0, serverNames([0, "a.example"])], [0, serverNames([0, "b.example"])]] }), "malformed"],
    ["two of another extension", helloBodyRecords({ extensions: [[10, bytes(0, 2, 0, 29)], [10, bytes(0, 2, 0, 29)]] }), "malformed"],
    ["a second handshake message in the hello's record", (() => { const m = bytes(1, u24(ok.length), ok, 1, 0, 0, 0); return bytes(22, 3, 1, u16(m.length), m); })(), "malformed"],
    ["two host names", helloBodyRecords({ extensions: [[0, serverNames([0, "a.example"], [0, "b.example"])]] }), "bad_server_name"],
    ["name type 1", helloBodyRecords({ extensions: [[0, serverNames([1, "a.example"])]] }), "bad_server_name"],
    ["an empty name", helloBodyRecords({ extensions: [[0, serverNames([0, ""])]] }), "bad_server_name"],
    ["an empty list", helloBodyRecords({ extensions: [[0, bytes(0, 0)]] }), "bad_server_name"],
    ["an empty extension (a server's answer)", helloBodyRecords({ extensions: [[0, new Uint8Array(0)]] }), "bad_server_name"],
    ["a NUL in the name", helloBodyRecords({ extensions: [[0, serverNames([0, "a.example\0.evil"])]] }), "bad_server_name"],
    ["a space in the name", helloBodyRecords({ extensions: [[0, serverNames([0, "a example"])]] }), "bad_server_name"],
    ["UTF-8 in the name", helloBodyRecords({ extensions: [[0, serverNames([0, "\xc3\xa9.example"])]] }), "bad_server_name"],
    ["an empty label", helloBodyRecords({ extensions: [[0, serverNames([0, "a..example"])]] }), "bad_server_name"],
    ["a list length past its extension", helloBodyRecords({ extensions: [[0, bytes(0, 20, 0, 0, 1, 97)]] }), "bad_server_name"],
  ])("%s", (_, wire, reason) => {
    expect(read(wire)).toEqual(err(reason));
    // And the same verdict a byte at a time.
    const r = new ClientHelloReader();
    let v: HelloVerdict = { kind: "more" };
    for (let i = 0; i < wire.length && v.kind === "more"; i++) v = r.feed(wire.subarray(i, i + 1));
    expect(v).toEqual(err(reason));
  });

  test(`the limit: a hello of exactly ${HELLO_LIMIT} bytes on the wire is read, one more byte is refused`, () => {
    const padded = (pad: number) => helloBody({ extensions: [[0, serverNames([0, "a.example"])], [21, new Uint8Array(pad)]] });
    const fixed = records(padded(0)).length;
    const exact = records(padded(HELLO_LIMIT - fixed));
    expect(exact.length).toBe(HELLO_LIMIT);
    expect(read(exact)).toEqual({ kind: "hello", sni: "a.example" });
    // Two records: the extra 5-byte header takes it over.
    expect(read(records(padded(HELLO_LIMIT - fixed), [100]))).toEqual({ kind: "error", reason: "too_long" });
    expect(read(records(padded(HELLO_LIMIT - fixed - 5), [100]))).toEqual({ kind: "hello", sni: "a.example" });
    // Tiny records: 6 bytes of wire per byte of hello; refused once the limit is reached, not later.
    const tiny = records(padded(4000), Array(8000).fill(1));
    const r = new ClientHelloReader();
    let at = 0;
    let v: HelloVerdict = { kind: "more" };
    while (v.kind === "more") v = r.feed(tiny.subarray(at, (at += 1000)));
    expect(v).toEqual({ kind: "error", reason: "too_long" });
    expect(at).toBeLessThanOrEqual(HELLO_LIMIT + 1000);
  });

  test("a verdict is final: more bytes do not change it", () => {
    const r = new ClientHelloReader();
    expect(r.feed(OPENSSL_A)).toEqual({ kind: "hello", sni: "a.example" });
    expect(r.feed(bytes(22, 3, 1, 0, 0))).toEqual({ kind: "hello", sni: "a.example" });
  });
});

function helloBodyRecords(o: Parameters<typeof helloBody>[0]): Uint8Array {
  return records(helloBody(o));
}

describe("hostName", () => {
  test.each([
    ["a.example", "a.example"],
    ["A.Example.", "a.example"],
    ["_acme-challenge.x-1.example", "_acme-challenge.x-1.example"],
    ["localhost", "localhost"],
    ["192.0.2.1", "192.0.2.1"],
    [`${"a".repeat(63)}.example`, `${"a".repeat(63)}.example`],
    [`${"a".repeat(64)}.example`, undefined],
    [Array(64).fill("abc").join(".").slice(0, 253), Array(64).fill("abc").join(".").slice(0, 253)],
    [`${Array(64).fill("abc").join(".").slice(0, 253)}x`, undefined],
    [".", undefined],
    ["", undefined],
    ["a..b", undefined],
    [".a", undefined],
    ["a.example..", undefined],
    ["*.example", undefined],
  ])("%s", (text, name) => {
    expect(hostName(Buffer.from(text, "latin1"))).toBe(name);
  });
});

/*
 * Fuzzing: real and built hellos, mutated the ways a hostile or broken
 * client would (bit flips, bytes set to edge values, length fields nudged,
 * cuts, insertions), fed whole and in random pieces. The reader must never
 * throw, always give one of its verdicts, give the same verdict however the
 * bytes are split, and name only the SNI a well-formed hello carries.
 */
describe("fuzz", () => {
  // xorshift32: the same cases on every run; the seed is in the test name so a failure can be replayed.
  const SEED = 0x5eed_1234;
  const ITERATIONS = 20_000;

  test(`${ITERATIONS} mutated ClientHellos (seed ${SEED.toString(16)}): no throw, a verdict, split-invariant`, () => {
    let x = SEED;
    const rand = (n: number) => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return x % n;
    };
    const seeds = [OPENSSL_A, OPENSSL_TLS12, OPENSSL_NO_SNI, CURL, CURL_TLS12, OPENSSL_MIXED_CASE, records(messageOf(CURL), [7, 300])];
    const kinds = new Map<string, number>();
    const started = performance.now();
    for (let i = 0; i < ITERATIONS; i++) {
      const b = [...seeds[rand(seeds.length)]!];
      for (let m = 1 + rand(4); m > 0 && b.length > 0; m--) {
        const at = rand(b.length);
        switch (rand(6)) {
          case 0:
            b[at]! ^= 1 << rand(8);
            break;
          case 1:
            b[at] = [0, 1, 0x7f, 0x80, 0xff][rand(5)]!;
            break;
          case 2:
            // A length field's low byte nudged by ±1..3.
            b[at] = (b[at]! + [1, 2, 3, 253, 254, 255][rand(6)]!) & 0xff;
            break;
          case 3:
            b.length = at;
            break;
          case 4:
            b.splice(at, 0, ...Array.from({ length: 1 + rand(8) }, () => rand(256)));
            break;
          default:
            b.splice(at, 1 + rand(8));
        }
      }
      const wire = Uint8Array.from(b);
      let whole: HelloVerdict;
      try {
        whole = read(wire);
      } catch (e) {
        throw new Error(`iteration ${i}: threw ${e} on ${Buffer.from(wire).toString("hex")}`);
      }
      kinds.set(whole.kind === "error" ? whole.reason : whole.kind, (kinds.get(whole.kind === "error" ? whole.reason : whole.kind) ?? 0) + 1);
      expect(["more", "not_tls", "hello", "error"]).toContain(whole.kind);
      if (whole.kind === "error") expect(HELLO_ERRORS).toContain(whole.reason);
      if (whole.kind === "hello" && whole.sni !== undefined) expect(hostName(Buffer.from(whole.sni))).toBe(whole.sni);
      // Split at random points: the same verdict.
      const pieces: Uint8Array[] = [];
      for (let at = 0; at < wire.length; ) {
        const n = 1 + rand(64);
        pieces.push(wire.subarray(at, at + n));
        at += n;
      }
      const split = read(...pieces);
      if (JSON.stringify(split) !== JSON.stringify(whole)) throw new Error(`iteration ${i}: split ${JSON.stringify(split)} vs whole ${JSON.stringify(whole)} on ${Buffer.from(wire).toString("hex")}`);
    }
    // The mutations reach the parser's every outcome, not only the first check.
    for (const k of ["more", "hello", "not_tls", "bad_record", "malformed", "bad_server_name", "not_client_hello"]) expect(kinds.get(k) ?? 0).toBeGreaterThan(0);
    console.log(`fuzz: ${ITERATIONS} in ${Math.round(performance.now() - started)} ms: ${JSON.stringify(Object.fromEntries(kinds))}`);
  }, 60_000);
});
