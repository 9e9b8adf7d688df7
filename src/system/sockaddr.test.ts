import { expect, test } from "bun:test";
import { parseAddress } from "../config/address";
import { decodeSockaddr, encodeSockaddr } from "./sockaddr";

test("sockaddr_in: family in host order, port in network order, address at offset 4", () => {
  const b = encodeSockaddr({ family: 4, addr: parseAddress("192.0.2.7")!, port: 0x1234 });
  expect([...b]).toEqual([2, 0, 0x12, 0x34, 192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
  expect(decodeSockaddr(b)).toEqual({ family: 4, addr: parseAddress("192.0.2.7")!, port: 0x1234 });
});

test("sockaddr_in6: address at offset 8, 28 bytes, round trip", () => {
  const addr = parseAddress("2001:db8::42")!;
  const b = encodeSockaddr({ family: 6, addr, port: 53 });
  expect(b.length).toBe(28);
  expect(b[0]).toBe(10);
  expect([...b.slice(8, 24)]).toEqual([...addr]);
  expect(decodeSockaddr(b)).toEqual({ family: 6, addr, port: 53 });
  expect(decodeSockaddr(new Uint8Array(28))).toBeUndefined();
});
