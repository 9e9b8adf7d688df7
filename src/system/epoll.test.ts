import { describe, expect, test } from "bun:test";
import { Worker } from "node:worker_threads";
import { Epoll, EPOLLIN, EPOLLOUT, EventFd } from "./epoll";
import { errno, libc } from "./libc";

describe("Epoll", () => {
  test("ready events report each descriptor and its bits (read from the event array, both layouts' offsets)", () => {
    const ep = new Epoll(8);
    const a = new EventFd();
    const b = new EventFd();
    try {
      ep.watch(a.fd, EPOLLIN);
      ep.watch(b.fd, EPOLLIN | EPOLLOUT);
      expect(ep.wait(0)).toBe(1); // b is writable; nothing to read yet
      expect(ep.fdAt(0)).toBe(b.fd);
      expect(ep.eventsAt(0)).toBe(EPOLLOUT);
      a.signal();
      b.signal();
      const n = ep.wait(100);
      expect(n).toBe(2);
      const seen = new Map<number, number>();
      for (let i = 0; i < n; i++) seen.set(ep.fdAt(i), ep.eventsAt(i));
      expect(seen.get(a.fd)).toBe(EPOLLIN);
      expect(seen.get(b.fd)).toBe(EPOLLIN | EPOLLOUT);
    } finally {
      a.close();
      b.close();
      ep.close();
    }
  });
});

describe("errno", () => {
  test("is the calling thread's, in the main thread and in a worker", async () => {
    // socket(-1, ...): EAFNOSUPPORT (97) here; the worker's failing calls (EBADF, EINVAL) read its own errno.
    expect(libc.socket(-1, 1, 0)).toBe(-1);
    expect(errno()).toBe(97);
    const code = `
      const { parentPort } = require("node:worker_threads");
      const { libc, errno } = require(${JSON.stringify(import.meta.dir + "/libc.ts")});
      libc.fcntl(-1, 1, 0);
      const first = errno();
      libc.socket(2, 1, 9999);
      parentPort.postMessage([first, errno()]);
    `;
    const w = new Worker(code, { eval: true });
    const [first, second] = await new Promise<number[]>((resolve, reject) => {
      w.once("message", resolve);
      w.once("error", reject);
    });
    await w.terminate();
    expect(first).toBe(9); // EBADF
    expect(second).toBe(22); // EINVAL (protocol out of range)
  });
});
