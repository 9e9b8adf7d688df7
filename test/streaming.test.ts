// Streaming through the proxy: backpressure, half-close, resets, timeouts.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import { blackhole } from "./helpers/netns";

const f = proxyFixture();
const servers = f.servers;

const proxy = (origin: string, ...extra: string[]) => EdgeproxyProcess.start(["--ports", "1000-2000", "--prefix", "192.0.2.0/24", "--origin", origin, ...extra]);

/** Connect and hand back the socket plus promises for its close and its bytes. */
function client(host: string, port: number) {
  let resolveClose!: (v: { error?: string; ms: number }) => void;
  const closed = new Promise<{ error?: string; ms: number }>((r) => (resolveClose = r));
  const received: Uint8Array[] = [];
  let bytes = 0;
  const t0 = performance.now();
  const sock = Bun.connect({
    hostname: host,
    port,
    allowHalfOpen: true,
    socket: {
      data(_s, d) {
        bytes += d.length;
        if (received.length < 64) received.push(new Uint8Array(d));
      },
      close(_s, err) {
        resolveClose({ error: (err as { code?: string } | undefined)?.code, ms: performance.now() - t0 });
      },
      connectError(_s, err) {
        resolveClose({ error: (err as { code?: string }).code, ms: performance.now() - t0 });
      },
    },
  });
  return { sock, closed, received, bytesReceived: () => bytes };
}

describe("streaming", () => {
  test("half-close: the client's FIN reaches the origin, which can still answer", async () => {
    servers.push(
      Bun.listen<{ got: string }>({
        hostname: "127.0.0.1",
        port: 0,
        allowHalfOpen: true,
        socket: {
          open: (s) => void (s.data = { got: "" }),
          data: (s, d) => void (s.data.got += d.toString()),
          end: (s) => void s.end(`after your FIN I got "${s.data.got}"`),
        },
      }),
    );
    f.ep = await proxy(`127.0.0.1:${servers[0]!.port}`);
    expect(text(await exchange("192.0.2.1", 1234, "request"))).toBe('after your FIN I got "request"');
  }, 20_000);

  test("an origin reset is propagated to the client as a reset", async () => {
    servers.push(Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (s) => void s.terminate() } }));
    f.ep = await proxy(`127.0.0.1:${servers[0]!.port}`);
    const c = client("192.0.2.1", 1500);
    (await c.sock).write("boom");
    expect((await c.closed).error).toBe("ECONNRESET");
  }, 20_000);

  test("a client reset is propagated to the origin as a reset", async () => {
    let originSaw!: (code: string | undefined) => void;
    const saw = new Promise<string | undefined>((r) => (originSaw = r));
    servers.push(
      Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {}, close: (_s, err) => originSaw((err as { code?: string } | undefined)?.code) } }),
    );
    f.ep = await proxy(`127.0.0.1:${servers[0]!.port}`);
    const c = client("192.0.2.1", 1500);
    const s = await c.sock;
    s.write("hello");
    await Bun.sleep(50);
    s.terminate();
    expect(await saw).toBe("ECONNRESET");
  }, 20_000);

  test("origin refused: the client's connection is closed at once", async () => {
    const closedPort = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = closedPort.port;
    closedPort.stop(true);
    f.ep = await proxy(`127.0.0.1:${port}`);
    const c = client("192.0.2.1", 1500);
    const r = await c.closed;
    expect(r.error).toBe("ECONNRESET");
    expect(r.ms).toBeLessThan(2000);
  }, 20_000);

  test("connect timeout: an origin that never answers the SYN gets the client reset after --connect-timeout", async () => {
    blackhole(); // SYNs to 198.51.100.2 go nowhere (helpers/netns.ts)
    f.ep = await proxy("198.51.100.2:80", "--connect-timeout", "400ms");
    const c = client("192.0.2.1", 1500);
    const r = await c.closed;
    expect(r.error).toBe("ECONNRESET");
    expect(r.ms).toBeGreaterThan(300);
    expect(r.ms).toBeLessThan(3000);
  }, 20_000);

  test("idle timeout: a silent connection is closed after --idle-timeout", async () => {
    servers.push(echoOrigin("127.0.0.1"));
    f.ep = await proxy(`127.0.0.1:${servers[0]!.port}`, "--idle-timeout", "500ms");
    const c = client("192.0.2.1", 1500);
    (await c.sock).write("ping");
    const r = await c.closed;
    expect(r.error).toBeUndefined();
    expect(r.ms).toBeGreaterThan(400);
    expect(r.ms).toBeLessThan(3000);
    expect(c.bytesReceived()).toBe(4);
  }, 20_000);

  test("backpressure: a client that does not read keeps the proxy's memory bounded, and gets every byte later", async () => {
    const total = 128 * 1024 * 1024;
    const chunk = new Uint8Array(1024 * 1024).fill(0x61);
    // The origin pushes 128 MiB as fast as the proxy accepts it.
    const push = (s: Socket<{ sent: number }>) => {
      while (s.data.sent < total) {
        const piece = chunk.subarray(0, Math.min(chunk.length, total - s.data.sent));
        const n = s.write(piece);
        if (n <= 0) return;
        s.data.sent += n;
        if (n < piece.length) return; // the rest after `drain`
      }
      s.end();
    };
    servers.push(
      Bun.listen<{ sent: number }>({
        hostname: "127.0.0.1",
        port: 0,
        socket: {
          open(s) {
            s.data = { sent: 0 };
            push(s);
          },
          drain: push,
          data() {},
        },
      }),
    );
    f.ep = await proxy(`127.0.0.1:${servers[0]!.port}`);
    const before = f.ep!.rssKiB();
    const c = client("192.0.2.1", 1500);
    const s = await c.sock;
    s.pause(); // a slow reader: nothing is read for a second
    await Bun.sleep(1000);
    const stalled = f.ep!.rssKiB();
    expect(c.bytesReceived()).toBe(0);
    // Without backpressure the proxy would hold most of the 128 MiB by now.
    expect(stalled - before).toBeLessThan(32 * 1024);
    s.resume();
    await c.closed;
    expect(c.bytesReceived()).toBe(total);
  }, 30_000);
});
