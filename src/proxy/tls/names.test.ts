import { expect, test } from "bun:test";
import { ServerNames } from "./names";

test("exact beats wildcard; a wildcard is one whole left-most label; case and a trailing dot do not matter; the first value keeps a name", () => {
  const t = new ServerNames<number>();
  for (const [n, v] of [["a.example", 1], ["*.b.example", 1], ["x.b.example", 2], ["*.x.b.example", 2], ["A.example", 3], ["f*.example", 4], ["*.*.example", 5]] as const) t.add(n, v);
  expect(t.match("a.example")).toEqual({ value: 1, how: "exact" });
  expect(t.match("A.EXAMPLE.")).toEqual({ value: 1, how: "exact" });
  expect(t.match("y.b.example")).toEqual({ value: 1, how: "wildcard" });
  expect(t.match("x.b.example")).toEqual({ value: 2, how: "exact" });
  expect(t.match("z.x.b.example")).toEqual({ value: 2, how: "wildcard" });
  for (const n of ["b.example", "q.y.b.example", "example", "evilb.example", "fa.example", "f*.example", "x.y.example", "", "."]) expect(t.match(n)).toBeUndefined();
});
