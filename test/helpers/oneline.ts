import { expect } from "bun:test";

/** What a refused start or a bad input must print: one line starting "edgeproxy: ", matching `pattern`, and no stack frame anywhere. */
export function expectOneLine(stderr: string, pattern: RegExp): void {
  expect(stderr).not.toMatch(/^\s+at /m);
  const lines = stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^edgeproxy: /);
  expect(lines[0]).toMatch(pattern);
}
