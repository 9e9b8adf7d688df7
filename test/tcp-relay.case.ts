// The tcp relay end to end, one suite run against each data plane a tcp
// service can run on (as hono runs one router suite against every router):
// the raw-socket engine (engine = "epoll", src/engine/; engine.test.ts) and
// Bun's sockets (engine = "bun", src/proxy/tcp.ts; tcp-bun.test.ts), which
// TLS, sni routes and origin_tls services still use. edgeproxy in a namespace
// of each test's own, Bun clients and origins over the real kernel path.
// Half-close, reset forwarding, backpressure towards a slow reader, idle
// deadline, drain.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { createHash, randomBytes } from "node:crypto";
import type { Engine } from "../src/config/service";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import type { ProxyFixture } from "./helpers/fixture";

/** Resolves when `check` holds, polling; rejects after `ms`. */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

export function tcpRelayCases(f: ProxyFixture, engine: Engine): void {
  const servers = f.servers;

  const start = (origin: number, more: string[] = []) =>
    EdgeproxyProcess.start(["--engine", engine, "--ports", "5000-5100", "--prefix", "192.0.2.0/24,2001:db8::/64", "--origin", `127.0.0.1:${origin}`, ...more]);

  describe(`tcp relay (${engine})`, () => {
    test("bytes intact both ways over IPv4 and IPv6; the shutdown summary says which engine ran", async () => {
      const origin = echoOrigin("127.0.0.1");
      servers.push(origin);
      f.ep = await start(origin.port);
      for (const host of ["192.0.2.1", "2001:db8::5"]) {
        const payload = randomBytes(3 * 1024 * 1024 + 17);
        const got = await exchange(host, 5050, payload, 20_000);
        expect(got.kind).toBe("data");
        expect(Buffer.from((got as { bytes: Uint8Array }).bytes).equals(payload)).toBe(true);
      }
      expect(await f.ep.stop()).toBe(0);
      // The engine names itself in the summary; Bun's path says nothing of engines.
      if (engine === "epoll") expect(f.ep.stderr).toMatch(/2 connections, .*\(engine epoll\)/);
      else expect(f.ep.stderr).toMatch(/2 connections, (?!.*\(engine)/);
      f.ep = undefined;
    }, 40_000);

    test("half-close: the origin's FIN reaches the client, which still sends afterwards; the client's FIN reaches the origin", async () => {
      const heard: string[] = [];
      let originEnded = false;
      servers.push(
        Bun.listen({
          hostname: "127.0.0.1",
          port: 0,
          allowHalfOpen: true,
          socket: {
            open(s) {
              s.write("hello");
              s.shutdown(); // FIN, still reading
            },
            data(_s, d) {
              heard.push(Buffer.from(d).toString());
            },
            end() {
              originEnded = true;
            },
            // With its own side already shut, Bun reports the peer's FIN as a close without error (a reset has one).
            close(_s, err) {
              if (!err) originEnded = true;
            },
          },
        }),
      );
      f.ep = await start(servers[0]!.port);
      let got = "";
      let clientEnded = false;
      let closed = false;
      await Bun.connect({
        hostname: "192.0.2.9",
        port: 5001,
        allowHalfOpen: true,
        socket: {
          data(_s, d) {
            got += Buffer.from(d).toString();
          },
          end(s) {
            // The proxy passed the origin's FIN on; this direction is still open.
            clientEnded = true;
            s.write("after-fin");
            s.shutdown();
          },
          close() {
            closed = true;
          },
        },
      });
      await until(() => closed, 5000, "the connection to close");
      expect(got).toBe("hello");
      expect(clientEnded).toBe(true);
      await until(() => originEnded, 2000, "the origin to see the client's FIN");
      expect(heard.join("")).toBe("after-fin");
    }, 20_000);

    test("resets are forwarded: an origin's RST resets the client, a client's RST resets the origin", async () => {
      const originSaw: string[] = [];
      servers.push(
        Bun.listen<{ n: number }>({
          hostname: "127.0.0.1",
          port: 0,
          allowHalfOpen: true,
          socket: {
            open(s) {
              s.data = { n: 0 };
            },
            data(s, d) {
              const t = Buffer.from(d).toString();
              if (t.startsWith("reset-me")) s.terminate();
              else s.write(d);
            },
            close(_s, err) {
              originSaw.push(err ? `error ${(err as { code?: string }).code ?? err.message}` : "close");
            },
            error(_s, err) {
              originSaw.push(`error ${(err as { code?: string }).code ?? err.message}`);
            },
          },
        }),
      );
      f.ep = await start(servers[0]!.port);
      const r = await exchange("192.0.2.9", 5002, "reset-me", 5000);
      expect(r.kind).toBe("reset");

      // The client resets mid-connection: the origin gets an RST, not a FIN.
      originSaw.length = 0;
      let echoed = false;
      const s: Socket = await Bun.connect({
        hostname: "192.0.2.9",
        port: 5003,
        socket: {
          data() {
            echoed = true;
          },
        },
      });
      s.write("ping");
      await until(() => echoed, 3000, "the echo");
      s.terminate();
      await until(() => originSaw.length > 0, 3000, "the origin to see the end");
      expect(originSaw[0]).toMatch(/^error .*(ECONNRESET|reset)/i);
    }, 20_000);

    test("backpressure: a slow origin stops the client, edgeproxy holds no more than a buffer; every byte arrives once it reads", async () => {
      const total = 48 * 1024 * 1024;
      const hash = createHash("sha256");
      let received = 0;
      let sock: Socket<undefined> | undefined;
      servers.push(
        Bun.listen({
          hostname: "127.0.0.1",
          port: 0,
          socket: {
            open(s) {
              sock = s;
              s.pause(); // read nothing until told
            },
            data(_s, d) {
              hash.update(d);
              received += d.length;
            },
          },
        }),
      );
      f.ep = await start(servers[0]!.port);
      const rssBefore = f.ep.rssKiB();
      const payload = randomBytes(total);
      const sent = createHash("sha256").update(payload).digest("hex");
      let off = 0;
      const client: Socket = await Bun.connect({
        hostname: "192.0.2.9",
        port: 5004,
        socket: {
          drain(s) {
            while (off < total) {
              const n = s.write(payload.subarray(off, Math.min(total, off + 65536)));
              if (n <= 0) return;
              off += n;
            }
          },
        },
      });
      while (off < total) {
        const n = client.write(payload.subarray(off, Math.min(total, off + 65536)));
        if (n <= 0) break;
        off += n;
      }
      // Let the buffers on the way fill: then the client can write no more.
      await until(() => sock !== undefined, 3000, "the origin's connection");
      await Bun.sleep(1500);
      const stalledAt = off;
      await Bun.sleep(500);
      expect(off).toBe(stalledAt); // stopped, not still flowing
      expect(off).toBeLessThan(total / 2); // socket buffers only (client send, proxy receive and send, origin receive)
      const grown = f.ep.rssKiB() - rssBefore;
      expect(grown).toBeLessThan(16 * 1024); // nothing like the MiBs queued in the kernel
      sock!.resume();
      await until(() => received === total, 20_000, `all ${total} bytes (have ${received})`);
      expect(hash.digest("hex")).toBe(sent);
      client.end();
    }, 40_000);

    test("more stalled connections than the buffer pool has buffers: others are still served, and every stalled byte arrives later", async () => {
      // 72 connections whose origin does not read (more than the 64 pool buffers), then an echo.
      const stalled = 72;
      // Small socket buffers in this test's namespace (per-netns sysctls), so each connection stalls within a few hundred KiB.
      for (const [k, v] of [["net.ipv4.tcp_wmem", "4096 16384 65536"], ["net.ipv4.tcp_rmem", "4096 65536 131072"]]) {
        expect(Bun.spawnSync(["sysctl", "-qw", `${k}=${v}`]).exitCode).toBe(0);
      }
      const each = 4 * 1024 * 1024;
      const payload = randomBytes(each);
      const want = createHash("sha256").update(payload).digest("hex");
      const paused: Socket<{ hash: ReturnType<typeof createHash>; n: number }>[] = [];
      const done: string[] = [];
      servers.push(
        Bun.listen<{ hash: ReturnType<typeof createHash>; n: number; stall: boolean }>({
          hostname: "127.0.0.1",
          port: 0,
          socket: {
            open(s) {
              s.data = { hash: createHash("sha256"), n: 0, stall: false };
            },
            data(s, d) {
              if (s.data.n === 0 && d[0] === 0x21) {
                // "!": an echo request, answered at once.
                return void s.end(d);
              }
              if (s.data.n === 0) {
                s.data.stall = true;
                paused.push(s as never);
                s.pause();
              }
              s.data.hash.update(d);
              s.data.n += d.length;
              if (s.data.n === each) done.push(s.data.hash.digest("hex"));
            },
          },
        }),
      );
      f.ep = await start(servers[0]!.port);
      const clients: Socket<{ off: number }>[] = [];
      for (let i = 0; i < stalled; i++) {
        const pump = (s: Socket<{ off: number }>) => {
          while (s.data.off < each) {
            const n = s.write(payload.subarray(s.data.off, Math.min(each, s.data.off + 65536)));
            if (n <= 0) return;
            s.data.off += n;
          }
        };
        clients.push(await Bun.connect<{ off: number }>({ hostname: "192.0.2.9", port: 5010, data: { off: 0 }, socket: { open: pump, drain: pump, data() {} } }));
      }
      // Generous: 72 connections each pumping 4 MiB through one core; alone this takes ~1 s, on a loaded machine it once took over 10 s.
      await until(() => paused.length === stalled, 20_000, "every stalled connection at the origin");
      await Bun.sleep(1000);
      expect(clients.some((c) => c.data.off < each)).toBe(true); // the kernel buffers on the way are full: stalled for real
      const r = await exchange("192.0.2.9", 5011, "!echo", 5000);
      expect(r.kind).toBe("data");
      expect(Buffer.from((r as { bytes: Uint8Array }).bytes).toString()).toBe("!echo");
      for (const s of paused) s.resume();
      await until(() => done.length === stalled, 30_000, `all ${stalled} transfers (have ${done.length})`);
      expect(new Set(done)).toEqual(new Set([want]));
      for (const c of clients) c.end();
    }, 60_000);

    test("idle deadline: a silent connection is closed after --idle-timeout", async () => {
      const origin = echoOrigin("127.0.0.1");
      servers.push(origin);
      f.ep = await start(origin.port, ["--idle-timeout", "400ms"]);
      const t0 = performance.now();
      let closedAt = 0;
      await Bun.connect({ hostname: "192.0.2.9", port: 5005, socket: { data() {}, close: () => void (closedAt = performance.now()) } });
      await until(() => closedAt > 0, 5000, "the idle close");
      const after = closedAt - t0;
      expect(after).toBeGreaterThanOrEqual(350);
      expect(after).toBeLessThan(2000);
    }, 20_000);

    test("idle deadline after the data plane idled: a connection that comes to an idle instance is still closed after --idle-timeout", async () => {
      // The engine's thread waits for events alone once nothing is open (src/proxy/udp/worker.ts): the sweep must resume with the connection.
      const origin = echoOrigin("127.0.0.1");
      servers.push(origin);
      f.ep = await start(origin.port, ["--idle-timeout", "400ms"]);
      await Bun.sleep(700);
      expect(text(await exchange("192.0.2.9", 5005, "awake", 5000))).toBe("awake");
      await Bun.sleep(700);
      const t0 = performance.now();
      let closedAt = 0;
      await Bun.connect({ hostname: "192.0.2.9", port: 5005, socket: { data() {}, close: () => void (closedAt = performance.now()) } });
      await until(() => closedAt > 0, 5000, "the idle close");
      const after = closedAt - t0;
      // Deadlines are kept on a coarse clock, honoured to within its 100 ms tick (src/proxy/clock.ts, worker.ts).
      expect(after).toBeGreaterThanOrEqual(290);
      expect(after).toBeLessThan(2000);
    }, 20_000);

    test("an origin that refuses: the client is reset, the origin error is counted", async () => {
      const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      const port = probe.port;
      probe.stop(true);
      f.ep = await start(port);
      const r = await exchange("192.0.2.9", 5006, "x", 5000);
      expect(r.kind).toBe("reset");
      expect(await f.ep.stop()).toBe(0);
      expect(f.ep.stderr).toMatch(/origin errors: refused 1/);
      f.ep = undefined;
    }, 20_000);

    test("busiest clients: this engine's connections are in the live view (connections, bytes both ways); behind a balancer's PROXY header, the client it names", async () => {
      const origin = echoOrigin("127.0.0.1");
      servers.push(origin);
      f.ep = await start(origin.port, ["--accept-proxy", "192.0.2.200/32"]);
      for (let i = 0; i < 3; i++) expect(text(await exchange("192.0.2.1", 5010, "x".repeat(100), 5000, "192.0.2.7"))).toBe("x".repeat(100));
      expect(text(await exchange("2001:db8::1", 5011, "y".repeat(50), 5000))).toBe("y".repeat(50));
      // A trusted balancer's connection: the client its header names is counted, the balancer is not.
      expect(text(await exchange("192.0.2.1", 5012, `PROXY TCP4 198.51.100.9 192.0.2.1 40000 5012\r\n${"z".repeat(10)}`, 5000, "192.0.2.200"))).toBe("z".repeat(10));
      type Top = { address: string; connections: number; bytes: number }[];
      let top: Top = [];
      // The live view is the instance's once-a-second reading (src/admin/dashboard.ts).
      const end = Date.now() + 10_000;
      while (top.length < 3 && Date.now() < end) {
        const r = await runEdgeproxy(["status", "--json"]);
        expect(r.code).toBe(0);
        const clients = (JSON.parse(r.stdout) as { clients: Record<string, { top: Top }> }).clients;
        top = Object.values(clients)[0]?.top ?? [];
        if (top.length < 3) await Bun.sleep(300);
      }
      expect(top.map(({ address, connections, bytes }) => [address, connections, bytes])).toEqual([
        ["192.0.2.7", 3, 600],
        [expect.stringContaining(":"), 1, 100],
        ["198.51.100.9", 1, 20],
      ]);
    }, 30_000);

    test("SIGQUIT drains: no new connection, open relays go on both ways and end with their FIN; one still open at --drain-timeout is cut; exit 0", async () => {
      const origin = echoOrigin("127.0.0.1");
      servers.push(origin);
      f.ep = await start(origin.port, ["--drain-timeout", "1500ms"]);
      type Conn = { s: Socket; got: string; closedAt: number; error: string | undefined };
      const open = async (port: number): Promise<Conn> => {
        const c = { got: "", closedAt: 0, error: undefined } as Conn;
        c.s = await Bun.connect({
          hostname: "192.0.2.1",
          port,
          allowHalfOpen: true,
          socket: {
            data: (_s, d) => void (c.got += Buffer.from(d).toString()),
            end: (s) => void s.end(),
            close: (_s, err) => {
              c.closedAt = performance.now();
              c.error = err ? ((err as { code?: string }).code ?? err.message) : undefined;
            },
          },
        });
        c.s.write("a");
        await until(() => c.got === "a", 3000, `the first echo on port ${port}`);
        return c;
      };
      const finishing = await open(5020);
      const held = await open(5021);
      const quitAt = performance.now();
      f.ep.proc.kill("SIGQUIT");
      await until(() => f.ep!.stderr.includes("SIGQUIT: draining"), 3000, "the drain to start");
      // Both directions still relay on the open connection; its FIN still ends it cleanly.
      finishing.s.write("b");
      await until(() => finishing.got === "ab", 3000, "the echo after SIGQUIT");
      finishing.s.end();
      await until(() => finishing.closedAt > 0, 3000, "the relay's end");
      expect(finishing.error).toBeUndefined();
      expect(finishing.closedAt - quitAt).toBeLessThan(1200);
      // New connections are not taken (the only process left its group and the selection).
      expect((await exchange("192.0.2.1", 5022, "x", 2000)).kind).not.toBe("data");
      // The one left open is cut at the deadline, not before, and the process says so.
      expect(await f.ep.proc.exited).toBe(0);
      await until(() => held.closedAt > 0, 3000, "the held connection's end");
      expect(held.closedAt - quitAt).toBeGreaterThan(1300);
      expect(f.ep.stderr).toMatch(/SIGQUIT: drained; cut 1 connection\(s\) still open at the drain timeout; stopped/);
      f.ep = undefined;
    }, 20_000);
  });
}
