// An origin that misbehaves, on both engines of an http service: it closes
// (FIN) or resets (RST) before or in the middle of its response, answers
// garbage, a truncated or oversized head, an interim response and then
// nothing, or stalls mid-body. Each time curl (not our parser) must get a
// timely, truthful outcome (a 502 before anything was sent, else a cut
// connection, never a truncated body passed off as whole), the origin error
// is counted in its class, and the proxy ends with no connection open and no
// descriptor more than it started with.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { linesOf, logDir } from "./helpers/accesslog";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { blackhole } from "./helpers/netns";
import { scrape, workdir, writeConfig } from "./helpers/pools";
import { fdCount, settled as settledAt, until } from "./helpers/wait";

const f = proxyFixture();
const ORIGIN_PORT = 9000;

type Behaviour = (s: Socket<Conn>) => void;
/** An origin connection's unparsed bytes; `deaf`: what comes after the head is not read (an upload's body). */
type Conn = { buf: string; deaf: boolean; more?: () => void };

/** The size of /big's body: far more than the sockets' buffers hold. */
const BIG = 256 * 1024 * 1024;
const MIB = Buffer.alloc(1024 * 1024, "a");

const HEAD_100 = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";

/** What the origin does once it has a whole request head, by the request's path. */
const BEHAVIOURS: Record<string, Behaviour> = {
  "/ok": (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
  "/fin-before": (s) => void s.end(),
  "/rst-before": (s) => void s.terminate(),
  "/fin-mid": (s) => {
    s.write(`${HEAD_100}0123456789`);
    setTimeout(() => s.end(), 100);
  },
  "/rst-mid": (s) => {
    s.write(`${HEAD_100}0123456789`);
    setTimeout(() => s.terminate(), 100);
  },
  // A body framed by the origin's close (no length, not chunked): an RST is no end of it (RFC 9112 §8).
  "/rst-close-framed": (s) => {
    s.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789");
    setTimeout(() => s.terminate(), 100);
  },
  "/fin-close-framed": (s) => {
    s.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789");
    setTimeout(() => s.end(), 100);
  },
  // A long body, sent as fast as it is taken.
  "/big": (s) => {
    s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BIG}\r\n\r\n`);
    let left = BIG;
    s.data.more = () => {
      while (left > 0) {
        const n = s.write(left < MIB.length ? MIB.subarray(0, left) : MIB);
        if (n <= 0) return;
        left -= n;
      }
    };
    s.data.more();
  },
  // Nothing at all, an interim response then nothing, or a body that stops: deadlines.
  "/silent": () => {},
  "/interim-stall": (s) => void s.write("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"),
  "/stall-mid": (s) => void s.write(`${HEAD_100}0123456789`),
  // During an upload (the body is not read): a FIN, an RST, an early answer then FIN, or no more reading at all.
  "/up-fin": (s) => void s.end(),
  "/up-rst": (s) => void s.terminate(),
  "/up-early": (s) => void s.end("HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!"),
  "/up-stall": (s) => void s.pause(),
  // More than the framing says, in the same read: a second response after the first, a body to a HEAD.
  "/extra": (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"),
  // Both framings: Transfer-Encoding wins, Content-Length is dropped (RFC 9112 §6.3 rule 3).
  "/cl-te": (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
  "/head-body": (s) => void s.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"),
  "/garbage": (s) => void s.write("garbage garbage\r\n\r\n"),
  "/truncated-head": (s) => void s.end("HTTP/1.1 200 OK\r\nContent-Le"),
  "/interim-fin": (s) => void s.end("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"),
  "/oversized-head": (s) => void s.write(`HTTP/1.1 200 OK\r\nx-a: ${"a".repeat(70_000)}`),
  "/bad-chunk": (s) => void s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"),
};

/** An origin that reads one request head per connection and does what its path says. */
function scriptedOrigin() {
  return Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: ORIGIN_PORT,
    socket: {
      open: (s) => void (s.data = { buf: "", deaf: false }),
      drain: (s) => s.data.more?.(),
      data(s, d) {
        if (s.data.deaf) return;
        s.data.buf += d.toString("latin1");
        const end = s.data.buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const path = s.data.buf.split(" ")[1]!;
        s.data.buf = s.data.buf.slice(end + 4);
        s.data.deaf = path.startsWith("/up-") || path === "/big";
        (BEHAVIOURS[path] ?? BEHAVIOURS["/ok"]!)(s);
      },
    },
  });
}

interface CurlResult {
  /** curl's exit code: 0, 18 (partial body), 52 (empty reply), 56 (receive failure: reset), 28 (its own timeout). */
  exit: number;
  code: string;
  body: string;
  ms: number;
}

/** curl asks for `path` at edge port `port`; with `upload`, it POSTs that file (no Expect: 100-continue). */
async function curl(path: string, maxSeconds = 8, port = 7000, upload?: string, head = false): Promise<CurlResult> {
  const t0 = performance.now();
  const up = upload ? ["-H", "Expect:", "--data-binary", `@${upload}`] : head ? ["-I"] : [];
  const p = Bun.spawn(["curl", "-s", "--max-time", `${maxSeconds}`, ...up, "-w", "\n%{http_code}", `http://192.0.2.1:${port}${path}`], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  const exit = await p.exited;
  const nl = out.lastIndexOf("\n");
  return { exit, code: out.slice(nl + 1), body: out.slice(0, nl), ms: performance.now() - t0 };
}


describe.each(["epoll", "bun"] as const)("an origin that misbehaves (http, engine %s)", (engine) => {
  async function start(extra = "", origin = `127.0.0.1:${ORIGIN_PORT}`): Promise<{ w: ReturnType<typeof workdir>; log: string }> {
    const w = workdir();
    const log = join(logDir(), "access.log");
    writeConfig(w, {
      mode: "http",
      origins: [origin],
      ports: "7000-7003",
      extra: `engine = "${engine}"\naccess_log = "${log}"\nidle_timeout = "1500ms"\nfirst_byte_timeout = "1s"\neject = { failures = 1, base_duration = "30s", duration = "30s" }\n${extra}`,
    });
    f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
    return { w, log };
  }

  /** After a first request (what the proxy keeps open: its idle origin connection, the admin's), its descriptor count. */
  async function baseline(w: ReturnType<typeof workdir>): Promise<number> {
    expect((await curl("/ok")).code).toBe("200");
    await scrape(w.admin);
    return fdCount(f.ep!.pid);
  }

  /** Every connection closed, and the descriptors back to `fds` (an origin connection kept alive aside). */
  const settled = (w: ReturnType<typeof workdir>, fds: number) => settledAt(w.admin, f.ep!.pid, fds);

  test("closed or reset before any response byte: 502 at once, counted as a reset; the origin is not ejected for it", async () => {
    f.servers.push(scriptedOrigin());
    const { w, log } = await start();
    try {
      // A first request opens what the proxy keeps open (its origin connection stays idle for the next).
      const fds = await baseline(w);
      for (const path of ["/fin-before", "/rst-before"]) {
        const r = await curl(path);
        expect({ path, code: r.code, body: r.body }).toEqual({ path, code: "502", body: expect.stringContaining(`origin 127.0.0.1:${ORIGIN_PORT}:`) });
        expect(r.ms).toBeLessThan(1000);
      }
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "reset" })).toBe(2);
      expect(m("edgeproxy_origin_ejections_total")).toBe(0);
      expect((await curl("/ok")).code).toBe("200");
      await settled(w, fds);
      const lines = (await linesOf(log, 4)).filter((l) => l.path === "/fin-before" || l.path === "/rst-before");
      expect(lines.map((l) => l.status)).toEqual([502, 502]);
    } finally {
      w.done();
    }
  });

  test("garbage, a truncated head, a 1xx then FIN, an oversized head, a malformed chunk: 502 before the response began, a cut after; counted", async () => {
    f.servers.push(scriptedOrigin());
    const { w } = await start();
    try {
      const fds = await baseline(w);
      const got: Record<string, string> = {};
      for (const path of ["/garbage", "/truncated-head", "/interim-fin", "/oversized-head", "/bad-chunk"]) {
        const r = await curl(path);
        got[path] = `${r.code} ${r.exit}`;
        expect(r.ms).toBeLessThan(1000);
      }
      // The chunked response began (its head went on): the client sees the cut, not a clean end (curl 18 or 56).
      expect(got).toEqual({ "/garbage": "502 0", "/truncated-head": "502 0", "/interim-fin": "502 0", "/oversized-head": "502 0", "/bad-chunk": expect.stringMatching(/^(200 (18|56)|000 56)$/) });
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "protocol" })).toBe(3);
      expect(m("edgeproxy_origin_errors_total", { class: "reset" })).toBe(2);
      await settled(w, fds);
    } finally {
      w.done();
    }
  });

  test("closed or reset mid-body: the client sees the cut, never a whole response; a close-framed body ends clean only at a FIN", async () => {
    f.servers.push(scriptedOrigin());
    const { w } = await start();
    try {
      const fds = await baseline(w);
      const got: Record<string, string> = {};
      for (const path of ["/fin-mid", "/rst-mid", "/rst-close-framed", "/fin-close-framed"]) {
        const r = await curl(path);
        got[path] = `${r.code} ${r.exit} ${r.body}`;
        expect(r.ms).toBeLessThan(1000);
      }
      expect(got).toEqual({
        "/fin-mid": expect.stringMatching(/^200 (18|56) 0123456789$/),
        "/rst-mid": expect.stringMatching(/^200 (18|56) 0123456789$/),
        "/rst-close-framed": expect.stringMatching(/^200 (18|56) 0123456789$/),
        "/fin-close-framed": "200 0 0123456789",
      });
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "reset" })).toBe(3);
      await settled(w, fds);
    } finally {
      w.done();
    }
  });

  test("an origin that never answers the SYN: 504 at connect_timeout, blamed on it, and the given-up connect's descriptor closed then", async () => {
    blackhole(); // SYNs to 198.51.100.2 go nowhere (helpers/netns.ts)
    const { w, log } = await start('connect_timeout = "400ms"', "198.51.100.2:80");
    try {
      await scrape(w.admin);
      const fds = fdCount(f.ep!.pid);
      const rs = await Promise.all([7000, 7001, 7002].map((port) => curl("/", 8, port)));
      for (const r of rs) {
        expect(`${r.code} ${r.body}`).toBe("504 origin connect timeout\n");
        expect(r.ms).toBeGreaterThan(300);
        expect(r.ms).toBeLessThan(3000);
      }
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "timeout" })).toBe(3);
      expect(m("edgeproxy_origin_ejections_total")).toBeGreaterThanOrEqual(1);
      // The kernel would retry each SYN for minutes (net.ipv4.tcp_syn_retries): the engine closes a connect its
      // exchange gave up at once. Bun's sockets cannot: Bun.connect gives no handle on a connect under way, so
      // its descriptor stays until the kernel gives up (about 2 min); only the connections are checked there.
      if (engine === "epoll") await settled(w, fds);
      else expect(await until(async () => (await scrape(w.admin))("edgeproxy_connections_active") === 0, 3000)).toBe(true);
      const lines = await linesOf(log, 3);
      expect(lines.map((l) => `${l.status} ${l.reason}`)).toEqual(["504 origin connect timeout", "504 origin connect timeout", "504 origin connect timeout"]);
    } finally {
      w.done();
    }
  });

  test("an origin that stalls: 504 at first_byte_timeout with nothing sent or only a 1xx; cut at idle_timeout mid-body; counted", async () => {
    f.servers.push(scriptedOrigin());
    const { w } = await start();
    try {
      const fds = await baseline(w);
      const [silent, interim, mid] = await Promise.all([curl("/silent", 8, 7000), curl("/interim-stall", 8, 7001), curl("/stall-mid", 8, 7002)]);
      expect(`${silent.code} ${silent.body}`).toBe("504 origin first byte timeout\n");
      expect(silent.ms).toBeGreaterThan(800);
      expect(silent.ms).toBeLessThan(3000);
      expect(`${mid.code} ${mid.exit} ${mid.body}`).toMatch(/^200 (18|56) 0123456789$/);
      expect(mid.ms).toBeGreaterThan(1200);
      expect(mid.ms).toBeLessThan(4000);
      // An interim response is not the response: the final one is still due at first_byte_timeout (a 504, not a cut at idle_timeout).
      expect(`${interim.code} ${interim.exit} ${interim.body}`).toBe("504 0 origin first byte timeout\n");
      expect(interim.ms).toBeGreaterThan(800);
      expect(interim.ms).toBeLessThan(3000);
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "timeout" })).toBe(2);
      expect(m("edgeproxy_idle_timeouts_total")).toBe(1);
      expect(m("edgeproxy_origin_ejections_total")).toBe(0);
      await settled(w, fds);
    } finally {
      w.done();
    }
  });

  test("an origin that fails during an upload: 502 at once on its FIN or RST, its early answer reaches the client, one that stops reading is cut at idle_timeout", async () => {
    f.servers.push(scriptedOrigin());
    const { w } = await start();
    const body = join(w.dir, "body");
    writeFileSync(body, Buffer.alloc(32 * 1024 * 1024, "a"));
    try {
      const fds = await baseline(w);
      const got: Record<string, string> = {};
      const ms: Record<string, number> = {};
      for (const path of ["/up-fin", "/up-rst", "/up-early", "/up-stall"]) {
        const r = await curl(path, 8, 7000, body);
        got[path] = `${r.code} ${r.body.split("\n")[0]}`;
        ms[path] = r.ms;
      }
      expect(got).toEqual({
        "/up-fin": expect.stringMatching(/^502 origin 127\.0\.0\.1:9000: /),
        "/up-rst": expect.stringMatching(/^502 origin 127\.0\.0\.1:9000: /),
        "/up-early": "413 big!",
        "/up-stall": "000 ",
      });
      for (const path of ["/up-fin", "/up-rst", "/up-early"]) expect(ms[path]!).toBeLessThan(1000);
      expect(ms["/up-stall"]!).toBeGreaterThan(1200);
      expect(ms["/up-stall"]!).toBeLessThan(4000);
      const m = await scrape(w.admin);
      expect(m("edgeproxy_idle_timeouts_total")).toBe(1);
      expect(m("edgeproxy_origin_ejections_total")).toBe(0);
      await settled(w, fds);
    } finally {
      w.done();
    }
  });

  test("a client that resets mid-download: counted as a client reset, its log line says so", async () => {
    f.servers.push(scriptedOrigin());
    const { w, log } = await start();
    try {
      const fds = await baseline(w);
      let got = 0;
      await new Promise<void>((done) => {
        void Bun.connect({
          hostname: "192.0.2.1",
          port: 7000,
          socket: {
            open: (s) => void s.write("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"),
            data(s, d) {
              got += d.length;
              if (got > 4 * 1024 * 1024) s.terminate();
            },
            close: () => done(),
          },
        });
      });
      // The engine posts its counters to the main thread every 250 ms at most, and the reset may be seen after the client is gone.
      expect(await until(async () => (await scrape(w.admin))("edgeproxy_client_resets_total") === 1, 3000)).toBe(true);
      await settled(w, fds);
      const line = (await linesOf(log, 2)).find((l) => l.path === "/big");
      expect(line?.reason).toBe("client_reset");
    } finally {
      w.done();
    }
  });

  test("an origin that sends more than its framing says: the client gets the response, the extra bytes are dropped and the connection is not reused", async () => {
    f.servers.push(scriptedOrigin());
    const { w } = await start();
    try {
      const fds = await baseline(w);
      expect(`${(await curl("/extra")).body}`).toBe("ok");
      expect((await curl("/ok")).body).toBe("ok");
      const head = await curl("/head-body", 8, 7000, undefined, true);
      expect({ code: head.code, exit: head.exit }).toEqual({ code: "200", exit: 0 });
      expect((await curl("/ok")).body).toBe("ok");
      expect((await curl("/cl-te")).body).toBe("hello");
      // /extra and /head-body each went on the connection kept from the request before, which then closed; /cl-te's stays.
      const m = await scrape(w.admin);
      expect({ opened: m("edgeproxy_http_origin_connections_total", { how: "opened" }), reused: m("edgeproxy_http_origin_connections_total", { how: "reused" }) }).toEqual({ opened: 3, reused: 3 });
      await settled(w, fds);
    } finally {
      w.done();
    }
  });
});
