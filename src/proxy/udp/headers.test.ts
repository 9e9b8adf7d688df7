import { expect, test } from "bun:test";
import { parseAddress } from "../../config/address";
import { hasSppHeader, proxyV2Header, SPP_HEADER_SIZE, sppHeader } from "./headers";

const v4 = (a: string, port: number) => ({ family: 4 as const, addr: parseAddress(a)!, port });
const v6 = (a: string, port: number) => ({ family: 6 as const, addr: parseAddress(a)!, port });

test("PROXY v2 over UDP/IPv4: signature, PROXY command, AF_INET+DGRAM, 12 address bytes", () => {
  const h = proxyV2Header(v4("198.51.100.1", 40000), v4("192.0.2.53", 53));
  expect(Buffer.from(h).toString("hex")).toBe(
    "0d0a0d0a000d0a515549540a" + "21" + "12" + "000c" + "c6336401" + "c0000235" + "9c40" + "0035",
  );
});

test("PROXY v2 over UDP/IPv6: AF_INET6+DGRAM, 36 address bytes, 52 in all", () => {
  const h = proxyV2Header(v6("2001:db8::1", 1), v6("2001:db8::2", 2));
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
