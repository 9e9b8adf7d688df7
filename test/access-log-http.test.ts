// Access logs end to end, http requests on both data planes: edgeproxy with 2
// workers in a namespace of each test's own, real requests from curl, every
// line parsed with JSON.parse and checked against what the test did.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { RFC3339_MS, WORKERS, linesOf, logDir } from "./helpers/accesslog";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { exchange, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";

const f = proxyFixture();
const servers = f.servers;

/** curl (a real third-party client) from `from`; returns its -w figures and the response head. */
async function curl(args: string[]): Promise<{ sent: number; received: number; head: string; body: string }> {
  const proc = Bun.spawn(["curl", "-sS", "--max-time", "5", "-D", "-", "-w", "\n%{size_request} %{size_header} %{size_download}", ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`curl ${args.join(" ")}: exit ${code}: ${err}`);
  const nl = out.lastIndexOf("\n");
  const [sent, header, download] = out.slice(nl + 1).split(" ").map(Number);
  const all = out.slice(0, nl);
  const split = all.indexOf("\r\n\r\n");
  return { sent: sent!, received: header! + download!, head: all.slice(0, split), body: all.slice(split + 4) };
}

const idOf = (head: string) => /^x-request-id: (.*)$/im.exec(head)?.[1]?.trim();

describe("access log: http", () => {
  // On Bun's sockets (the lines written on the main thread) and on the engine (written on the data plane's thread into a ring the main thread reads, src/log/ring.ts).
  for (const engine of ["bun", "epoll"]) test(`--engine ${engine}: one line per request: method, host, path, status, bytes, origin, times, request id kept or made, forwarded and (--request-id-in-response) returned`, async () => {
    const origin = httpOrigin("127.0.0.1", "hello");
    servers.push(origin.listener);
    const log = join(logDir(), `http-${engine}.log`);
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--mode", "http", "--engine", engine, "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", log, "--request-id-in-response"]);
    const kept = await curl(["--interface", "192.0.2.99", "-H", "X-Request-Id: client-id-1", "http://192.0.2.10:8080/a/b?q=1"]);
    expect(kept.body).toBe("hello");
    expect(idOf(kept.head)).toBe("client-id-1");
    const made = await curl(["--interface", "192.0.2.98", "-H", "X-Request-Id: not a sane id", "-d", "12345", "http://192.0.2.11:8080/post"]);
    const madeId = idOf(made.head)!;
    expect(madeId).toMatch(/^[0-9a-f]{16}-[0-9a-z]+$/);
    // The origin saw the kept id as sent, and the made one in place of the client's.
    expect(origin.seen.map((r) => r.headers.get("x-request-id"))).toEqual([["client-id-1"], [madeId]]);
    // A head the framing checks refuse: a 400 with its own line.
    const bad = await exchange("192.0.2.12", 8080, "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    expect(text(bad)).toStartWith("HTTP/1.1 400");

    const lines = await linesOf(log, 3);
    expect(lines.length).toBe(3);
    for (const l of lines) {
      expect(l.time).toMatch(RFC3339_MS);
      expect(l).toMatchObject({ instance: "default", service: "default", protocol: "http" });
      expect(l.duration_ms).toBeGreaterThanOrEqual(0);
    }
    const first = lines.find((l) => l.request_id === "client-id-1")!;
    expect(first).toMatchObject({ method: "GET", host: "192.0.2.10:8080", path: "/a/b", status: 200, origin: `127.0.0.1:${origin.port}`, edge: "192.0.2.10:8080", bytes_in: kept.sent, bytes_out: kept.received });
    expect(first.client).toMatch(/^192\.0\.2\.99:\d+$/);
    expect(first.ttfb_ms).toBeGreaterThanOrEqual(0);
    expect(first.ttfb_ms).toBeLessThanOrEqual(first.duration_ms);
    const second = lines.find((l) => l.request_id === madeId)!;
    expect(second).toMatchObject({ method: "POST", host: "192.0.2.11:8080", path: "/post", status: 200, bytes_in: made.sent, bytes_out: made.received });
    expect(second.client).toMatch(/^192\.0\.2\.98:\d+$/);
    const refused = lines.find((l) => l.status === 400)!;
    expect(refused).toMatchObject({ method: null, origin: null, edge: "192.0.2.12:8080", bytes_out: text(bad).length });
    expect(refused.reason).toBeString();
  }, 30_000);

  // access_log_sample draws per request when it begins; on the engine a connection's ends are made (a getsockname for the
  // edge) only at its first request sampled in, which may be a later one of a kept-alive connection: its lines must
  // still name both ends, IPv4 and IPv6.
  for (const engine of ["bun", "epoll"]) test(`--engine ${engine}: --access-log-sample 0.5: about half the requests of kept-alive connections have lines, each naming its client and edge`, async () => {
    const origin = httpOrigin("127.0.0.1", "ok");
    servers.push(origin.listener);
    const log = join(logDir(), `sample-${engine}.log`);
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--mode", "http", "--engine", engine, "--ports", "8080", "--prefix", "192.0.2.0/24", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`, "--access-log", log, "--access-log-sample", "0.5"]);
    const N = 40;
    // One curl, one connection: its URLs go over it one after another (keep-alive).
    const run = async (iface: string | undefined, host: string) => {
      // Each URL its own -o (one applies to one URL).
      const urls = Array.from({ length: N }, (_, i) => ["-o", "/dev/null", `http://${host}:8080/r${i}`]).flat();
      const proc = Bun.spawn(["curl", "-sS", "--max-time", "10", ...(iface ? ["--interface", iface] : []), "-w", "%{num_connects}\n", ...urls], { stdout: "pipe", stderr: "pipe" });
      const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
      expect(code).toBe(0);
      // One connect, then reuse.
      expect(out.trim().split("\n").map(Number).reduce((a, b) => a + b, 0)).toBe(1);
    };
    await run("192.0.2.97", "192.0.2.13");
    // IPv6 binds only to an address the host has (no AnyIP bind without IPV6_FREEBIND): the kernel picks the source.
    await run(undefined, "[2001:db8::13]");
    // Binomial(40, 0.5) per connection: outside 5–35 with probability ~1e-7.
    await Bun.sleep(500);
    const lines = await linesOf(log, 2 * N, 1_000);
    const v4 = lines.filter((l) => l.edge === "192.0.2.13:8080");
    const v6 = lines.filter((l) => l.edge === "[2001:db8::13]:8080");
    expect(v4.length + v6.length).toBe(lines.length);
    for (const [got, client] of [[v4, /^192\.0\.2\.97:(\d+)$/], [v6, /^\[[0-9a-f:]+\]:(\d+)$/]] as const) {
      expect(got.length).toBeGreaterThanOrEqual(5);
      expect(got.length).toBeLessThanOrEqual(35);
      for (const l of got) {
        expect(l.client).toMatch(client);
        expect(l).toMatchObject({ method: "GET", status: 200, origin: `127.0.0.1:${origin.port}` });
      }
      // One connection: one client port on all its lines.
      expect(new Set(got.map((l) => l.client)).size).toBe(1);
    }
  }, 30_000);

  // The engine reads request times from its loop's clock (one reading per wake), Bun's sockets from performance.now(): both must measure the origin's delays.
  for (const engine of ["bun", "epoll"]) test(`--engine ${engine}: ttfb_ms and duration_ms measure a slow origin (first byte after 300 ms, the rest 200 ms later)`, async () => {
    const slow = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s) {
          setTimeout(() => {
            s.write("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nfirst");
            setTimeout(() => s.write("-last"), 200);
          }, 300);
        },
      },
    });
    servers.push(slow);
    const log = join(logDir(), `http-times-${engine}.log`);
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--mode", "http", "--engine", engine, "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${slow.port}`, "--access-log", log]);
    expect((await curl(["--interface", "192.0.2.96", "http://192.0.2.10:8080/slow"])).body).toBe("first-last");
    const [line] = await linesOf(log, 1);
    expect(line!.ttfb_ms).toBeGreaterThanOrEqual(290);
    expect(line!.duration_ms).toBeGreaterThanOrEqual(line!.ttfb_ms + 190);
    expect(line!.duration_ms).toBeLessThan(5_000);
  }, 30_000);

  // As nginx, HAProxy and Envoy do by default: the id goes to the origin and into the line, not back to the client.
  for (const engine of ["bun", "epoll"]) test(`--engine ${engine}: by default the request id goes to the origin and the line, not into the response`, async () => {
    const origin = httpOrigin("127.0.0.1", "hello");
    servers.push(origin.listener);
    const log = join(logDir(), `http-default-id-${engine}.log`);
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--mode", "http", "--engine", engine, "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", log]);
    const plain = await curl(["--interface", "192.0.2.97", "http://192.0.2.10:8080/plain"]);
    const kept = await curl(["--interface", "192.0.2.97", "-H", "X-Request-Id: client-id-2", "http://192.0.2.10:8080/kept"]);
    expect(plain.body).toBe("hello");
    expect(idOf(plain.head)).toBeUndefined();
    expect(idOf(kept.head)).toBeUndefined();
    const [made, given] = origin.seen.map((r) => r.headers.get("x-request-id"));
    expect(made![0]).toMatch(/^[0-9a-f]{16}-[0-9a-z]+$/);
    expect(given).toEqual(["client-id-2"]);
    const lines = await linesOf(log, 2);
    expect(lines.find((l) => l.path === "/plain")!.request_id).toBe(made![0]);
    expect(lines.find((l) => l.path === "/kept")!.request_id).toBe("client-id-2");
  }, 30_000);
});

