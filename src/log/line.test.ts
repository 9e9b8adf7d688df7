import { describe, expect, test } from "bun:test";
import { encodeSockaddr } from "../system/sockaddr";
import { endpointString, sockaddrString, SockaddrTexts } from "./line";

describe("SockaddrTexts", () => {
  test("IPv4 and IPv6 sockaddrs as endpointString writes them, remembered within its bound", () => {
    const texts = new SockaddrTexts(2);
    const v4 = { family: 4 as const, addr: new Uint8Array([192, 0, 2, 7]), port: 5003 };
    const v6 = { family: 6 as const, addr: new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), port: 443 };
    expect(texts.text(encodeSockaddr(v4))).toBe("192.0.2.7:5003");
    expect(texts.text(encodeSockaddr(v4))).toBe(endpointString(v4));
    expect(texts.text(encodeSockaddr(v6))).toBe("[2001:db8::1]:443");
    // Port and address both key it; past its bound it starts over, still right.
    for (let port = 1; port <= 5; port++) expect(texts.text(encodeSockaddr({ ...v4, port }))).toBe(`192.0.2.7:${port}`);
    expect(texts.text(encodeSockaddr({ ...v4, addr: new Uint8Array([255, 255, 255, 255]), port: 65535 }))).toBe("255.255.255.255:65535");
    expect(texts.text(new Uint8Array(28))).toBeUndefined();
    // IPv6 too: the port and every address byte key it.
    for (let i = 0; i < 5; i++) {
      const addr = v6.addr.slice();
      addr[i * 3] = 0xff - i;
      const e = { ...v6, addr, port: 443 + (i % 2) };
      expect(texts.text(encodeSockaddr(e))).toBe(endpointString(e));
      expect(texts.text(encodeSockaddr(e))).toBe(endpointString(e));
    }
    expect(texts.text(encodeSockaddr({ ...v6, port: 8443 }))).toBe("[2001:db8::1]:8443");
    // Made each time, as endpointString writes them.
    expect(sockaddrString(encodeSockaddr({ ...v4, port: 40000 }))).toBe("192.0.2.7:40000");
    expect(sockaddrString(encodeSockaddr(v6))).toBe(endpointString(v6));
    expect(sockaddrString(new Uint8Array(28))).toBeUndefined();
  });
});
