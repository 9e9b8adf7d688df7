import { describe, expect, test } from "bun:test";
import { fstatSync, openSync, readlinkSync } from "node:fs";
import { EdgeError } from "../errors";
import { Fd } from "./fd";
import { libc } from "./libc";

const open = (what = "test file") => new Fd(openSync("/dev/null", "r"), what);
/** Open in this process (F_GETFD answers; EBADF otherwise). Opens nothing itself, so cannot take the number. */
const isOpen = (n: number) => libc.fcntl(n, 1, 0) >= 0;

describe("Fd", () => {
  test("close twice is a no-op: the second close does not close the number's next owner", () => {
    const a = open();
    const n = a.raw;
    a.close();
    expect(a.closed).toBe(true);
    // The kernel gives the lowest free number to the next open: the same one.
    const b = open("next owner");
    expect(b.raw).toBe(n);
    a.close();
    expect(isOpen(n)).toBe(true);
    expect(fstatSync(n).isCharacterDevice()).toBe(true);
    b.close();
    expect(isOpen(n)).toBe(false);
  });

  test("use after close throws a clear error naming the descriptor", () => {
    const a = open("flow socket");
    a.close();
    expect(() => a.raw).toThrow(EdgeError);
    expect(() => a.raw).toThrow("flow socket: file descriptor used after close (or after it was handed over)");
    expect(() => a.release()).toThrow("used after close");
    expect(() => a.dup()).toThrow("used after close");
    expect(String(a)).toBe("flow socket (closed)");
  });

  test("release hands the number over: the Fd no longer closes it, nor uses it", () => {
    const a = open();
    const n = a.release();
    expect(a.closed).toBe(true);
    a.close();
    expect(isOpen(n)).toBe(true);
    expect(() => a.raw).toThrow("used after close");
    // The new owner closes it.
    new Fd(n, "new owner").close();
    expect(isOpen(n)).toBe(false);
  });

  test("dup makes a second owner of the same file, closed independently", () => {
    const a = open();
    const b = a.dup("copy");
    expect(b.raw).not.toBe(a.raw);
    expect(b.raw).toBeGreaterThan(0);
    expect(readlinkSync(`/proc/self/fd/${b.raw}`)).toBe("/dev/null");
    a.close();
    expect(isOpen(b.raw)).toBe(true);
    b.close();
  });

  test("from: a failed call is one error with errno's name; a bad number is refused", () => {
    expect(() => Fd.from(libc.socket(-1, 0, 0), "socket")).toThrow(/^socket: .*\(EAFNOSUPPORT\)$/);
    expect(() => new Fd(-1, "nothing")).toThrow("-1 is not a file descriptor");
    const s = Fd.from(libc.socket(2, 2, 0), "udp socket");
    expect(readlinkSync(`/proc/self/fd/${s.raw}`)).toMatch(/^socket:\[\d+\]$/);
    expect(String(s)).toBe(`udp socket (fd ${s.raw})`);
    s.close();
  });
});
