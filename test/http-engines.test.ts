// Hostile HTTP/1.1 clients get the same, correct outcome on both data planes:
// the epoll engine (engine = "epoll", src/engine/http*.ts over raw
// descriptors) and Bun's sockets (engine = "bun"), which share the HTTP code
// of src/proxy/http/. Each case runs on each engine, in a namespace of its own.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin, rawClient } from "./helpers/http";
import { exchange, text } from "./helpers/net";
import { scrape, workdir, writeConfig } from "./helpers/pools";

const f = proxyFixture();
const ENGINES = ["epoll", "bun"] as const;

/** edgeproxy in http mode on 192.0.2.1:80 towards `origin`, on `engine`, with `extra` service keys. */
async function start(engine: string, origin: number, extra = ""): Promise<ReturnType<typeof workdir>> {
  const w = workdir();
  writeConfig(w, { mode: "http", origins: [`127.0.0.1:${origin}`], ports: "80", extra: `engine = "${engine}"\n${extra}` });
  f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
  return w;
}

/** `raw`'s responses in order, each framed by its Content-Length: the body of each (what is left over, if any, is `rest`). */
function splitResponses(raw: Buffer): { bodies: string[]; statuses: number[]; rest: number } {
  const bodies: string[] = [];
  const statuses: number[] = [];
  let at = 0;
  for (;;) {
    const end = raw.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const head = raw.subarray(at, end).toString("latin1");
    const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
    if (!(len >= 0) || end + 4 + len > raw.length) break;
    statuses.push(Number(head.slice(9, 12)));
    bodies.push(raw.subarray(end + 4, end + 4 + len).toString("latin1"));
    at = end + 4 + len;
  }
  return { bodies, statuses, rest: raw.length - at };
}

describe("a client that does not read its answers (slow read)", () => {
  test.each(ENGINES.flatMap((e) => [[e, ""], [e, ", its FIN after them (RFC 9112 §9.6: still answered), then the close"]] as const))("%s: pipelined requests wait while its answers pile up (bounded memory, the origin asked no further); once it reads, every answer comes, in order%s", async (engine, fin) => {
    // 2,000 small requests in one go, 16 KiB answers: 32 MB of answers, far more than the socket buffers hold.
    const N = 2000;
    const pad = "x".repeat(16 * 1024);
    const o = httpOrigin("127.0.0.1", "o", (r) => `HTTP/1.1 200 OK\r\ncontent-length: ${r.target.length + pad.length}\r\n\r\n${r.target}${pad}`);
    f.servers.push(o.listener);
    const w = await start(engine, o.port);
    let s: Socket | undefined;
    try {
      const rss0 = f.ep!.rssKiB();
      const chunks: Buffer[] = [];
      let closed = false;
      s = await Bun.connect({ hostname: "192.0.2.1", port: 80, socket: { open: (x) => x.pause(), data: (_x, d) => void chunks.push(Buffer.from(d)), close: () => void (closed = true) } });
      s.pause();
      const reqs = Buffer.from(Array.from({ length: N }, (_, i) => `GET /${i} HTTP/1.1\r\nHost: a\r\n\r\n`).join(""));
      expect(s.write(reqs)).toBe(reqs.length);
      if (fin) s.shutdown();
      // Not reading for two seconds: the proxy must stop taking requests on, not buffer their answers.
      await Bun.sleep(2000);
      const asked = o.seen.length;
      const grown = f.ep!.rssKiB() - rss0;
      expect(asked).toBeGreaterThan(0);
      // The kernel's buffers (both sockets' on loopback: a few MB) and 256 KiB of ours, not 32 MB.
      expect(asked).toBeLessThan(N / 2);
      expect(grown).toBeLessThan(24 * 1024);
      s.resume();
      const deadline = Date.now() + 20_000;
      while (!closed && Date.now() < deadline && splitResponses(Buffer.concat(chunks)).bodies.length < N) await Bun.sleep(50);
      const got = splitResponses(Buffer.concat(chunks));
      expect(got.bodies.length).toBe(N);
      expect(got.statuses.every((c) => c === 200)).toBe(true);
      expect(got.bodies.map((b) => b.slice(0, b.indexOf("x")))).toEqual(Array.from({ length: N }, (_, i) => `/${i}`));
      expect(got.rest).toBe(0);
      expect(o.seen.length).toBe(N);
      if (fin) {
        for (let i = 0; i < 40 && !closed; i++) await Bun.sleep(50);
        expect(closed).toBe(true);
      }
    } finally {
      s?.terminate();
      w.done();
    }
  }, 60_000);

  test.each(ENGINES)("%s: one that never reads is closed at idle_timeout, the answers it held freed", async (engine) => {
    const pad = "x".repeat(16 * 1024);
    const o = httpOrigin("127.0.0.1", "o", `HTTP/1.1 200 OK\r\ncontent-length: ${pad.length}\r\n\r\n${pad}`);
    f.servers.push(o.listener);
    const w = await start(engine, o.port, `idle_timeout = "3s"`);
    let s: Socket | undefined;
    try {
      const t0 = Date.now();
      s = await Bun.connect({ hostname: "192.0.2.1", port: 80, socket: { open: (x) => x.pause(), data: () => {} } });
      s.pause();
      const reqs = Buffer.from("GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(2000));
      expect(s.write(reqs)).toBe(reqs.length);
      // The close reaches a client that does not read as an RST or a FIN behind the data it holds: poll the proxy's count instead.
      let active = 1;
      while (Date.now() - t0 < 10_000 && active > 0) {
        await Bun.sleep(200);
        active = (await scrape(w.admin))("edgeproxy_connections_active") ?? -1;
      }
      expect(active).toBe(0);
      expect(Date.now() - t0).toBeGreaterThan(2500);
      const m = await scrape(w.admin);
      expect(m("edgeproxy_idle_timeouts_total")).toBe(1);
    } finally {
      s?.terminate();
      w.done();
    }
  }, 30_000);
});

describe("an origin that sends more than its framing says", () => {
  // A body to a HEAD, with a 204 or 304, or past its Content-Length (RFC 9112 §6.3: the response ended before it).
  // Too long for one read: its rest is still on the way when the response is done.
  const tail = "y".repeat(300_000) + "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nPOISON";
  const cases = [
    { name: "a body to a HEAD", first: "HEAD /1", answer: `HTTP/1.1 200 OK\r\ncontent-length: ${tail.length}\r\n\r\n${tail}`, head: `HTTP/1.1 200 OK\r\ncontent-length: ${tail.length}\r\n\r\n` },
    { name: "a body with a 204", first: "GET /1", answer: `HTTP/1.1 204 No Content\r\n\r\n${tail}`, head: "HTTP/1.1 204 No Content\r\n\r\n" },
    { name: "a body with a 304", first: "GET /1", answer: `HTTP/1.1 304 Not Modified\r\netag: "a"\r\n\r\n${tail}`, head: `HTTP/1.1 304 Not Modified\r\netag: "a"\r\n\r\n` },
    { name: "more than its Content-Length", first: "GET /1", answer: `HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi${tail}`, head: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi" },
  ];
  test.each(ENGINES.flatMap((e) => cases.map((c) => [e, c.name, c] as const)))("%s, %s: its connection is not reused, the pipelined next request gets its own answer", async (engine, _name, c) => {
    let conns = 0;
    const o = Bun.listen<{ id: number }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: (s) => void (s.data = { id: ++conns }),
        data(s, d) {
          // One request per write here (the proxy sends the next only after this answer).
          const t = Buffer.from(d).toString("latin1");
          s.write(t.includes(" /1 ") ? c.answer : `HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n${s.data.id}!`);
        },
      },
    });
    f.servers.push(o);
    const w = await start(engine, o.port);
    try {
      const r = await exchange("192.0.2.1", 80, `${c.first} HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n`, 10_000);
      expect(r.kind).toBe("data");
      // What the client got: the first response as framed, then the second's own answer, on a new origin connection.
      expect(text(r)).toBe(`${c.head}HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n2!`);
      expect(conns).toBe(2);
    } finally {
      w.done();
    }
  }, 30_000);
});

describe("an origin that answers before the request body is all sent", () => {
  test.each(ENGINES)("%s: a client that sends its whole body before it reads gets the answer, not a reset (RFC 9112 §9.6: close by half-close and read on)", async (engine) => {
    // Reads no more after the head (the proxy's reads from the client stop too: backpressure), then answers 401.
    const o = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s, d) {
          if (!Buffer.from(d).includes("POST /up ")) return;
          s.pause();
          setTimeout(() => s.write("HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope"), 500);
        },
      },
    });
    f.servers.push(o);
    const w = await start(engine, o.port);
    try {
      // A client that writes its whole body before it reads (as many do): the answer must wait for it, not a reset.
      const body = Buffer.alloc(16 << 20, 122);
      const r = await exchange("192.0.2.1", 80, Buffer.concat([Buffer.from(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`), body]), 10_000);
      expect(r.kind).toBe("data");
      expect(text(r)).toBe("HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope");
    } finally {
      w.done();
    }
  }, 30_000);
});

describe("a client that half-closes", () => {
  test.each(ENGINES)("%s: its FIN right after an upgrade request reaches the origin once the tunnel opens; the origin's answer and close follow", async (engine) => {
    const seen: string[] = [];
    // A tunnel origin: 101, then on the client's FIN (half-open) one last message and its own FIN.
    const o = Bun.listen<{ got: string }>({
      hostname: "127.0.0.1",
      port: 0,
      allowHalfOpen: true,
      socket: {
        open: (s) => void (s.data = { got: "" }),
        data(s, d) {
          const t = Buffer.from(d).toString("latin1");
          if (!s.data.got && t.startsWith("GET /ws ")) s.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nhello");
          s.data.got += t;
        },
        end(s) {
          seen.push("fin");
          s.write("bye");
          s.end();
        },
      },
    });
    f.servers.push(o);
    const w = await start(engine, o.port);
    try {
      const t0 = Date.now();
      const r = await exchange("192.0.2.1", 80, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 5000);
      expect(text(r)).toBe("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nhellobye");
      expect(r.kind).toBe("data");
      expect(seen).toEqual(["fin"]);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      w.done();
    }
  }, 30_000);
});

describe("small writes that follow unacknowledged ones", () => {
  // Nagle's algorithm holds a small segment until the last is acknowledged, and the peer's delayed ACK waits
  // ~40 ms for it: a pipelined answer after the first, a request body after its head (TCP_NODELAY, tcp(7)).
  test.each(ENGINES)("%s: five pipelined answers and a body sent after its head each take milliseconds, not a delayed ACK", async (engine) => {
    const o = httpOrigin("127.0.0.1", "o");
    f.servers.push(o.listener);
    const w = await start(engine, o.port);
    const c = await rawClient("192.0.2.1", 80);
    try {
      const median = (a: number[]) => a.sort((x, y) => x - y)[a.length >> 1]!;
      const pipelined: number[] = [];
      const posts: number[] = [];
      for (let i = 0; i < 20; i++) {
        let before = c.text.length;
        let t0 = performance.now();
        c.send("GET /a HTTP/1.1\r\nHost: a\r\n\r\n".repeat(5));
        await c.until((t) => t.slice(before).split("HTTP/1.1 200").length === 6 && t.endsWith("o"));
        pipelined.push(performance.now() - t0);
        before = c.text.length;
        t0 = performance.now();
        c.send("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        // The head reaches the origin alone; the body follows as a write of its own.
        await Bun.sleep(2);
        c.send("hello");
        await c.until((t) => t.length > before && t.endsWith("o"));
        posts.push(performance.now() - t0);
      }
      expect(o.seen.length).toBe(120);
      expect(o.seen.filter((r) => r.method === "POST").every((r) => r.body === "hello")).toBe(true);
      expect(median(pipelined)).toBeLessThan(20);
      expect(median(posts)).toBeLessThan(20);
    } finally {
      c.close();
      w.done();
    }
  }, 30_000);
});

describe("Expect: 100-continue (RFC 9110 §10.1.1), curl against node's http server", () => {
  const SERVER = `const s = require("http").createServer((q, r) => { let n = 0; q.on("data", (d) => (n += d.length)); q.on("end", () => r.end(q.method + " " + n)); });
    if (process.argv[1] === "refuse") s.on("checkContinue", (q, r) => { r.writeHead(401, { "content-length": 4 }); r.end("nope"); });
    s.listen(0, "127.0.0.1", () => console.log(s.address().port));`;
  test.each(ENGINES.flatMap((e) => [[e, "accept"], [e, "refuse"]] as const))("%s, an origin that %ss: the interim 100 or the final answer reaches the client at once, the body only when asked for", async (engine, how) => {
    const node = Bun.spawn(["node", "-e", SERVER, how], { stdout: "pipe", stderr: "pipe" });
    try {
      const line = await node.stdout.getReader().read();
      const port = Number(new TextDecoder().decode(line.value).trim());
      const w = await start(engine, port);
      try {
        const file = join(w.dir, "body");
        writeFileSync(file, Buffer.alloc(2 << 20, 97));
        const t0 = Date.now();
        // curl asks (Expect: 100-continue for a large body) and waits up to 5 s for the 100 before it sends anyway.
        const p = Bun.spawn(["curl", "-sv", "--max-time", "10", "--expect100-timeout", "5", "--data-binary", `@${file}`, "http://192.0.2.1/up"], { stdout: "pipe", stderr: "pipe" });
        const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
        expect(await p.exited).toBe(0);
        expect(err).toContain("> Expect: 100-continue");
        if (how === "accept") {
          expect(err).toContain("< HTTP/1.1 100 Continue");
          expect(out).toBe(`POST ${2 << 20}`);
        } else {
          expect(err).not.toContain("< HTTP/1.1 100");
          expect(err).toContain("< HTTP/1.1 401 Unauthorized");
          expect(out).toBe("nope");
        }
        // Not curl's wait for a 100 that never came.
        expect(Date.now() - t0).toBeLessThan(3000);
      } finally {
        w.done();
      }
    } finally {
      node.kill();
    }
  }, 30_000);
});

describe("a head built to make field-by-field work quadratic", () => {
  // A Connection list of 2,600 options and 1,900 fields, 15 KB (within max_header_size): each field was checked
  // against the whole list (hop-by-hop removal, RFC 9110 §7.6.1), 136 ms of the thread's time per head.
  test.each(ENGINES)("%s: twenty such heads, pipelined, are answered in well under a second", async (engine) => {
    const o = httpOrigin("127.0.0.1", "o");
    f.servers.push(o.listener);
    const w = await start(engine, o.port);
    try {
      const head = `GET / HTTP/1.1\r\nHost: a\r\nConnection: ${Array(2600).fill("bb").join(",")}\r\n${"b:\r\n".repeat(1900)}\r\n`;
      expect(head.length).toBeLessThan(16 * 1024);
      const t0 = performance.now();
      const r = await exchange("192.0.2.1", 80, head.repeat(20), 20_000);
      const ms = performance.now() - t0;
      expect(text(r).split("HTTP/1.1 200 OK").length).toBe(21);
      expect(o.seen.length).toBe(20);
      // The fields the Connection list names are gone, the others passed on.
      expect(o.seen[0]!.lines.filter((l) => /^b: ?$/.test(l)).length).toBe(1900);
      expect(ms).toBeLessThan(1500);
    } finally {
      w.done();
    }
  }, 60_000);
});
