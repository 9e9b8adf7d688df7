import { expect, test } from "bun:test";
import { parseAddress } from "../../config/address";
import { hasSppHeader, proxyV1Header, proxyV2Header, SPP_HEADER_SIZE, sppHeader } from "./encode";

const v4 = (a: string, port: number) => ({ family: 4 as const, addr: parseAddress(a)!, port });
const v6 = (a: string, port: number) => ({ family: 6 as const, addr: parseAddress(a)!, port });

test("PROXY v2 over UDP/IPv4: signature, PROXY command, AF_INET+DGRAM, 12 address bytes", () => {
  const h = proxyV2Header(v4("198.51.100.1", 40000), v4("192.0.2.53", 53), "dgram");
  expect(Buffer.from(h).toString("hex")).toBe(
    "0d0a0d0a000d0a515549540a" + "21" + "12" + "000c" + "c6336401" + "c0000235" + "9c40" + "0035",
  );
});

test("PROXY v2 over UDP/IPv6: AF_INET6+DGRAM, 36 address bytes, 52 in all", () => {
  const h = proxyV2Header(v6("2001:db8::1", 1), v6("2001:db8::2", 2), "dgram");
  expect(h.length).toBe(52);
  expect([h[12], h[13], h[14], h[15]]).toEqual([0x21, 0x22, 0, 36]);
  expect([...h.slice(48)]).toEqual([0, 1, 0, 2]);
});

test("SPP: magic, IPv4-mapped addresses, ports, 38 bytes", () => {
  const h = sppHeader(v4("198.51.100.1", 40000), v4("192.0.2.53", 53));
  expect(h.length).toBe(SPP_HEADER_SIZE);
  expect(Buffer.from(h).toString("hex")).toBe(
    "56ec" + "00000000000000000000ffffc6336401" + "00000000000000000000ffffc0000235" + "9c40" + "0035",
  );
  expect(hasSppHeader(h, 0, h.length)).toBe(true);
  expect(hasSppHeader(h, 0, 37)).toBe(false);
  expect(hasSppHeader(new Uint8Array(38), 0, 38)).toBe(false);
});

test("PROXY v1 over TCP/IPv4 (§2.1): one line, single spaces, CRLF", () => {
  const h = proxyV1Header(v4("198.51.100.1", 40000), v4("192.0.2.53", 443));
  expect(Buffer.from(h).toString("latin1")).toBe("PROXY TCP4 198.51.100.1 192.0.2.53 40000 443\r\n");
});

test("PROXY v1 over TCP/IPv6: compressed lower-case addresses; the longest line fits in 104 bytes", () => {
  expect(Buffer.from(proxyV1Header(v6("2001:db8::1", 1), v6("2001:DB8::a:0:0:2", 65535))).toString()).toBe("PROXY TCP6 2001:db8::1 2001:db8::a:0:0:2 1 65535\r\n");
  const full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const h = proxyV1Header(v6(full, 65535), v6(full, 65535));
  expect(h.length).toBe(104);
});

test("IPv4-mapped IPv6 ends are unmapped: TCP4 in v1, AF_INET in v2", () => {
  const c = v6("::ffff:198.51.100.1", 40000);
  const e = v6("::ffff:192.0.2.53", 80);
  expect(Buffer.from(proxyV1Header(c, e)).toString()).toBe("PROXY TCP4 198.51.100.1 192.0.2.53 40000 80\r\n");
  const h = proxyV2Header(c, e, "stream");
  expect([h[13], h.length]).toEqual([0x11, 28]);
});

test("mixed families (an IPv4 client named by a balancer, an IPv6 edge) are both written as IPv6", () => {
  const h = proxyV2Header(v4("198.51.100.1", 1), v6("2001:db8::2", 2), "stream");
  expect([h[13], h.length]).toEqual([0x21, 52]);
  expect(Buffer.from(h.subarray(16, 32)).toString("hex")).toBe("00000000000000000000ffffc6336401");
  expect(Buffer.from(proxyV1Header(v4("198.51.100.1", 1), v6("2001:db8::2", 2))).toString()).toBe("PROXY TCP6 ::ffff:c633:6401 2001:db8::2 1 2\r\n");
});

test("PROXY v2 over TCP/IPv4 and IPv6: AF_INET/AF_INET6 + STREAM", () => {
  const h4 = proxyV2Header(v4("198.51.100.1", 40000), v4("192.0.2.53", 443), "stream");
  expect(Buffer.from(h4).toString("hex")).toBe("0d0a0d0a000d0a515549540a" + "21" + "11" + "000c" + "c6336401" + "c0000235" + "9c40" + "01bb");
  const h6 = proxyV2Header(v6("2001:db8::1", 1), v6("2001:db8::2", 2), "stream");
  expect([h6[12], h6[13], h6[14], h6[15], h6.length]).toEqual([0x21, 0x21, 0, 36, 52]);
});
