import { describe, expect, test } from "bun:test";
import { parseAddress, parsePrefix, prefixContains } from "../config/address";
import { parsePorts } from "../config/ports";
import type { Binding } from "./binding";
import { compileBindings, serviceForPort, type PortTable } from "./compile";

function bind(service: number, prefix: string, ports: string, protocol: "tcp" | "udp" = "tcp"): Binding {
  return { protocol, prefix: parsePrefix(prefix), ports: parsePorts(ports)[0]!, service, owner: `s${service}` };
}

/** What the kernel does: longest matching prefix in the trie, then the port table. */
function resolve(tables: PortTable[], protocol: "tcp" | "udp", addr: string, port: number): number {
  const a = parseAddress(addr)!;
  const match = tables
    .filter((t) => t.protocol === protocol && prefixContains(t.prefix, a))
    .sort((x, y) => y.prefix.length - x.prefix.length)[0];
  return match ? serviceForPort(match, port) : 0;
}

describe("compileBindings", () => {
  test("longest prefix wins", () => {
    const t = compileBindings([bind(1, "10.0.0.0/8", "1-65535"), bind(2, "10.1.0.0/16", "1-65535")]);
    expect(resolve(t, "tcp", "10.1.2.3", 80)).toBe(2);
    expect(resolve(t, "tcp", "10.2.2.3", 80)).toBe(1);
    expect(resolve(t, "tcp", "11.0.0.1", 80)).toBe(0);
  });

  test("at an equal prefix the narrowest range wins", () => {
    const t = compileBindings([bind(1, "10.0.0.0/8", "1-65535"), bind(2, "10.0.0.0/8", "80-90"), bind(3, "10.0.0.0/8", "85")]);
    expect(resolve(t, "tcp", "10.0.0.1", 79)).toBe(1);
    expect(resolve(t, "tcp", "10.0.0.1", 80)).toBe(2);
    expect(resolve(t, "tcp", "10.0.0.1", 85)).toBe(3);
    expect(resolve(t, "tcp", "10.0.0.1", 91)).toBe(1);
    expect(resolve(t, "tcp", "10.0.0.1", 65535)).toBe(1);
  });

  test("a more specific prefix that does not cover the port falls back to the broader binding", () => {
    const t = compileBindings([bind(1, "10.0.0.0/8", "1-1000"), bind(2, "10.1.1.0/24", "443")]);
    expect(resolve(t, "tcp", "10.1.1.1", 443)).toBe(2);
    expect(resolve(t, "tcp", "10.1.1.1", 80)).toBe(1);
    expect(resolve(t, "tcp", "10.1.1.1", 2000)).toBe(0);
  });

  test("protocols and families stay apart", () => {
    const t = compileBindings([bind(1, "0.0.0.0/0", "53"), bind(2, "0.0.0.0/0", "53", "udp"), bind(3, "::/0", "53")]);
    expect(resolve(t, "tcp", "192.0.2.1", 53)).toBe(1);
    expect(resolve(t, "udp", "192.0.2.1", 53)).toBe(2);
    expect(resolve(t, "tcp", "2001:db8::1", 53)).toBe(3);
    expect(resolve(t, "udp", "2001:db8::1", 53)).toBe(0);
  });

  test("holes (service 0) punch through bindings, even at equal precedence", () => {
    const t = compileBindings([bind(1, "127.0.0.0/8", "1-65535"), bind(0, "127.0.0.0/8", "22"), bind(0, "127.0.0.1/32", "80"), bind(0, "127.0.0.0/8", "443")]);
    expect(resolve(t, "tcp", "127.0.0.5", 22)).toBe(0);
    expect(resolve(t, "tcp", "127.0.0.1", 80)).toBe(0);
    expect(resolve(t, "tcp", "127.0.0.2", 80)).toBe(1);
    expect(resolve(t, "tcp", "127.0.0.1", 81)).toBe(1);
  });

  test("tables are gap-free covers starting at 0 with no redundant entries", () => {
    const t = compileBindings([bind(1, "10.0.0.0/8", "1-65535")]);
    expect(t[0]!.ranges).toEqual([
      { start: 0, service: 0 },
      { start: 1, service: 1 },
    ]);
  });

  test("same binding by two services, or an ambiguous overlap, is rejected", () => {
    expect(() => compileBindings([bind(1, "10.0.0.0/8", "80"), bind(2, "10.0.0.0/8", "80")])).toThrow(/bound by both s1 and s2/);
    expect(() => compileBindings([bind(1, "10.0.0.0/8", "10-20"), bind(2, "10.0.0.0/8", "15-25")])).toThrow(/equal precedence/);
    expect(compileBindings([bind(1, "10.0.0.0/8", "80"), bind(1, "10.0.0.0/8", "80")])).toHaveLength(1);
  });

  test("matches a brute-force reference on random bindings", () => {
    let seed = 42;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const bindings: Binding[] = [];
    for (let i = 0; i < 60; i++) {
      const len = [8, 16, 24, 32][rnd(4)]!;
      const addr = `10.${rnd(2)}.${rnd(2)}.${rnd(2)}`;
      const lo = 1 + rnd(2000);
      const hi = lo + i; // distinct widths: no ambiguity by construction
      const p = parsePrefix(`${addr}/32`);
      const masked = { ...p, length: len, addr: p.addr.map((b, j) => (j * 8 < len ? b & (0xff << Math.max(0, 8 - (len - j * 8))) : 0)) };
      bindings.push({ protocol: "tcp", prefix: masked, ports: { lo, hi }, service: i + 1, owner: `s${i + 1}` });
    }
    const tables = compileBindings(bindings);
    for (let k = 0; k < 3000; k++) {
      const addr = `10.${rnd(2)}.${rnd(2)}.${rnd(2)}`;
      const port = 1 + rnd(2100);
      const a = parseAddress(addr)!;
      const best = bindings
        .filter((b) => prefixContains(b.prefix, a) && b.ports.lo <= port && port <= b.ports.hi)
        .sort((x, y) => y.prefix.length - x.prefix.length || x.ports.hi - x.ports.lo - (y.ports.hi - y.ports.lo))[0];
      expect(resolve(tables, "tcp", addr, port)).toBe(best?.service ?? 0);
    }
  });
});
