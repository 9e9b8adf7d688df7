import { expect, test } from "bun:test";
import { read, type Pointer } from "bun:ffi";
import { BufferPool } from "./buffers";

test("the pool hands out at most `count` buffers, -1 when all are out, and takes back only what is out", () => {
  const pool = new BufferPool(4, 1024);
  const got = [pool.acquire(), pool.acquire(), pool.acquire(), pool.acquire()];
  expect(new Set(got).size).toBe(4);
  expect(pool.inUse).toBe(4);
  expect(pool.acquire()).toBe(-1);
  pool.release(got[2]!);
  expect(pool.inUse).toBe(3);
  // Last in, first out: the buffer just used (warm in cache) goes out next.
  expect(pool.acquire()).toBe(got[2]!);
  for (const b of got) pool.release(b);
  expect(pool.inUse).toBe(0);
  expect(() => pool.release(got[0]!)).toThrow(/not out/);
  expect(() => new BufferPool(0, 10)).toThrow();
});

test("buffers are disjoint views of one slab whose addresses do not move (what the kernel writes, JS reads)", () => {
  const pool = new BufferPool(3, 4096);
  const a = pool.acquire();
  const b = pool.acquire();
  expect(Math.abs(pool.address(a) - pool.address(b))).toBe(4096);
  pool.view(a).fill(7);
  pool.view(b).fill(9);
  expect(read.u8(pool.address(a, 4095) as Pointer, 0)).toBe(7);
  expect(read.u8(pool.address(b) as Pointer, 0)).toBe(9);
  const before = pool.address(a);
  // Allocation pressure moves small typed arrays; the slab's buffers stay where they are.
  for (let i = 0; i < 50_000; i++) new Uint8Array(64);
  Bun.gc(true);
  expect(pool.address(a)).toBe(before);
  expect(read.u8(before as Pointer, 100)).toBe(7);
});
