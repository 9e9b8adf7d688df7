import { describe, expect, test } from "bun:test";
import { normalizePath, normalizeTarget, splitAbsolute } from "./target";

describe("path normalisation (RFC 3986 §6.2.2)", () => {
  test.each([
    ["/admin", "/admin"],
    ["/x/../admin", "/admin"],
    ["/./admin", "/admin"],
    ["//admin", "/admin"],
    ["/%61dmin", "/admin"],
    ["/%2e%2e/admin", "/admin"],
    ["/a/%2E/b", "/a/b"],
    ["/a/b/../../../../c", "/c"],
    ["/a/.", "/a/"],
    ["/a/..", "/"],
    ["/a//", "/a/"],
    ["/", "/"],
    ["/.", "/"],
    ["/..", "/"],
    ["/a/b/", "/a/b/"],
    ["/.well-known/x", "/.well-known/x"],
    ["/a..b/..c/", "/a..b/..c/"],
    // Reserved and other octets stay encoded, upper-cased: "%2F" is data, not a separator.
    ["/a%2fb/../c", "/c"],
    ["/a%2fb", "/a%2Fb"],
    ["/x%2F..%2Fadmin", "/x%2F..%2Fadmin"],
    ["/%7e%7Euser", "/~~user"],
    ["/%c3%a9", "/%C3%A9"],
    ["/%20", "/%20"],
    ["/%25", "/%25"],
  ])("%p -> %p", (path, want) => {
    expect(normalizePath(path)).toBe(want);
    // Idempotent: the origin normalising again would see the same.
    expect(normalizePath(want)).toBe(want);
  });

  test.each(["/%", "/%4", "/%zz", "/a%g1"])("malformed %-encoding %p is refused", (p) => {
    expect(normalizePath(p)).toBeUndefined();
  });

  test("the query is left alone; a plain path is returned as the same string", () => {
    expect(normalizeTarget("/a/../b?x=/../%61")).toBe("/b?x=/../%61");
    const plain = "/api/v1/items?id=7";
    expect(normalizeTarget(plain)).toBe(plain);
    expect(normalizeTarget("/a?%zz")).toBe("/a?%zz");
  });
});

describe("absolute-form (RFC 9112 §3.2.2)", () => {
  test("authority and origin-form", () => {
    expect(splitAbsolute("http://a.example:81/x?y")).toEqual({ authority: "a.example:81", target: "/x?y" });
    expect(splitAbsolute("HTTPS://a.example")).toEqual({ authority: "a.example", target: "/" });
    expect(splitAbsolute("http://a.example?q")).toEqual({ authority: "a.example", target: "/?q" });
    expect(splitAbsolute("http://a.example/p/@x")).toEqual({ authority: "a.example", target: "/p/@x" });
  });
  test("userinfo refused; other schemes and empty authorities are not absolute-form", () => {
    expect(splitAbsolute("http://user:pw@evil.example/t/x")).toBe("userinfo");
    expect(splitAbsolute("http://@evil.example/")).toBe("userinfo");
    expect(splitAbsolute("ftp://a/x")).toBeUndefined();
    expect(splitAbsolute("http:///x")).toBeUndefined();
    expect(splitAbsolute("a.example:443")).toBeUndefined();
  });
});
