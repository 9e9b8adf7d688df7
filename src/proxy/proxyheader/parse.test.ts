import { describe, expect, test } from "bun:test";
import { formatAddress, parseAddress } from "../../config/address";
import { proxyV1Header, proxyV2Header } from "./encode";
import { parseProxyHeader, V1_MAX, V2_MAX_LENGTH, type ParseResult } from "./parse";

const v4 = (a: string, port: number) => ({ family: 4 as const, addr: parseAddress(a)!, port });
const v6 = (a: string, port: number) => ({ family: 6 as const, addr: parseAddress(a)!, port });
const bytes = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));
const hex = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ""), "hex"));
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
const SIG = "0d0a0d0a000d0a515549540a";

/** "src:port > dst:port +consumed", "need-more", "error:reason" or "done +consumed" (real addresses kept). */
function show(r: ParseResult): string {
  if (r.kind === "need-more") return "need-more";
  if (r.kind === "error") return `error:${r.reason}`;
  if (!r.addresses) return `v${r.version} keep +${r.consumed}`;
  const { src, dst } = r.addresses;
  return `v${r.version} ${formatAddress(src.addr)}:${src.port} > ${formatAddress(dst.addr)}:${dst.port} +${r.consumed}`;
}
const parse = (d: Uint8Array | string) => show(parseProxyHeader(typeof d === "string" ? bytes(d) : d));

describe("v1 (§2.1)", () => {
  test("TCP4 and TCP6 lines; the payload after CRLF is not consumed", () => {
    expect(parse("PROXY TCP4 198.51.100.1 192.0.2.53 40000 443\r\nGET /")).toBe("v1 198.51.100.1:40000 > 192.0.2.53:443 +46");
    expect(parse("PROXY TCP6 2001:db8::1 2001:DB8:0:0:0:0:0:2 0 65535\r\n")).toBe("v1 2001:db8::1:0 > 2001:db8::2:65535 +53");
    // IPv4-mapped addresses come out unmapped.
    expect(parse("PROXY TCP6 ::ffff:c633:6401 ::ffff:c000:235 1 2\r\n")).toBe("v1 198.51.100.1:1 > 192.0.2.53:2 +49");
  });

  test("UNKNOWN keeps the socket's addresses, whatever follows it on the line", () => {
    expect(parse("PROXY UNKNOWN\r\n")).toBe("v1 keep +15");
    expect(parse("PROXY UNKNOWN ffff:: ffff:: 65535 65535\r\nrest")).toBe("v1 keep +41");
  });

  test("the worst-case 107-byte line is accepted; no CRLF within 107 bytes is too long", () => {
    const full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const worst = `PROXY UNKNOWN ${full} ${full} 65535 65535\r\n`;
    expect(worst.length).toBe(V1_MAX);
    expect(parse(worst)).toBe(`v1 keep +${V1_MAX}`);
    expect(parse(`PROXY UNKNOWN ${full} ${full} 655350 65535\r\n`)).toBe("error:too_long");
    expect(parse("PROXY TCP4 " + "1".repeat(200))).toBe("error:too_long");
  });

  test("partial lines need more, at every cut", () => {
    const line = "PROXY TCP4 198.51.100.1 192.0.2.53 40000 443\r\n";
    for (let i = 1; i < line.length; i++) expect(parse(line.slice(0, i))).toBe("need-more");
  });

  test.each([
    ["lower-case keyword", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "error:signature"],
    ["no space after PROXY", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "error:signature"],
    ["unknown protocol", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "error:malformed"],
    ["double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "error:malformed"],
    ["missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "error:malformed"],
    ["extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "error:malformed"],
    ["trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "error:malformed"],
    ["leading zero in address", "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "error:malformed"],
    ["octet over 255", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "error:malformed"],
    ["IPv6 address in TCP4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "error:malformed"],
    ["IPv4 address in TCP6", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "error:malformed"],
    ["dotted IPv6 tail", "PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n", "error:malformed"],
    ["bracketed IPv6", "PROXY TCP6 [::1] ::1 1 2\r\n", "error:malformed"],
    ["two ::", "PROXY TCP6 1::2::3 ::1 1 2\r\n", "error:malformed"],
    ["port over 65535", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "error:malformed"],
    ["leading zero in port", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "error:malformed"],
    ["negative port", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "error:malformed"],
    ["LF alone", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "error:malformed"],
    ["CR alone", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "error:malformed"],
    ["NUL inside", "PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n", "error:malformed"],
    ["8-bit byte", "PROXY TCP4 1.2.3.4 5.6.7.\xb8 1 2\r\n", "error:malformed"],
    ["HTTP instead", "GET / HTTP/1.1\r\n", "error:signature"],
  ])("refused: %s", (_name, line, want) => {
    expect(parse(line)).toBe(want);
  });
});

describe("v2 (§2.2)", () => {
  test("PROXY over TCP/IPv4 and IPv6, as our encoder writes it", () => {
    const h4 = proxyV2Header(v4("198.51.100.1", 40000), v4("192.0.2.53", 443), "stream");
    expect(parse(cat(h4, bytes("payload")))).toBe("v2 198.51.100.1:40000 > 192.0.2.53:443 +28");
    const h6 = proxyV2Header(v6("2001:db8::1", 1), v6("2001:db8::2", 2), "stream");
    expect(parse(h6)).toBe("v2 2001:db8::1:1 > 2001:db8::2:2 +52");
  });

  test("TLVs are skipped and consumed; ones that do not tile the block are refused", () => {
    // AF_INET STREAM, length 12 + (3+4) + (3+0): PP2_TYPE_AUTHORITY "a.io", PP2_TYPE_NOOP.
    const good = hex(`${SIG} 21 11 0013 c6336401 c0000235 9c40 01bb 02 0004 612e696f 04 0000`);
    expect(parse(good)).toBe("v2 198.51.100.1:40000 > 192.0.2.53:443 +35");
    const overrun = hex(`${SIG} 21 11 0013 c6336401 c0000235 9c40 01bb 02 0005 612e696f 04 0000`);
    expect(parse(overrun)).toBe("error:malformed");
    const stray = hex(`${SIG} 21 11 000e c6336401 c0000235 9c40 01bb 0400`);
    expect(parse(stray)).toBe("error:malformed");
  });

  test("LOCAL, AF_UNSPEC and AF_UNIX keep the socket's addresses; the length field is always honoured", () => {
    expect(parse(hex(`${SIG} 20 00 0000`))).toBe("v2 keep +16");
    expect(parse(hex(`${SIG} 20 11 000c c6336401 c0000235 9c40 01bb`))).toBe("v2 keep +28");
    expect(parse(hex(`${SIG} 21 00 0003 010203`))).toBe("v2 keep +19");
    expect(parse(cat(hex(`${SIG} 21 31 00d8`), new Uint8Array(216)))).toBe("v2 keep +232");
  });

  test("partial headers need more, at every cut", () => {
    const h = proxyV2Header(v6("2001:db8::1", 1), v6("2001:db8::2", 2), "stream");
    for (let i = 1; i < h.length; i++) expect(show(parseProxyHeader(h.subarray(0, i)))).toBe("need-more");
  });

  test.each([
    ["version 1", `${SIG} 11 11 000c c6336401 c0000235 9c40 01bb`, "error:malformed"],
    ["version 3", `${SIG} 31 11 000c c6336401 c0000235 9c40 01bb`, "error:malformed"],
    ["command 2", `${SIG} 22 11 000c c6336401 c0000235 9c40 01bb`, "error:malformed"],
    ["family 4", `${SIG} 21 41 000c c6336401 c0000235 9c40 01bb`, "error:malformed"],
    ["transport 3", `${SIG} 21 13 000c c6336401 c0000235 9c40 01bb`, "error:malformed"],
    ["DGRAM on a stream socket", `${SIG} 21 12 000c c6336401 c0000235 9c40 01bb`, "error:malformed"],
    ["length shorter than AF_INET's block", `${SIG} 21 11 000b c6336401 c0000235 9c40 01`, "error:malformed"],
    ["length shorter than AF_INET6's block", `${SIG} 21 21 000c c6336401 c0000235 9c40 01bb`, "error:malformed"],
    ["length beyond our cap", `${SIG} 21 11 ffff`, "error:too_long"],
    ["bad signature byte", `0d0a0d0a000d0a515549540b 21 11 000c c6336401 c0000235 9c40 01bb`, "error:signature"],
  ])("refused: %s", (_name, h, want) => {
    expect(parse(hex(h))).toBe(want);
  });

  test("the cap is exact: V2_MAX_LENGTH is accepted (as TLVs), one more is not", () => {
    const tlv = new Uint8Array(V2_MAX_LENGTH - 12);
    tlv[0] = 0x04; // PP2_TYPE_NOOP
    tlv[1] = (tlv.length - 3) >> 8;
    tlv[2] = (tlv.length - 3) & 0xff;
    const lenHex = V2_MAX_LENGTH.toString(16).padStart(4, "0");
    expect(parse(cat(hex(`${SIG} 21 11 ${lenHex} c6336401 c0000235 9c40 01bb`), tlv))).toBe(`v2 198.51.100.1:40000 > 192.0.2.53:443 +${16 + V2_MAX_LENGTH}`);
    expect(parse(hex(`${SIG} 21 11 ${(V2_MAX_LENGTH + 1).toString(16).padStart(4, "0")}`))).toBe("error:too_long");
  });
});

describe("fuzz-ish", () => {
  // A deterministic generator, so a failure reproduces.
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const valid = [
    proxyV1Header(v4("198.51.100.1", 40000), v4("192.0.2.53", 443)),
    proxyV1Header(v6("2001:db8::1", 1), v6("2001:db8::2", 65535)),
    proxyV2Header(v4("198.51.100.1", 40000), v4("192.0.2.53", 443), "stream"),
    proxyV2Header(v6("2001:db8::1", 1), v6("2001:db8::2", 2), "stream"),
    hex(`${SIG} 21 11 0013 c6336401 c0000235 9c40 01bb 02 0004 612e696f 04 0000`),
  ];

  test("20000 mutated headers (flipped, inserted, deleted bytes; random tails): never throws, never consumes beyond the input", () => {
    const tally = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      const base = [...valid[rnd(valid.length)]!];
      for (let m = 1 + rnd(4); m > 0; m--) {
        const at = rnd(base.length + 1);
        const op = rnd(3);
        if (op === 0 && at < base.length) base[at] = rnd(256);
        else if (op === 1) base.splice(at, 0, rnd(256));
        else base.splice(at, 1);
      }
      const input = new Uint8Array([...base, ...Array.from({ length: rnd(8) }, () => rnd(256))]);
      const r = parseProxyHeader(input);
      tally.set(r.kind, (tally.get(r.kind) ?? 0) + 1);
      if (r.kind === "done") {
        expect(r.consumed).toBeLessThanOrEqual(input.length);
        expect(r.consumed).toBeGreaterThanOrEqual(15);
        // What is accepted round-trips: the same header alone parses the same.
        expect(show(parseProxyHeader(input.subarray(0, r.consumed)))).toBe(show(r));
      }
    }
    // Every outcome shows up, so the mutations exercised the parser and not only its first check.
    expect(tally.get("error")! > 1000 && tally.get("done")! > 100 && tally.get("need-more")! > 100).toBe(true);
  });

  test("random bytes after either signature are refused or need more; they are never taken as addresses by luck alone", () => {
    for (let i = 0; i < 5_000; i++) {
      const junk = Array.from({ length: rnd(120) }, () => rnd(256));
      const r = parseProxyHeader(new Uint8Array([...bytes("PROXY "), ...junk]));
      // Random bytes all but never form a valid line; if they do it must be a syntactically exact one.
      if (r.kind === "done") expect(Buffer.from(junk).toString("latin1")).toMatch(/^(UNKNOWN|TCP[46] \S+ \S+ \d+ \d+)/);
      else expect(r.kind === "error" || r.kind === "need-more").toBe(true);
    }
  });
});
