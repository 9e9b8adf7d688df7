// An origin that resets a byte stream the proxy relays (a tcp service, an
// http service's WebSocket tunnel), seen first by a send to it: the client
// must get a reset, not a clean FIN (a truncated stream taken for whole).
// edgeproxy is stopped (SIGSTOP) while the client's bytes and then the
// origin's RST arrive, so that when it runs again it reads the client's
// bytes and sends them to the origin before it has read of the RST.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { EdgeproxyProcess, sigstop } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { scrape, workdir, writeConfig } from "./helpers/pools";

const f = proxyFixture();
const ORIGIN_PORT = 9000;

/** A connection's end as its client saw it: "reset", "fin", or "open" (neither within the wait). */
type End = "reset" | "fin" | "open";

/**
 * Connect to the edge, send `hello` and wait for `greeting` (the relay or tunnel is up), then stop
 * edgeproxy, send "more", have the origin reset its side (`resetOrigin`), resume: how the client's
 * connection ends.
 */
async function resetUnderSend(hello: string, greeting: string, resetOrigin: () => void): Promise<End> {
  let got = "";
  let end: (e: End) => void = () => {};
  const ended = new Promise<End>((r) => (end = r));
  const s: Socket = await Bun.connect({
    hostname: "192.0.2.1",
    port: 7000,
    allowHalfOpen: true,
    socket: {
      data: (_s, d) => void (got += d.toString("latin1")),
      end: () => end("fin"),
      close: (_s, err) => end(err ? "reset" : "fin"),
    },
  });
  s.write(hello);
  for (let i = 0; i < 100 && !got.includes(greeting); i++) await Bun.sleep(20);
  expect(got).toContain(greeting);
  await sigstop(f.ep!.pid);
  try {
    s.write("more");
    await Bun.sleep(50);
    resetOrigin();
    await Bun.sleep(50);
  } finally {
    process.kill(f.ep!.pid, "SIGCONT");
  }
  const timer = setTimeout(() => end("open"), 3000);
  const how = await ended;
  clearTimeout(timer);
  s.terminate();
  return how;
}

describe.each(["epoll", "bun"] as const)("an origin that resets a relayed stream, seen by a send (engine %s)", (engine) => {
  test("tcp: the client is reset, the reset counted", async () => {
    const w = workdir();
    const origins: Socket[] = [];
    f.servers.push(Bun.listen({ hostname: "127.0.0.1", port: ORIGIN_PORT, socket: { open: (s) => void origins.push(s), data: (s) => void s.write("hi") } }));
    try {
      writeConfig(w, { origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000", extra: `engine = "${engine}"` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(await resetUnderSend("hello", "hi", () => origins[0]!.terminate())).toBe("reset");
      expect((await scrape(w.admin))("edgeproxy_origin_errors_total", { class: "reset" })).toBe(1);
    } finally {
      w.done();
    }
  });

  test("http: a WebSocket tunnel's client is reset", async () => {
    const w = workdir();
    const origins: Socket[] = [];
    const upgraded = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    f.servers.push(Bun.listen({ hostname: "127.0.0.1", port: ORIGIN_PORT, socket: { open: (s) => void origins.push(s), data: (s, d) => void (d.includes("\r\n\r\n") && s.write(upgraded)) } }));
    try {
      writeConfig(w, { mode: "http", origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000", extra: `engine = "${engine}"` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const req = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
      expect(await resetUnderSend(req, "101 Switching Protocols", () => origins[0]!.terminate())).toBe("reset");
    } finally {
      w.done();
    }
  });

  test("http: a WebSocket tunnel whose origin closed, then resets the client's next bytes: the client is reset at once", async () => {
    const w = workdir();
    const upgraded = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    // Answers the upgrade, then closes (FIN): the client's later bytes draw an RST.
    f.servers.push(Bun.listen({ hostname: "127.0.0.1", port: ORIGIN_PORT, socket: { data: (s, d) => void (d.includes("\r\n\r\n") && (s.write(upgraded), setTimeout(() => s.end(), 100))) } }));
    try {
      writeConfig(w, { mode: "http", origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000", extra: `engine = "${engine}"\nidle_timeout = "20s"` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      let got = "";
      let fin = false;
      let closed: (how: string) => void = () => {};
      const done = new Promise<string>((r) => (closed = r));
      const s: Socket = await Bun.connect({
        hostname: "192.0.2.1",
        port: 7000,
        allowHalfOpen: true,
        socket: { data: (_s, d) => void (got += d.toString("latin1")), end: () => void (fin = true), close: (_s, err) => closed(err ? "reset" : "fin") },
      });
      s.write("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
      for (let i = 0; i < 100 && !fin; i++) await Bun.sleep(20);
      expect(got).toContain("101 Switching Protocols");
      expect(fin).toBe(true);
      // The tunnel is half-closed: the client still sends; the origin's socket is gone and answers with an RST.
      for (let i = 0; i < 5; i++) {
        s.write("more");
        await Bun.sleep(100);
      }
      const timer = setTimeout(() => closed("open"), 3000);
      expect(await done).toBe("reset");
      clearTimeout(timer);
      s.terminate();
    } finally {
      w.done();
    }
  });
});
