// The send ring against the kernel: real loopback sockets, real io_uring.
import { afterEach, describe, expect, test } from "bun:test";
import { ptr } from "bun:ffi";
import type { udp } from "bun";
import { connectTo, openUdpSocket } from "../../system/udp";
import type { Fd } from "../../system/fd";
import { SendRing } from "./sendring";

const opened: Fd[] = [];
const receivers: udp.Socket<"buffer">[] = [];
afterEach(() => {
  for (const f of opened.splice(0)) f.close();
  for (const r of receivers.splice(0)) r.close();
});

async function receiver(): Promise<{ port: number; got: string[] }> {
  const got: string[] = [];
  const s = await Bun.udpSocket({
    hostname: "127.0.0.1",
    socket: {
      data(_s, data) {
        got.push(Buffer.from(data).toString());
      },
    },
  });
  receivers.push(s);
  return { port: s.port, got };
}

function connected(port: number): number {
  const f = openUdpSocket(4, "test sender");
  opened.push(f);
  connectTo(f.raw, { family: 4, addr: new Uint8Array([127, 0, 0, 1]), port }, "test sender");
  return f.raw;
}

async function until(ok: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok() && Date.now() < end) await Bun.sleep(5);
}

const SOURCE = 64 * 1024;

/** A pinned buffer: SOURCE bytes the test fills, then the ring's staging area. */
function buffer(stage: number) {
  const data = new Uint8Array(new ArrayBuffer(SOURCE + stage));
  return { data, address: ptr(data) };
}

describe("udp send ring", () => {
  test("more sends than its entries and its staging area, mixed over three sockets: all arrive, in order per socket, each result reported", async () => {
    const rx = await Promise.all([receiver(), receiver(), receiver()]);
    const fds = rx.map((r) => connected(r.port));
    // 8 entries and 4 KiB of staging: 60 sends of 300 bytes flush mid-queue on both bounds.
    const { data, address } = buffer(4096);
    const results: [number, boolean, number, number][] = [];
    const ring = new SendRing<number>(data, address, SOURCE, 4096, (owner, toClient, length, res) => results.push([owner, toClient, length, res]), 8);
    try {
      const want: string[][] = [[], [], []];
      for (let i = 0; i < 60; i++) {
        const k = i % 3;
        const text = `socket ${k} datagram ${i} `.padEnd(300, "x");
        // The same source bytes are rewritten for every datagram: the ring must have copied the previous one.
        data.set(Buffer.from(text), 0);
        ring.queue(fds[k]!, 0, text.length, i, k === 0);
        want[k]!.push(text);
      }
      expect(ring.queued).toBeLessThan(8);
      ring.flush();
      expect(ring.queued).toBe(0);
      expect(results.length).toBe(60);
      expect(results.map((r) => r[0]).sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, i) => i));
      for (const [owner, toClient, length, res] of results) {
        expect(toClient).toBe(owner % 3 === 0);
        expect(length).toBe(300);
        expect(res).toBe(300);
      }
      await until(() => rx.every((r) => r.got.length >= 20));
      for (let k = 0; k < 3; k++) expect(rx[k]!.got).toEqual(want[k]!);
      expect(ring.flushes).toBeGreaterThanOrEqual(60 / 8);
    } finally {
      ring.close();
    }
  });

  test("errors come back per send: EMSGSIZE for a datagram over 65,507 bytes, ECONNREFUSED after the peer's port unreachable", async () => {
    const gone = await receiver();
    const port = gone.port;
    receivers.pop()!.close();
    const refused = connected(port);
    const ok = await receiver();
    const fine = connected(ok.port);
    const stage = 2 * 65_536 + 4096;
    const { data, address } = buffer(stage);
    const results: [string, number][] = [];
    const ring = new SendRing<string>(data, address, SOURCE, stage, (owner, _c, _l, res) => results.push([owner, res]));
    try {
      ring.queue(fine, 0, 65_508, "too big", false);
      ring.queue(fine, 0, 100, "fine", false);
      ring.queue(refused, 0, 10, "first to a closed port", false);
      ring.flush();
      expect(results).toEqual([
        ["too big", -90],
        ["fine", 100],
        ["first to a closed port", 10],
      ]);
      // The ICMP port unreachable the first send drew is reported on the socket's next call (udp(7)).
      await Bun.sleep(50);
      results.length = 0;
      ring.queue(refused, 0, 10, "second to a closed port", false);
      ring.flush();
      expect(results).toEqual([["second to a closed port", -111]]);
      await until(() => ok.got.length >= 1);
      expect(ok.got.length).toBe(1);
    } finally {
      ring.close();
    }
  });
});
