import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BufferPool } from "./buffers";
import { libc } from "./libc";
import { openTcpListener, MSG_NOSIGNAL } from "./tcp";
import { localEndpoint } from "./udp";
import * as U from "./uring";

const dir = mkdtempSync(join(tmpdir(), "uring-layout-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Every offset and constant of uring.ts against the kernel's UAPI header, printed by a C program the system's clang compiles.
const checks: [string, number][] = [
  ["sizeof(struct io_uring_sqe)", U.SQE.size],
  ...(["opcode", "flags", "ioprio", "fd", "off", "addr", "len", "user_data", "buf_group", "personality", "file_index", "addr3"] as const).map(
    (f): [string, number] => [`offsetof(struct io_uring_sqe, ${f})`, U.SQE[({ user_data: "userData", buf_group: "bufGroup", file_index: "fileIndex" } as Record<string, keyof typeof U.SQE>)[f] ?? (f as keyof typeof U.SQE)]],
  ),
  ["offsetof(struct io_uring_sqe, msg_flags)", U.SQE.opFlags],
  ["offsetof(struct io_uring_sqe, accept_flags)", U.SQE.opFlags],
  ["offsetof(struct io_uring_sqe, cancel_flags)", U.SQE.opFlags],
  ["sizeof(struct io_uring_cqe)", U.CQE.size],
  ["offsetof(struct io_uring_cqe, user_data)", U.CQE.userData],
  ["offsetof(struct io_uring_cqe, res)", U.CQE.res],
  ["offsetof(struct io_uring_cqe, flags)", U.CQE.flags],
  ["sizeof(struct io_uring_params)", U.PARAMS.size],
  ["offsetof(struct io_uring_params, sq_entries)", U.PARAMS.sqEntries],
  ["offsetof(struct io_uring_params, cq_entries)", U.PARAMS.cqEntries],
  ["offsetof(struct io_uring_params, flags)", U.PARAMS.flags],
  ["offsetof(struct io_uring_params, features)", U.PARAMS.features],
  ["offsetof(struct io_uring_params, sq_off)", U.PARAMS.sqOff],
  ["offsetof(struct io_uring_params, cq_off)", U.PARAMS.cqOff],
  ...Object.entries(U.SQ_OFF).map(([k, v]): [string, number] => [`offsetof(struct io_sqring_offsets, ${k.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase())})`, v]),
  ...Object.entries(U.CQ_OFF).map(([k, v]): [string, number] => [`offsetof(struct io_cqring_offsets, ${k.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase())})`, v]),
  ["sizeof(struct io_uring_buf_reg)", U.BUF_REG.size],
  ["offsetof(struct io_uring_buf_reg, ring_addr)", U.BUF_REG.ringAddr],
  ["offsetof(struct io_uring_buf_reg, ring_entries)", U.BUF_REG.ringEntries],
  ["offsetof(struct io_uring_buf_reg, bgid)", U.BUF_REG.bgid],
  ["sizeof(struct io_uring_getevents_arg)", U.GETEVENTS_ARG.size],
  ["offsetof(struct io_uring_getevents_arg, ts)", U.GETEVENTS_ARG.ts],
  ["sizeof(struct __kernel_timespec)", 16],
  ["sizeof(struct io_uring_buf)", U.BUF.size],
  ["offsetof(struct io_uring_buf, addr)", U.BUF.addr],
  ["offsetof(struct io_uring_buf, len)", U.BUF.len],
  ["offsetof(struct io_uring_buf, bid)", U.BUF.bid],
  ["offsetof(struct io_uring_buf_ring, tail)", U.BUF.tail],
  ...Object.entries(U.OP).map(([k, v]): [string, number] => [`IORING_OP_${k}`, v]),
  ...(
    [
      "IORING_SETUP_SUBMIT_ALL",
      "IORING_SETUP_COOP_TASKRUN",
      "IORING_SETUP_SINGLE_ISSUER",
      "IORING_SETUP_DEFER_TASKRUN",
      "IORING_FEAT_SINGLE_MMAP",
      "IORING_FEAT_NODROP",
      "IORING_ENTER_GETEVENTS",
      "IORING_ENTER_EXT_ARG",
      "IORING_FEAT_EXT_ARG",
      "IORING_OFF_SQ_RING",
      "IORING_OFF_SQES",
      "IORING_REGISTER_PBUF_RING",
      "IOSQE_IO_LINK",
      "IOSQE_BUFFER_SELECT",
      "IORING_CQE_F_BUFFER",
      "IORING_CQE_F_MORE",
      "IORING_CQE_BUFFER_SHIFT",
      "IORING_ACCEPT_MULTISHOT",
      "IORING_RECV_MULTISHOT",
      "IORING_ASYNC_CANCEL_ALL",
      "IORING_ASYNC_CANCEL_FD",
    ] as const
  ).map((k): [string, number] => [k, (U as unknown as Record<string, number>)[k]!]),
];

describe("io_uring layouts", () => {
  test("every offset and constant matches <linux/io_uring.h>", () => {
    const src = `#include <stdio.h>\n#include <stddef.h>\n#include <linux/io_uring.h>\n#include <sys/syscall.h>\nint main(void) {\n${checks.map(([expr]) => `  printf("%llu\\n", (unsigned long long)(${expr}));`).join("\n")}\n  printf("%d %d %d\\n", __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register);\n  return 0;\n}\n`;
    writeFileSync(join(dir, "layout.c"), src);
    const cc = Bun.spawnSync(["clang", "-Wall", "-o", join(dir, "layout"), join(dir, "layout.c")]);
    expect(cc.stderr.toString()).toBe("");
    expect(cc.exitCode).toBe(0);
    const out = Bun.spawnSync([join(dir, "layout")]).stdout.toString().trim().split("\n");
    const got = checks.map(([expr], i) => [expr, Number(out[i])]);
    expect(got).toEqual(checks);
    expect(out[checks.length]).toBe(`${U.SYS_IO_URING_SETUP} ${U.SYS_IO_URING_ENTER} ${U.SYS_IO_URING_REGISTER}`);
  });
});

describe("Ring on loopback", () => {
  test("a timed wait with nothing in flight ends at its timeout (IORING_ENTER_EXT_ARG)", () => {
    const ring = new U.Ring(8);
    const t0 = performance.now();
    expect(ring.enter(1, true, 50)).toBe(-1);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThanOrEqual(45);
    expect(took).toBeLessThan(2000);
    ring.close();
  });

  test("multishot accept, multishot recv into provided buffers, send, EOF", async () => {
    const ring = new U.Ring(64);
    const pool = new BufferPool(8, 4096);
    const bufs = new U.BufferRing(ring, 3, 8);
    for (let i = 0; i < 8; i++) bufs.provide(i, pool.address(i), pool.size);
    bufs.publish();
    const l = openTcpListener({ family: 4, addr: new Uint8Array([127, 0, 0, 1]), port: 0 }, "uring test listener");
    const port = localEndpoint(l.raw, "uring test").port;
    const ACCEPT = 1, RECV = 2, SEND = 3;
    let w = ring.prep(U.OP.ACCEPT, l.raw, ACCEPT);
    ring.setIoprio(w, U.IORING_ACCEPT_MULTISHOT);
    ring.setOpFlags(w, 0o4000 | 0o2000000); // SOCK_NONBLOCK | SOCK_CLOEXEC
    const seen: string[] = [];
    let conn = -1;
    const reply = new Promise<string>((resolve, reject) => {
      const s = connect(port, "127.0.0.1", () => s.write("hello"));
      let got = "";
      s.on("data", (d) => {
        got += d.toString();
        if (got === "world") s.end();
      });
      s.on("close", () => resolve(got));
      s.on("error", reject);
    });
    const deadline = performance.now() + 3000;
    let eof = false;
    while (!eof && performance.now() < deadline) {
      ring.enter(0);
      const n = ring.ready();
      for (let k = 0; k < n; k++) {
        const c = ring.cqe(k);
        const tag = ring.tagOf(c), res = ring.resOf(c), flags = ring.flagsOf(c);
        if (process.env.DBG) console.log("cqe", tag, res, flags);
        if (tag === ACCEPT) {
          expect(res).toBeGreaterThan(0);
          expect(flags & U.IORING_CQE_F_MORE).toBeTruthy(); // multishot: the accept stays armed
          conn = res;
          w = ring.prep(U.OP.RECV, conn, RECV);
          ring.setIoprio(w, U.IORING_RECV_MULTISHOT);
          ring.setFlags(w, U.IOSQE_BUFFER_SELECT);
          ring.setBufGroup(w, 3);
        } else if (tag === RECV) {
          if (res === 0) {
            expect(flags & U.IORING_CQE_F_MORE).toBe(0);
            eof = true;
            seen.push("eof");
            continue;
          }
          expect(res).toBe(5);
          expect(flags & U.IORING_CQE_F_BUFFER).toBeTruthy();
          const bid = flags >>> U.IORING_CQE_BUFFER_SHIFT;
          seen.push(new TextDecoder().decode(pool.view(bid, 0, res)));
          pool.view(bid, 0, 5).set(new TextEncoder().encode("world"));
          w = ring.prep(U.OP.SEND, conn, SEND + bid * 16);
          ring.setAddr(w, pool.address(bid));
          ring.setLen(w, 5);
          ring.setOpFlags(w, MSG_NOSIGNAL);
        } else if ((tag & 15) === SEND) {
          expect(res).toBe(5);
          seen.push("sent");
          // The buffer goes back to the kernel once the send is done with it.
          const bid = tag >>> 4;
          bufs.provide(bid, pool.address(bid), pool.size);
          bufs.publish();
        }
      }
      ring.advance(n);
      await Bun.sleep(1);
    }
    // Our FIN after theirs: the client's close completes.
    libc.close(conn);
    expect(await reply).toBe("world");
    expect(seen).toEqual(["hello", "sent", "eof"]);
    ring.close();
    l.close();
  });
});
