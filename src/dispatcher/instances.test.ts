import { describe, expect, test } from "bun:test";
import { parsePrefix } from "../config/address";
import { overlaps, type WantedBinding } from "./controlplane";
import { checkInstance } from "../config/service";
import { decodeRecord, encodeRecord, leaderAlive, leaderOf, startTime, type InstanceRecord } from "./instances";

const b = (prefix: string, lo: number, hi = lo, protocol: "tcp" | "udp" = "tcp"): WantedBinding => ({ protocol, prefix: parsePrefix(prefix), lo, hi });

describe("instances", () => {
  test("records round-trip; long strings are cut, not overflowed", () => {
    const r: InstanceRecord = { name: "edge", pid: 4242, pidns: 4026531836n, start: 123456789n, flags: 1, byPid: 7, by: "new", config: "/etc/edgeproxy/edge.toml", admin: "x".repeat(300) };
    const back = decodeRecord("edge", encodeRecord(r));
    expect({ ...back, admin: "" }).toEqual({ ...r, admin: "" });
    expect(back.admin).toBe("x".repeat(159));
  });

  test("this process is its own live leader; a pid with another start time is not", () => {
    const me = leaderOf(process.pid);
    expect(me.start).toBe(startTime(process.pid)!);
    expect(leaderAlive(me)).toBe(true);
    expect(leaderAlive({ ...me, start: me.start + 1n })).toBe(false);
    // Another PID namespace: pids mean nothing here, the caller decides from sockets.
    expect(leaderAlive({ ...me, pidns: me.pidns + 1n })).toBeUndefined();
    expect(startTime(2 ** 22 + 1)).toBeUndefined();
  });

  test("names fit a record's key (63 bytes and its NUL)", () => {
    expect(checkInstance("edge-1.v2", "instance")).toBe("edge-1.v2");
    expect(checkInstance("x".repeat(63), "instance")).toBe("x".repeat(63));
    for (const bad of ["", "a/b", "..", ".hidden", "-x", "x".repeat(64), "a b"]) expect(() => checkInstance(bad, "instance")).toThrow();
  });

  test("overlap: same protocol and family, intersecting prefixes and ports", () => {
    expect(overlaps(b("192.0.2.0/24", 8000, 8999), b("192.0.2.7/32", 8999))).toBe(true);
    expect(overlaps(b("0.0.0.0/0", 80), b("198.51.100.1/32", 80))).toBe(true);
    expect(overlaps(b("192.0.2.0/24", 8000, 8999), b("192.0.2.0/24", 9000))).toBe(false);
    expect(overlaps(b("192.0.2.0/25", 80), b("192.0.2.128/25", 80))).toBe(false);
    expect(overlaps(b("192.0.2.0/24", 80), b("192.0.2.0/24", 80, 80, "udp"))).toBe(false);
    expect(overlaps(b("::/0", 80), b("192.0.2.0/24", 80))).toBe(false);
    expect(overlaps(b("2001:db8::/64", 1, 65535), b("2001:db8::1/128", 443))).toBe(true);
  });
});
