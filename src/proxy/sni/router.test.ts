import { expect, test } from "bun:test";
import type { PoolConfig } from "../../config/pool";
import { SniRouter } from "./router";

const pool = {} as PoolConfig;

test("exact names first, then a wildcard for exactly one more label; else none", () => {
  const r = new SniRouter(
    [
      { names: ["a.example", "*.b.example"], pool },
      { names: ["x.b.example", "*.x.b.example", "*.a.example"], pool },
    ],
    (_, i) => i + 1,
  );
  expect(r.match("a.example")).toBe(1);
  expect(r.match("y.b.example")).toBe(1);
  // The exact name wins over the wildcard that also matches it.
  expect(r.match("x.b.example")).toBe(2);
  expect(r.match("z.x.b.example")).toBe(2);
  expect(r.match("w.a.example")).toBe(2);
  // One label only: not the parent, not two labels down.
  expect(r.match("b.example")).toBeUndefined();
  expect(r.match("q.y.b.example")).toBeUndefined();
  expect(r.match("example")).toBeUndefined();
  expect(r.match("c.example")).toBeUndefined();
  // No suffix games: "evilb.example" is not under b.example.
  expect(r.match("evilb.example")).toBeUndefined();
});
