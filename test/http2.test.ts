// HTTP/2 by ALPN on TLS http services, end to end in a namespace of each test's own: real clients
// (curl, h2load, node's TLS with raw frames) against edgeproxy, HTTP/1.1 origins behind it.
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { certFiles } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";

const f = proxyFixture();
const certs = certFiles({ prefix: "ep-h2-", cn: "edge.test" });
const ATTACK = join(import.meta.dir, "helpers/h2attack.mjs");

/** An http service with TLS on 192.0.2.0/24 port 8443, its admin socket, to `origin`. */
async function start(origin: number, ...extra: string[]) {
  const admin = join(certs.dir, `admin-${Math.random().toString(36).slice(2)}.sock`);
  f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin}`, "--tls-cert", certs.cert, "--tls-key", certs.key, "--admin", admin, ...extra]);
  return admin;
}

const metrics = async (admin: string) => (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
const metric = (text: string, name: string) => Number(new RegExp(`^edgeproxy_${name.replace(/[{}"]/g, "\\$&")} (\\d+)`, "m").exec(text)?.[1] ?? NaN);

/** Run a client to completion within `ms` (killed after); its stdout, stderr and exit code. */
async function run(cmd: string[], ms: number) {
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const kill = setTimeout(() => p.kill("SIGKILL"), ms);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(kill);
  return { out, err, code };
}

const curl = (...args: string[]) => run(["curl", "-sk", "--max-time", "10", "--resolve", "edge.test:8443:192.0.2.10", ...args], 15_000);

describe("HTTP/2 by ALPN (http services with TLS)", () => {
  test("curl --http2 speaks HTTP/2 (ALPN h2) to the origin's answer; --http1.1 still HTTP/1.1; same forwarding fields, access log with http_version", async () => {
    const o = httpOrigin("127.0.0.1", "from-origin");
    f.servers.push(o.listener);
    const log = join(certs.dir, "h2-access.log");
    const admin = await start(o.port, "--access-log", log);
    const h2 = await curl("--http2", "-w", "\n%{http_version}", "-H", "cookie: a=1", "-H", "cookie: b=2", "https://edge.test:8443/p?q=1");
    expect(h2.out).toBe("from-origin\n2");
    const seen = o.seen[0]!;
    expect(seen.method).toBe("GET");
    expect(seen.target).toBe("/p?q=1");
    expect(seen.headers.get("host")).toEqual(["edge.test:8443"]);
    expect(seen.headers.get("x-forwarded-proto")).toEqual(["https"]);
    expect(seen.headers.get("x-forwarded-for")).toEqual(["192.0.2.10"]);
    expect(seen.headers.get("forwarded")).toEqual(['for=192.0.2.10;proto=https;host="edge.test:8443"']);
    expect(seen.headers.get("x-request-id")?.length).toBe(1);
    // RFC 9113 §8.2.3: cookie crumbs are one field again for HTTP/1.1.
    expect(seen.headers.get("cookie")).toEqual(["a=1; b=2"]);
    // A body (curl sends content-length): the origin gets it whole.
    const post = await curl("--http2", "-w", "\n%{http_version}", "--data-binary", "x".repeat(100_000), "https://edge.test:8443/up");
    expect(post.out).toBe("from-origin\n2");
    expect(o.seen[1]!.body.length).toBe(100_000);
    // A body of unknown length (no content-length in HTTP/2): chunked to the origin.
    const streamed = await run(["sh", "-c", `head -c 70000 /dev/zero | tr '\\0' y | curl -sk --max-time 10 --resolve edge.test:8443:192.0.2.10 --http2 -w '\\n%{http_version}' -T - https://edge.test:8443/stream`], 15_000);
    expect(streamed.out).toBe("from-origin\n2");
    expect(o.seen[2]!.headers.get("transfer-encoding")).toEqual(["chunked"]);
    expect(o.seen[2]!.body).toBe("y".repeat(70_000));
    const h1 = await curl("--http1.1", "-w", "\n%{http_version}", "https://edge.test:8443/one");
    expect(h1.out).toBe("from-origin\n1.1");
    // Both HTTP/2 requests went over kept-alive origin connections (the pool), HTTP/1.1 on the same.
    expect(o.connections()).toBeLessThanOrEqual(2);
    const m = await metrics(admin);
    expect(metric(m, 'http2_sessions_total{service="default"}')).toBe(3);
    expect(metric(m, 'http2_streams_total{service="default"}')).toBe(3);
    expect(await f.ep!.stop()).toBe(0);
    const lines = readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    const byPath = (p: string) => lines.find((l) => l.path === p);
    expect(byPath("/p")).toMatchObject({ protocol: "http", method: "GET", host: "edge.test:8443", status: 200, http_version: "2", request_id: seen.headers.get("x-request-id")![0] });
    expect(byPath("/up")).toMatchObject({ method: "POST", http_version: "2" });
    expect(byPath("/up").bytes_in).toBeGreaterThanOrEqual(100_000);
    expect(byPath("/one")).toMatchObject({ http_version: "1.1" });
  }, 40_000);

  test("h2load for 5 s over 8 connections x 10 streams: 0 errors, every stream a request", async () => {
    const o = httpOrigin("127.0.0.1", "h2load-ok");
    f.servers.push(o.listener);
    const admin = await start(o.port);
    const r = await run(["h2load", "-D", "5", "-c", "8", "-m", "10", "https://192.0.2.10:8443/load"], 20_000);
    const done = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(r.out);
    expect(done, r.out + r.err).not.toBeNull();
    const [, , doneN, ok, failed, errored, timeout] = done!.map(Number);
    expect({ failed, errored, timeout }).toEqual({ failed: 0, errored: 0, timeout: 0 });
    expect(ok).toBe(doneN!);
    expect(ok).toBeGreaterThan(1000);
    expect(r.out).toContain("Application protocol: h2");
    expect(r.out).toMatch(/status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx/);
    const m = await metrics(admin);
    // Streams still open when h2load stopped its clock are not in its count.
    expect(metric(m, 'http2_streams_total{service="default"}')).toBeGreaterThanOrEqual(ok!);
    expect(metric(m, 'http2_streams_total{service="default"}')).toBeLessThanOrEqual(ok! + 8 * 10);
    // The origin saw a bounded number of connections: streams share the keep-alive pool.
    expect(o.connections()).toBeLessThanOrEqual(8 * 10 + 8);
    console.log(`h2load 5 s, 8 connections x 10 streams: ${ok} requests (${Math.round(ok! / 5)}/s), origin connections ${o.connections()}`);
  }, 40_000);
});

describe("HTTP/2 config", () => {
  test("a route without a pool gets the built-in responder over HTTP/2; http2 = false offers only http/1.1; http2_max_concurrent_streams is announced", async () => {
    const o = httpOrigin("127.0.0.1", "pooled");
    f.servers.push(o.listener);
    const file = join(certs.dir, "h2.toml");
    const service = (name: string, port: number, extra: string) =>
      `[[service]]\nname = "${name}"\nmode = "http"\norigin = "127.0.0.1:${o.port}"\ntls_cert = "${certs.cert}"\ntls_key = "${certs.key}"\n${extra}\n` +
      `[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["${port}"]\n\n[[service.route]]\npath = "/about"\n\n`;
    writeFileSync(file, `[admin]\nsocket = "${join(certs.dir, "h2cfg.sock")}"\n\n${service("on", 8443, "http2_max_concurrent_streams = 7\n")}${service("off", 9443, "http2 = false\n")}`);
    f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);
    const about = await curl("--http2", "-H", "accept: application/json", "-w", "\n%{http_version}", "https://edge.test:8443/about");
    const [json, version] = about.out.split("\n");
    expect(version).toBe("2");
    expect(JSON.parse(json!)).toMatchObject({ service: "edgeproxy", method: "GET", path: "/about" });
    expect((await curl("--http2", "-w", "\n%{http_version}", "https://edge.test:8443/x")).out).toBe("pooled\n2");
    // The SETTINGS frame says 7 (nghttp's -v prints the server's SETTINGS).
    const settings = await run(["nghttp", "-nv", "https://192.0.2.10:8443/x"], 15_000);
    expect(settings.out).toMatch(/SETTINGS_MAX_CONCURRENT_STREAMS\(0x03\):7\b/);
    const off = await run(["curl", "-sk", "--max-time", "10", "--resolve", "edge.test:9443:192.0.2.10", "--http2", "-w", "\n%{http_version}", "https://edge.test:9443/x"], 15_000);
    expect(off.out).toBe("pooled\n1.1");
  }, 40_000);
});

describe("HTTP/2 flags", () => {
  test("--no-http2: ALPN offers only http/1.1, curl --http2 falls back", async () => {
    const o = httpOrigin("127.0.0.1", "pooled");
    f.servers.push(o.listener);
    await start(o.port, "--no-http2");
    expect((await curl("--http2", "-w", "\n%{http_version}", "https://edge.test:8443/x")).out).toBe("pooled\n1.1");
  }, 20_000);
});

describe("HTTP/2 defences", () => {
  /** Run an attack; the session must close (GOAWAY or not), edgeproxy's RSS grow less than `rssKiB`. */
  async function attack(kind: string, count: number, rssKiB: number) {
    const o = httpOrigin("127.0.0.1", "x");
    f.servers.push(o.listener);
    const admin = await start(o.port);
    const before = f.ep!.rssKiB();
    let peak = before;
    const watch = setInterval(() => (peak = Math.max(peak, f.ep!.rssKiB())), 50);
    const r = await run(["node", ATTACK, "192.0.2.10", "8443", kind, String(count)], 20_000);
    clearInterval(watch);
    peak = Math.max(peak, f.ep!.rssKiB());
    const res = JSON.parse(r.out.trim().split("\n").pop()!) as { goaway: { last: number; code: number; debug: string } | null; closed: boolean; why: string | null; sent: number; ms: number };
    console.log(`${kind}: ${JSON.stringify(res)}; RSS ${before} → peak ${peak} KiB`);
    expect(res.closed).toBe(true);
    expect(peak - before).toBeLessThan(rssKiB);
    // edgeproxy still serves a well-behaved client afterwards.
    expect((await curl("--http2", "-w", "\n%{http_version}", "https://edge.test:8443/")).out).toBe("x\n2");
    const m = await metrics(admin);
    return { res, m };
  }

  test("rapid reset (CVE-2023-44487): streams opened and reset at once end in GOAWAY ENHANCE_YOUR_CALM, counted, bounded memory", async () => {
    const { res, m } = await attack("reset", 50_000, 64 * 1024);
    expect(res.goaway?.code).toBe(0xb);
    expect(res.goaway?.debug).toBe("rapid_reset");
    // The budget (max(100, 2 × 100 streams) per 10 s) was spent, not much more: 50 000 offered.
    expect(res.goaway!.last).toBeLessThan(2 * 300);
    expect(metric(m, 'http2_streams_total{service="default"}')).toBeLessThan(300);
    expect(metric(m, 'http2_sessions_closed_total{service="default",reason="rapid_reset"}')).toBe(1);
    expect(await f.ep!.stop()).toBe(0);
    expect(f.ep!.stderr).toMatch(/HTTP\/2: 2 sessions, \d+ streams, closed: rapid_reset 1/);
    expect(metric(m, 'http2_stream_resets_total{service="default"}')).toBeGreaterThan(200);
  }, 40_000);

  test("a CONTINUATION flood is cut off at the header list limit, counted, bounded memory", async () => {
    // 2000 × 16 KB = 32 MB offered in one header block; the limit is max_header_size (16 KiB).
    const { res, m } = await attack("continuation", 2000, 64 * 1024);
    expect(res.goaway).toEqual({ last: 0, code: 1, debug: "protocol" });
    expect(metric(m, 'http2_sessions_closed_total{service="default",reason="protocol"}') + metric(m, 'http2_sessions_closed_total{service="default",reason="flood"}')).toBe(1);
  }, 40_000);

  test("an HPACK bomb (one 4 KB table entry referred to 16 000 times) is refused at the header list limit, counted, bounded memory", async () => {
    const { res, m } = await attack("hpack", 16_000, 64 * 1024);
    expect(res.goaway).toEqual({ last: 0, code: 1, debug: "protocol" });
    expect(metric(m, 'http2_sessions_closed_total{service="default",reason="protocol"}') + metric(m, 'http2_sessions_closed_total{service="default",reason="flood"}')).toBe(1);
  }, 40_000);
});

describe("HTTP/2 deadlines", () => {
  test("no preface and SETTINGS within header_timeout: GOAWAY, counted; a client that said SETTINGS but asks nothing is closed at keepalive_timeout", async () => {
    const o = httpOrigin("127.0.0.1", "x");
    f.servers.push(o.listener);
    const admin = await start(o.port, "--header-timeout", "1s", "--keepalive-timeout", "3s");
    const silent = JSON.parse((await run(["node", ATTACK, "192.0.2.10", "8443", "silent", "0"], 20_000)).out.trim());
    expect(silent).toMatchObject({ closed: true, goaway: { last: 0, code: 0, debug: "settings_timeout" } });
    expect(silent.ms).toBeGreaterThan(800);
    expect(silent.ms).toBeLessThan(5000);
    const quiet = JSON.parse((await run(["node", ATTACK, "192.0.2.10", "8443", "settings", "0"], 20_000)).out.trim());
    expect(quiet).toMatchObject({ closed: true, goaway: { last: 0, code: 0, debug: "idle" } });
    // Past header_timeout (it said SETTINGS), closed at keepalive_timeout.
    expect(quiet.ms).toBeGreaterThan(2500);
    expect(quiet.ms).toBeLessThan(8000);
    const m = await metrics(admin);
    expect(metric(m, 'http2_sessions_closed_total{service="default",reason="settings_timeout"}')).toBe(1);
    expect(metric(m, 'deadline_expired_total{service="default",stage="request_head"}')).toBe(1);
    expect(metric(m, 'deadline_expired_total{service="default",stage="keepalive"}')).toBe(1);
  }, 40_000);
});

describe("HTTP/2 drain", () => {
  test("SIGQUIT (drain) with a stream in flight: GOAWAY, the response still completes, then edgeproxy exits 0", async () => {
    // An origin that answers 1.5 s after the request.
    let arrived!: () => void;
    const atOrigin = new Promise<void>((r) => (arrived = r));
    const slow = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data: (s) => {
          arrived();
          setTimeout(() => s.write("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate"), 1500);
        },
      },
    });
    f.servers.push(slow);
    await start(slow.port);
    const client = run(["node", join(import.meta.dir, "helpers/h2client.mjs"), "https://192.0.2.10:8443/slow", "0"], 20_000);
    // The stream in flight at the origin, then the drain.
    await atOrigin;
    f.ep!.proc.kill("SIGQUIT");
    const r = JSON.parse((await client).out.trim());
    expect(r).toMatchObject({ status: 200, bytes: 4, goaway: 0 });
    expect(r.ms).toBeGreaterThan(1000);
    expect(await f.ep!.proc.exited).toBe(0);
    expect(f.ep!.stderr).toMatch(/drain/i);
  }, 30_000);
});

describe("HTTP/2 flow control", () => {
  /** An origin answering every request with `size` bytes (pattern i & 0xff), written as its socket takes them; counts what the kernel accepted. */
  function bigOrigin(size: number, holdMs = 0) {
    const state = { accepted: 0, uploads: [] as number[] };
    const chunk = Buffer.alloc(64 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = i & 0xff;
    const listener = Bun.listen<{ left: number; buf: string; body: number; need: number }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: (s) => {
          s.data = { left: 0, buf: "", body: 0, need: -1 };
          // A slow origin: reads nothing for a while.
          if (holdMs) {
            s.pause();
            setTimeout(() => s.resume(), holdMs);
          }
        },
        data(s, d) {
          const st = s.data;
          if (st.need < 0) {
            st.buf += Buffer.from(d).toString("latin1");
            const end = st.buf.indexOf("\r\n\r\n");
            if (end < 0) return;
            const cl = /content-length: (\d+)/i.exec(st.buf.slice(0, end));
            st.need = cl ? Number(cl[1]) : 0;
            st.body = st.buf.length - end - 4;
          } else st.body += d.length;
          if (st.body < st.need) return;
          state.uploads.push(st.body);
          st.need = -1;
          st.buf = "";
          s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${size}\r\n\r\n`);
          st.left = size;
          pump(s);
        },
        drain: (s) => pump(s),
      },
    });
    function pump(s: import("bun").Socket<{ left: number }>) {
      while (s.data.left > 0) {
        // The pattern by absolute position: a partial write resumes mid-chunk.
        const at = (size - s.data.left) % chunk.length;
        const n = s.write(chunk.subarray(at, Math.min(chunk.length, at + s.data.left)));
        if (n <= 0) return;
        s.data.left -= n;
        state.accepted += n;
      }
    }
    return { listener, state };
  }
  const patternSha = (size: number) => {
    const b = Buffer.alloc(size);
    for (let i = 0; i < size; i++) b[i] = (i % (64 * 1024)) & 0xff;
    return new Bun.CryptoHasher("sha256").update(b).digest("hex");
  };

  test("a client that does not read holds the origin back (its window shut, the origin not read); then the whole body arrives intact", async () => {
    const size = 64 << 20;
    const o = bigOrigin(size);
    f.servers.push(o.listener);
    await start(o.listener.port);
    const before = f.ep!.rssKiB();
    const client = run(["node", join(import.meta.dir, "helpers/h2client.mjs"), "https://192.0.2.10:8443/big", "3000"], 40_000);
    await Bun.sleep(2500);
    const held = o.state.accepted;
    const rss = f.ep!.rssKiB();
    const r = JSON.parse((await client).out.trim()) as { status: number; bytes: number; sha256: string; error?: string };
    console.log(`held: origin had written ${held >> 10} KiB of ${size >> 10}; edgeproxy RSS +${rss - before} KiB; then ${JSON.stringify(r)}`);
    // Kernel socket buffers on both sides of the origin connection and node's stream buffer: a few MiB, not 64.
    expect(held).toBeLessThan(24 << 20);
    expect(rss - before).toBeLessThan(32 * 1024);
    expect(r.status).toBe(200);
    expect(r.bytes).toBe(size);
    expect(r.sha256).toBe(patternSha(size));
  }, 60_000);

  test("an upload of 8 MiB goes through node's flow control to the origin whole", async () => {
    const o = bigOrigin(10);
    f.servers.push(o.listener);
    await start(o.listener.port);
    const r = JSON.parse((await run(["node", join(import.meta.dir, "helpers/h2client.mjs"), "https://192.0.2.10:8443/up", "0", String(8 << 20)], 40_000)).out.trim());
    expect(r).toMatchObject({ status: 200, bytes: 10 });
    expect(o.state.uploads).toEqual([8 << 20]);
  }, 60_000);

  test("an origin that does not read holds the client back (the stream paused, its window not reopened): bounded memory, then the upload arrives whole", async () => {
    const o = bigOrigin(10, 3000);
    f.servers.push(o.listener);
    await start(o.listener.port);
    const before = f.ep!.rssKiB();
    const client = run(["node", join(import.meta.dir, "helpers/h2client.mjs"), "https://192.0.2.10:8443/up", "0", String(64 << 20)], 40_000);
    await Bun.sleep(2500);
    const rss = f.ep!.rssKiB();
    const r = JSON.parse((await client).out.trim());
    console.log(`upload held: edgeproxy RSS +${rss - before} KiB; then ${JSON.stringify(r)}`);
    expect(rss - before).toBeLessThan(32 * 1024);
    expect(r).toMatchObject({ status: 200, bytes: 10 });
    expect(o.state.uploads).toEqual([64 << 20]);
  }, 60_000);
});
