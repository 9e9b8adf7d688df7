import { describe, expect, test } from "bun:test";
import { formatAddress, formatPrefix, parseAddress, parsePrefix, prefixContains } from "./address";

describe("parsePrefix", () => {
  test("IPv4 and IPv6 prefixes, bare addresses are host prefixes", () => {
    expect(formatPrefix(parsePrefix("192.0.2.0/24"))).toBe("192.0.2.0/24");
    expect(parsePrefix("127.0.0.1").length).toBe(32);
    expect(formatPrefix(parsePrefix("2001:db8::/64"))).toBe("2001:db8::/64");
    expect(parsePrefix("::1/128").addr[15]).toBe(1);
    expect(parsePrefix("0.0.0.0/0").length).toBe(0);
    expect(formatPrefix(parsePrefix("::ffff:192.0.2.1/128"))).toBe("::ffff:c000:201/128");
  });
  test.each(["10.0.0.0/33", "::/129", "garbage", "1.2.3", "1.2.3.4.5", "256.0.0.0/8", "1::2::3", "10.0.0.0/-1", "010.0.0.0/8", "fe80::1%eth0"])(
    "rejects %p with one line",
    (text) => {
      expect(() => parsePrefix(text)).toThrow(/prefix/);
    },
  );
  test("host bits set is an error that suggests the network", () => {
    expect(() => parsePrefix("192.0.2.1/24")).toThrow(/192\.0\.2\.0\/24/);
  });
});

describe("addresses", () => {
  test("RFC 5952 formatting", () => {
    expect(formatAddress(parseAddress("2001:0db8:0:0:1:0:0:1")!)).toBe("2001:db8::1:0:0:1");
    expect(formatAddress(parseAddress("::")!)).toBe("::");
    expect(formatAddress(parseAddress("[::1]")!)).toBe("::1");
  });
  test("containment", () => {
    expect(prefixContains(parsePrefix("192.0.2.0/24"), parseAddress("192.0.2.77")!)).toBe(true);
    expect(prefixContains(parsePrefix("192.0.2.0/25"), parseAddress("192.0.2.200")!)).toBe(false);
    expect(prefixContains(parsePrefix("192.0.2.0/24"), parseAddress("::1")!)).toBe(false);
  });
});

// parseIPv4 scans characters (it runs per accepted connection): it accepts exactly what the split-and-match reading did.
test("IPv4 parsing accepts exactly dotted quads of 0-255 without leading zeros", () => {
  const reference = (text: string): number[] | undefined => {
    const parts = text.split(".");
    if (parts.length !== 4) return undefined;
    const out: number[] = [];
    for (const p of parts) {
      if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === "0")) return undefined;
      if (Number(p) > 255) return undefined;
      out.push(Number(p));
    }
    return out;
  };
  const cases = ["0.0.0.0", "192.0.2.10", "255.255.255.255", "256.0.0.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1..3.4", ".1.2.3", "1.2.3.", "1.2.3.4 ", "1.2.3.a", "1000.1.1.1", "00.1.1.1", "0.10.100.199", "١.2.3.4", ""];
  const alphabet = "0123459.a";
  for (let i = 0; i < 20000; i++) {
    let s = "";
    const n = 1 + Math.floor(Math.random() * 15);
    for (let j = 0; j < n; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
    cases.push(s);
  }
  for (const c of cases) {
    const got = parseAddress(c);
    const want = reference(c);
    expect([c, got ? [...got] : undefined]).toEqual([c, want]);
  }
});
