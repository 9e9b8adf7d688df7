import { describe, expect, test } from "bun:test";
import { ConfigError } from "../errors";
import { checkCount, LIMITS, parseCount, parseDuration, parseSize, WORKER_BOUNDS } from "./numbers";

function refused(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as Error).message).not.toContain("\n");
    return (e as Error).message;
  }
  throw new Error("accepted");
}

describe("durations", () => {
  test("units, fractions, whole milliseconds", () => {
    expect(parseDuration("1ms", "d")).toBe(1);
    expect(parseDuration("1.5ms", "d")).toBe(2);
    expect(parseDuration("0.5", "d")).toBe(500);
    expect(parseDuration("2m", "d")).toBe(120_000);
    expect(parseDuration("168h", "d")).toBe(LIMITS.maxDurationMs);
  });

  test.each(["0", "0ms", "0.4ms", "0.0004", "0.9ms", "169h", "9999999999999999999999h", "1e400", "-5s", "NaN", "Infinity", "5 s", ""])("%p is refused in one line", (text) => {
    expect(refused(() => parseDuration(text, "--idle-timeout"))).toMatch(/^--idle-timeout: /);
  });

  test("a sub-millisecond duration says the minimum", () => {
    expect(refused(() => parseDuration("0.4ms", "--idle-timeout"))).toBe('--idle-timeout: "0.4ms" must be at least 1ms and at most 7 days');
  });
});

describe("sizes", () => {
  test("units", () => {
    expect(parseSize("1", "s")).toBe(1);
    expect(parseSize("512KiB", "s")).toBe(512 * 1024);
    expect(parseSize("1048576g", "s")).toBe(LIMITS.maxSizeBytes);
  });
  test.each(["0", "0KiB", "1048577g", "99999999999999999999999", "1e400", "-1", "1.5MiB", "NaN"])("%p is refused", (text) => {
    expect(refused(() => parseSize(text, "--max-body-size"))).toMatch(/^--max-body-size: /);
  });
});

describe("counts", () => {
  test("within bounds", () => {
    expect(parseCount("1", "n")).toBe(1);
    expect(parseCount(String(LIMITS.maxCount), "n")).toBe(LIMITS.maxCount);
    expect(parseCount("256", "n", WORKER_BOUNDS)).toBe(256);
    expect(parseCount("0", "n", { min: 0 })).toBe(0);
  });
  test.each(["0", "2147483648", "99999999999999999999", "1e3", "-1", "1.0", " 1", "NaN", ""])("%p is refused", (text) => {
    expect(refused(() => parseCount(text, "--max-connections"))).toMatch(/^--max-connections: /);
  });
  test("workers: at most 256", () => {
    expect(refused(() => parseCount("257", "--workers", WORKER_BOUNDS))).toBe("--workers: 257 is not a whole number from 1 to 256");
    expect(refused(() => parseCount("99999999999999999999", "--workers", WORKER_BOUNDS))).toBe("--workers: 99999999999999999999 is not a whole number from 1 to 256");
  });
  test.each([1e20, 2 ** 53, Infinity, NaN, 1.5, -3, 0])("parsed number %p is refused", (n) => {
    expect(refused(() => checkCount(n, "workers", WORKER_BOUNDS))).toMatch(/^workers: .* is not a whole number from 1 to 256$/);
  });
});
