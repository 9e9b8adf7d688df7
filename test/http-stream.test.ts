// http mode streaming: 100 MB each way through a stalled peer with the
// proxy's memory measured, and a WebSocket echoed through the proxy.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { createHash } from "node:crypto";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { rawClient } from "./helpers/http";

const f = proxyFixture();
const servers = f.servers;
const TOTAL = 100 * 1024 * 1024;
const CHUNK = new Uint8Array(1024 * 1024).fill(0x61);
const proxy = (origin: string) => EdgeproxyProcess.start(["--mode", "http", "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", origin]);

/** Write `total` bytes of CHUNK to s as fast as it takes them, then call done. */
function pump(s: Socket<any>, state: { sent: number }, total: number, done?: () => void): void {
  while (state.sent < total) {
    const piece = CHUNK.subarray(0, Math.min(CHUNK.length, total - state.sent));
    const n = s.write(piece);
    if (n > 0) state.sent += n;
    if (n < piece.length) return; // the rest on drain
  }
  done?.();
}

describe("http streaming", () => {
  test("100 MB download to a client that stops reading: proxy RSS stays bounded, every byte arrives", async () => {
    servers.push(
      Bun.listen<{ sent: number; started: boolean }>({
        hostname: "127.0.0.1",
        port: 0,
        socket: {
          open: (s) => void (s.data = { sent: 0, started: false }),
          data(s) {
            if (s.data.started) return;
            s.data.started = true;
            s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${TOTAL}\r\n\r\n`);
            pump(s, s.data, TOTAL);
          },
          drain: (s) => pump(s, s.data, TOTAL),
        },
      }),
    );
    f.ep = await proxy(`127.0.0.1:${servers[0]!.port}`);
    const before = f.ep!.rssKiB();
    let got = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const s = await Bun.connect({
      hostname: "192.0.2.1",
      port: 80,
      socket: {
        data(_s, d) {
          got += d.length;
        },
        close: () => done(),
      },
    });
    s.write("GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    s.pause(); // a slow reader: nothing read for a second and a half
    const at = got;
    await Bun.sleep(1500);
    const stalled = f.ep!.rssKiB();
    expect(got).toBe(at);
    expect(got).toBeLessThan(TOTAL / 4);
    // Without backpressure the proxy would hold most of the 100 MB by now.
    expect(stalled - before).toBeLessThan(32 * 1024);
    s.resume();
    await finished;
    expect(got).toBeGreaterThan(TOTAL); // the body plus the head
    expect(got).toBeLessThan(TOTAL + 200);
  }, 60_000);

  test("100 MB upload to an origin that stops reading: proxy RSS stays bounded, every byte arrives", async () => {
    let origin!: Socket<{ got: number; head: boolean }>;
    let received!: (n: number) => void;
    const all = new Promise<number>((r) => (received = r));
    servers.push(
      Bun.listen<{ got: number; head: boolean }>({
        hostname: "127.0.0.1",
        port: 0,
        socket: {
          open(s) {
            s.data = { got: 0, head: false };
            origin = s;
          },
          data(s, d) {
            let body = d;
            if (!s.data.head) {
              const end = d.indexOf("\r\n\r\n");
              s.data.head = true;
              body = d.subarray(end + 4);
              s.pause(); // stop reading right after the head
            }
            s.data.got += body.length;
            if (s.data.got >= TOTAL) {
              s.end(`HTTP/1.1 200 OK\r\ncontent-length: ${String(s.data.got).length}\r\nconnection: close\r\n\r\n${s.data.got}`);
              received(s.data.got);
            }
          },
        },
      }),
    );
    f.ep = await proxy(`127.0.0.1:${servers[0]!.port}`);
    const before = f.ep!.rssKiB();
    const c = await rawClient("192.0.2.1", 8080);
    const state = { sent: 0 };
    c.send(`PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${TOTAL}\r\n\r\n`);
    (c.socket as any).data = state;
    const write = () => pump(c.socket, state, TOTAL);
    // rawClient has no drain hook: pump on a timer until everything is out (bounded by the test timeout).
    const timer = setInterval(write, 5);
    await Bun.sleep(1500);
    const stalled = f.ep!.rssKiB();
    expect(state.sent).toBeLessThan(TOTAL / 2);
    expect(stalled - before).toBeLessThan(32 * 1024);
    origin.resume();
    expect(await all).toBe(TOTAL);
    clearInterval(timer);
    const reply = await c.until((t) => t.endsWith(String(TOTAL)));
    expect(reply).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(reply.endsWith(`\r\n\r\n${TOTAL}`)).toBe(true);
  }, 60_000);

  test("a WebSocket upgrade passes through and echoes, and the tunnel closes with the client", async () => {
    // A real WebSocket server (RFC 6455) as the origin; Bun.serve is fine off the data path.
    const ws = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req, server) {
        return server.upgrade(req) ? undefined : new Response("no upgrade", { status: 400 });
      },
      websocket: {
        message(socket, msg) {
          socket.send(`echo: ${msg}`);
        },
      },
    });
    try {
      f.ep = await proxy(`127.0.0.1:${ws.port}`);
      const c = await rawClient("192.0.2.5", 80);
      const key = Buffer.from("edgeproxy-test-k").toString("base64");
      c.send(`GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      const head = await c.until((t) => t.includes("\r\n\r\n"));
      expect(head).toMatch(/^HTTP\/1\.1 101 /);
      const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
      expect(head).toContain(`sec-websocket-accept: ${accept}`);
      expect(head.toLowerCase()).toContain("upgrade: websocket");
      // A masked text frame (client to server frames are masked, RFC 6455 §5.3).
      const payload = Buffer.from("hello through edgeproxy");
      const mask = Buffer.from([1, 2, 3, 4]);
      const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4]!)]);
      const start = head.length;
      c.send(frame);
      const t = await c.until((t) => t.length >= start + 2 && t.length >= start + 2 + t.charCodeAt(start + 1));
      const reply = Buffer.from(t.slice(start), "latin1");
      expect(reply[0]).toBe(0x81);
      expect(reply.subarray(2, 2 + reply[1]!).toString()).toBe("echo: hello through edgeproxy");
      // A close frame: the server answers and closes, the tunnel follows.
      c.send(Buffer.from([0x88, 0x80, 0, 0, 0, 0]));
      await c.until(() => false, 3000);
      expect(c.closed).toBe(true);
    } finally {
      ws.stop(true);
    }
  }, 20_000);
});
