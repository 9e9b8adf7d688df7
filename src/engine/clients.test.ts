import { describe, expect, test } from "bun:test";
import { EngineClients, peerText } from "./clients";
import { encodeSockaddr } from "../system/sockaddr";
import { parseAddress } from "../config/address";
import { sockaddrString } from "../log/line";

/** accept4's sockaddr for `addr`:`port`, in the 28-byte room the engine reads it from (AcceptAddress). */
function peer(addr: string, port: number): Uint8Array {
  const a = parseAddress(addr)!;
  const out = new Uint8Array(28);
  out.set(encodeSockaddr({ family: a.length === 4 ? 4 : 6, addr: a, port }));
  return out;
}

describe("EngineClients.seenPeer", () => {
  test("the address text of IPv4 and IPv6 peers, the port left out; counted per address", () => {
    const c = new EngineClients({ now: 0 });
    expect(c.seenPeer(peer("192.0.2.7", 40000))).toBe("192.0.2.7");
    expect(c.seenPeer(peer("192.0.2.7", 40001))).toBe("192.0.2.7");
    expect(c.seenPeer(peer("10.255.0.1", 1))).toBe("10.255.0.1");
    expect(c.seenPeer(peer("2001:db8::5", 443))).toBe("2001:db8::5");
    const top = c.due(1_000)!.top;
    expect(top.find((r) => r.address === "192.0.2.7")?.connections).toBe(2);
    expect(top.find((r) => r.address === "10.255.0.1")?.connections).toBe(1);
    expect(top.find((r) => r.address === "2001:db8::5")?.connections).toBe(1);
  });

  test("past the remembered texts' bound (4096 addresses) every text is still the peer's own", () => {
    const c = new EngineClients({ now: 0 });
    // 5000 distinct addresses (the bound empties the remembered texts once), then the first ones again.
    const at = (i: number) => `198.51.${(i >> 8) & 255}.${i & 255}`;
    for (let i = 0; i < 5000; i++) expect(c.seenPeer(peer(at(i), 1024 + i))).toBe(at(i));
    for (let i = 0; i < 10; i++) expect(c.seenPeer(peer(at(i), 9))).toBe(at(i));
    // A byte that differs only in the high octets is another address, not a remembered one.
    expect(c.seenPeer(peer("199.51.0.1", 9))).toBe("199.51.0.1");
    expect(c.seenPeer(peer("198.51.0.1", 9))).toBe("198.51.0.1");
  });
});

describe("peerText (the access log's client)", () => {
  test("the same text as sockaddrString, from the address text the count remembers", () => {
    const c = new EngineClients({ now: 0 });
    for (const [addr, port] of [["192.0.2.99", 40000], ["10.0.0.1", 1], ["255.255.255.255", 65535], ["2001:db8::5", 443], ["::1", 8080], ["2001:db8:0:1:2:3:4:5", 0]] as const) {
      const sa = peer(addr, port);
      expect(peerText(c.seenPeer(sa), sa)).toBe(sockaddrString(sa)!);
    }
    expect(peerText(c.seenPeer(peer("2001:db8::5", 443)), peer("2001:db8::5", 443))).toBe("[2001:db8::5]:443");
  });
});
