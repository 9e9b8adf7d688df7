import { expect, test } from "bun:test";
import { ConfigError, errorLine } from "./errors";

test("errorLine: our errors by their message, a bug by name, message and the frame that threw, always one line", () => {
  expect(errorLine(new ConfigError("--workers", "257 is not a whole number from 1 to 256"))).toBe("--workers: 257 is not a whole number from 1 to 256");
  const bug = (() => {
    try {
      Array.from({ length: 1e20 });
    } catch (e) {
      return e;
    }
  })();
  const line = errorLine(bug);
  expect(line).toMatch(/^RangeError: .+ \(at .+\)$/);
  expect(line).not.toContain("\n");
  expect(errorLine(new Error("first\nsecond"))).toMatch(/^Error: first \(at .*errors\.test\.ts:\d+:\d+\)+$/);
  expect(errorLine("a string\nthrown")).toBe("a string");
});
