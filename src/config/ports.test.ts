import { expect, test } from "bun:test";
import { parsePorts } from "./ports";

test("lists, ranges and single ports", () => {
  expect(parsePorts("22,80,8000-8999")).toEqual([
    { lo: 22, hi: 22 },
    { lo: 80, hi: 80 },
    { lo: 8000, hi: 8999 },
  ]);
  expect(parsePorts("1-65535")).toEqual([{ lo: 1, hi: 65535 }]);
});

test.each(["0-5", "70000", "5-3", "", "a", "1,,2", "-5", "5-", "1.5"])("rejects %p", (text) => {
  expect(() => parsePorts(text)).toThrow(/ports: /);
});
