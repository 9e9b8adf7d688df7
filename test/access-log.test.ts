// Access logs end to end: edgeproxy with 2 workers in a namespace of each
// test's own, real traffic, every line parsed with JSON.parse and checked
// against what the test did.
import { describe, expect, test } from "bun:test";
import { chmodSync, closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, readSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCert } from "./helpers/certs";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, pool, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { udpExchange, udpOrigin, udpText } from "./helpers/udp";

const f = proxyFixture();
const servers = f.servers;
const WORKERS = ["--workers", "2"];
const RFC3339_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

type Line = Record<string, any>;

/** The lines of `file` once `want` of them are there (lines are batched: up to a fifth of a second late), bounded in time. */
async function linesOf(file: string, want: number, timeoutMs = 5_000): Promise<Line[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const raw = existsSync(file) ? readFileSync(file, "utf8") : "";
    const lines = raw.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Line);
    if (lines.length >= want || Date.now() > until) return lines;
    await Bun.sleep(50);
  }
}

function logDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-accesslog-"));
  chmodSync(dir, 0o755);
  return dir;
}

describe("access log: tcp", () => {
  test("a relayed connection: one close line with every field as the test made it", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const log = join(logDir(), "access.log");
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--ports", "5000-5010", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", log]);
    const payload = "x".repeat(1234);
    expect(text(await exchange("192.0.2.7", 5003, payload, 5000, "192.0.2.99"))).toBe(payload);
    const [line, ...more] = await linesOf(log, 1);
    expect(more).toEqual([]);
    expect(line!.time).toMatch(RFC3339_MS);
    expect(Math.abs(Date.parse(line!.time) - Date.now())).toBeLessThan(10_000);
    expect(line).toMatchObject({ instance: "default", service: "default", protocol: "tcp", event: "close", edge: "192.0.2.7:5003", origin: `127.0.0.1:${origin.port}`, bytes_in: 1234, bytes_out: 1234, reason: "client_fin" });
    expect(line!.client).toMatch(/^192\.0\.2\.99:\d+$/);
    expect(line!.duration_ms).toBeGreaterThanOrEqual(0);
    expect(line!.duration_ms).toBeLessThan(5_000);
    expect(line!.tls_version).toBeUndefined();
  }, 30_000);

  // The engine makes an origin's text once per endpoint and port (engine.ts origin()): an origin that follows the
  // edge port gets each port's own, and the client's address text (remembered per address, clients.ts) its own port.
  test("an origin that follows the edge port: each line names the port its connection reached", async () => {
    const ports = [5020, 5021];
    for (const port of ports) servers.push(echoOrigin("127.0.0.1", port));
    const log = join(logDir(), "access.log");
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--ports", "5020-5021", "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1", "--access-log", log]);
    const sent = [5020, 5021, 5020, 5021];
    for (const [i, port] of sent.entries()) expect(text(await exchange("192.0.2.7", port, `p${i}`, 5000, "192.0.2.99"))).toBe(`p${i}`);
    const lines = await linesOf(log, sent.length);
    expect(lines).toHaveLength(sent.length);
    const byEdge = (port: number) => lines.filter((l) => l.edge === `192.0.2.7:${port}`);
    for (const port of ports) {
      expect(byEdge(port)).toHaveLength(2);
      for (const l of byEdge(port)) expect(l).toMatchObject({ event: "close", origin: `127.0.0.1:${port}`, bytes_in: 2, bytes_out: 2, reason: "client_fin" });
    }
    for (const l of lines) expect(l.client).toMatch(/^192\.0\.2\.99:\d+$/);
    expect(new Set(lines.map((l) => l.client)).size).toBe(sent.length);
  }, 30_000);

  // Sampling is drawn once per connection when it starts (a connection sampled out costs the engine no getsockname for
  // its edge): the connections with a line still name both ends and their bytes.
  test("--access-log-sample 0.5: about half the connections have a close line, each with its ends and bytes", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const log = join(logDir(), "access.log");
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--ports", "5030", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", log, "--access-log-sample", "0.5"]);
    const N = 40;
    for (let i = 0; i < N; i++) expect(text(await exchange("192.0.2.7", 5030, `c${i}`, 5000, "192.0.2.99"))).toBe(`c${i}`);
    await Bun.sleep(500);
    const lines = await linesOf(log, N, 1_000);
    // Binomial(40, 0.5): outside 5–35 with probability ~1e-7.
    expect(lines.length).toBeGreaterThanOrEqual(5);
    expect(lines.length).toBeLessThanOrEqual(35);
    for (const l of lines) {
      expect(l).toMatchObject({ protocol: "tcp", event: "close", edge: "192.0.2.7:5030", origin: `127.0.0.1:${origin.port}`, reason: "client_fin" });
      expect(l.client).toMatch(/^192\.0\.2\.99:\d+$/);
      expect(l.bytes_in).toBe(l.bytes_out);
      expect(l.bytes_in).toBeGreaterThanOrEqual(2);
    }
    expect(new Set(lines.map((l) => l.client)).size).toBe(lines.length);
  }, 30_000);

  test("an origin that refuses, and an idle timeout: origin_error and timeout lines", async () => {
    const origin = echoOrigin("127.0.0.1");
    const closed = echoOrigin("127.0.0.1");
    const closedPort = closed.port;
    closed.stop(true);
    servers.push(origin);
    const dir = logDir();
    const refusedLog = join(dir, "refused.log");
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${closedPort}`, "--access-log", refusedLog]);
    expect((await exchange("192.0.2.8", 5000, "hello")).kind).toBe("reset");
    const [refused] = await linesOf(refusedLog, 1);
    expect(refused).toMatchObject({ event: "origin_error", reason: "origin_refused", edge: "192.0.2.8:5000", origin: `127.0.0.1:${closedPort}`, bytes_out: 0 });
    expect(await f.ep.stop()).toBe(0);

    const idleLog = join(dir, "idle.log");
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--idle-timeout", "300ms", "--access-log", idleLog]);
    // A client that sends and never closes: the idle timeout ends it.
    const held = await Bun.connect({ hostname: "192.0.2.9", port: 5000, socket: { data() {}, close() {} } });
    held.write("ping");
    const [idle] = await linesOf(idleLog, 1);
    held.terminate();
    expect(idle).toMatchObject({ event: "timeout", reason: "idle_timeout", bytes_in: 4, bytes_out: 4 });
    // Deadlines run on the coarse clock (100 ms ticks): an idle timeout may end up to a tick early.
    expect(idle!.duration_ms).toBeGreaterThanOrEqual(190);
  }, 30_000);
});

describe("access log: tcp behind a trusted load balancer", () => {
  // The client a PROXY header names is the line's client on both data planes (issue 17), not the balancer.
  for (const engine of ["bun", "epoll"]) {
    test(`--engine ${engine}: the client and edge the header named`, async () => {
      const origin = echoOrigin("127.0.0.1");
      servers.push(origin);
      const log = join(logDir(), "access.log");
      f.ep = await EdgeproxyProcess.start([...WORKERS, "--engine", engine, "--ports", "5012", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--accept-proxy", "192.0.2.200/32", "--access-log", log]);
      expect(text(await exchange("192.0.2.1", 5012, `PROXY TCP4 198.51.100.9 192.0.2.1 40000 5012\r\nhello`, 5000, "192.0.2.200"))).toBe("hello");
      const [line, ...more] = await linesOf(log, 1);
      expect(more).toEqual([]);
      expect(line).toMatchObject({ protocol: "tcp", event: "close", client: "198.51.100.9:40000", edge: "192.0.2.1:5012", origin: `127.0.0.1:${origin.port}`, bytes_in: 5, bytes_out: 5 });
    }, 30_000);
  }
});

/** A balancer's connection from 192.0.2.200 that sends `header` and stays open: how it ended ("reset", "closed"), or "open" after `ms`. */
function balancerConn(port: number, header: string, ms = 3000): { outcome: Promise<string>; close(): void } {
  let sock: { end(): void } | undefined;
  const outcome = new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve("open"), ms);
    const options = {
      hostname: "192.0.2.1",
      port,
      localAddress: "192.0.2.200",
      socket: {
        open: (s: { write(t: string): void; end(): void }) => {
          sock = s;
          s.write(header);
        },
        data: () => {},
        close: (_s: unknown, err?: Error) => {
          clearTimeout(timer);
          resolve(err ? "reset" : "closed");
        },
      },
    };
    // localAddress: Bun.connect binds the client there (as helpers/net.ts exchange does); its types omit it.
    void Bun.connect(options as unknown as Parameters<typeof Bun.connect>[0]);
  });
  return { outcome, close: () => sock?.end() };
}

describe("access log: connections that end before their protocol starts, behind a trusted load balancer", () => {
  // The named client over its per-client limit: one line, naming it (the tcp engine wrote two, the second naming the
  // balancer; the http engine none); a header past its deadline: one timeout line. As Bun's pipeline writes them.
  for (const [mode, engine] of [["tcp", "bun"], ["tcp", "epoll"], ["http", "bun"], ["http", "epoll"]] as const) {
    test(`${mode} on ${engine}: a limited named client and a late header, one line each`, async () => {
      const origin = mode === "tcp" ? echoOrigin("127.0.0.1") : httpOrigin("127.0.0.1", "hi").listener;
      servers.push(origin);
      const log = join(logDir(), "access.log");
      f.ep = await EdgeproxyProcess.start([
        "--mode", mode, "--engine", engine, "--ports", "5012", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`,
        "--accept-proxy", "192.0.2.200/32", "--source-connections", "1", "--proxy-header-timeout", "500ms", "--access-log", log,
      ]);
      const held = balancerConn(5012, "PROXY TCP4 198.51.100.7 192.0.2.1 40001 5012\r\n", 1000);
      expect(await held.outcome).toBe("open");
      expect(await balancerConn(5012, "PROXY TCP4 198.51.100.7 192.0.2.1 40002 5012\r\n").outcome).toBe("reset");
      expect(await balancerConn(5012, "PROXY TCP4 ").outcome).toBe("reset");
      await linesOf(log, 2);
      // Any more lines come in the same batches as these (a fifth of a second).
      await Bun.sleep(300);
      const all = await linesOf(log, 2);
      held.close();
      const limited = all.filter((l) => l.event === "limited");
      expect(limited).toHaveLength(1);
      expect(limited[0]).toMatchObject({ protocol: "tcp", client: "198.51.100.7:40002", edge: "192.0.2.1:5012", reason: "source_limit" });
      const late = all.filter((l) => l.event === "timeout");
      expect(late).toHaveLength(1);
      expect(late[0]).toMatchObject({ protocol: "tcp", reason: "proxy_header_timeout", edge: "192.0.2.1:5012" });
      expect(late[0]!.client).toStartWith("192.0.2.200:");
    }, 30_000);
  }
});

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

/** Every worker's value of a counter in the supervisor's merged /metrics, summed. */
async function counter(admin: string, name: string): Promise<number> {
  const text = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith(`edgeproxy_${name}{`) || l.startsWith(`edgeproxy_${name} `))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

describe("access log: the file", () => {
  test("SIGUSR1 reopens it: after logrotate's rename, new lines land in the new file", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const log = join(logDir(), "access.log");
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", log]);
    expect(text(await exchange("192.0.2.1", 5000, "before"))).toBe("before");
    expect((await linesOf(log, 1)).length).toBe(1);
    renameSync(log, `${log}.1`);
    process.kill(f.ep.pid, "SIGUSR1");
    // The supervisor forwards it; give the workers a moment to reopen.
    await Bun.sleep(300);
    // Several connections, so both workers (the kernel's reuseport hash picks) are likely to write.
    for (let i = 2; i < 10; i++) expect(text(await exchange(`192.0.2.${i}`, 5000, "after"))).toBe("after");
    const fresh = await linesOf(log, 8);
    expect(fresh.length).toBe(8);
    expect(fresh.every((l) => l.bytes_in === 5)).toBe(true);
    const old = await linesOf(`${log}.1`, 1);
    expect(old.map((l) => l.bytes_in)).toEqual([6]);
    expect(f.ep.stderr).not.toMatch(/access log/);
  }, 30_000);

  test("an unwritable path at start: one line, exit 2; a write error later: one line per worker, counted, traffic unaffected", async () => {
    const r = await runEdgeproxy([...WORKERS, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1:1", "--access-log", "/nonexistent-dir/access.log"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual(['edgeproxy: access_log: cannot open "/nonexistent-dir/access.log" for appending: ENOENT']);

    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const admin = join(logDir(), "admin.sock");
    // /dev/full opens, and every write to it fails with ENOSPC.
    f.ep = await EdgeproxyProcess.start([...WORKERS, "--admin", admin, "--ports", "5000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--access-log", "/dev/full"]);
    for (let i = 1; i < 30; i++) expect(text(await exchange(`192.0.2.${i}`, 5000, "still served"))).toBe("still served");
    await Bun.sleep(600);
    expect(await counter(admin, "access_log_write_errors_total")).toBeGreaterThanOrEqual(1);
    const complaints = f.ep.stderr.split("\n").filter((l) => l.includes("access log"));
    expect(complaints.length).toBeGreaterThanOrEqual(1);
    expect(complaints.length).toBeLessThanOrEqual(2);
    expect(complaints[0]).toMatch(/access log \/dev\/full: write failed \(ENOSPC\)/);
  }, 30_000);

  test("a stalled destination: the bounded buffer drops lines and counts them; connections are not slowed", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const dir = logDir();
    const fifo = join(dir, "stalled.fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    // A reader that never reads: writes block once the pipe's 64 KiB are full.
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const admin = join(dir, "admin.sock");
    const config = join(dir, "edgeproxy.toml");
    writeFileSync(config, `access_log = "${fifo}"\naccess_log_buffer = "16KiB"\nworkers = 2\nadmin = { socket = "${admin}" }\n[[service]]\nname = "stalled"\norigin = "127.0.0.1:${origin.port}"\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 5000\n`);
    try {
      f.ep = await EdgeproxyProcess.start(["--config", config]);
      const N = 1000;
      const t0 = performance.now();
      const outcomes = await pool(Array.from({ length: N }, (_, i) => i), 32, async (i) => text(await exchange(`192.0.2.${1 + (i % 250)}`, 5000, "x")));
      const elapsed = performance.now() - t0;
      expect(outcomes.filter((o) => o !== "x")).toEqual([]);
      // 1000 loopback connections take well under this even on a busy 2-core host; a blocked event loop would take the 5 s timeouts.
      expect(elapsed).toBeLessThan(20_000);
      await Bun.sleep(500);
      const lines = await counter(admin, "access_log_lines_total");
      const dropped = await counter(admin, "access_log_dropped_total");
      // Each line is ~250 bytes: 1000 of them are far more than the pipe and two 16 KiB buffers hold.
      expect(dropped).toBeGreaterThan(100);
      expect(lines + dropped).toBe(N);
    } finally {
      // Let any write in flight finish, so the workers exit promptly.
      const buf = Buffer.alloc(1 << 16);
      const until = Date.now() + 2_000;
      while (Date.now() < until) {
        try {
          if (readSync(reader, buf) <= 0) break;
        } catch {
          await Bun.sleep(20);
        }
      }
      if (f.ep) expect(await f.ep.stop()).toBe(0);
      f.ep = undefined;
      closeSync(reader);
    }
  }, 60_000);
});

describe("access log: udp", () => {
  test("a flow: one line when it ends (idle timeout) with its ends, origin and bytes each way", async () => {
    const origin = await udpOrigin();
    const log = join(logDir(), "udp.log");
    try {
      f.ep = await EdgeproxyProcess.start([...WORKERS, "--mode", "udp", "--ports", "5353", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--idle-timeout", "300ms", "--access-log", log]);
      expect(udpText(await udpExchange("192.0.2.20", 5353, "hello udp"))).toBe("hello udp");
      const [line, ...more] = await linesOf(log, 1);
      expect(more).toEqual([]);
      expect(line!.time).toMatch(RFC3339_MS);
      expect(line).toMatchObject({ instance: "default", service: "default", protocol: "udp", event: "timeout", reason: "idle_timeout", edge: "192.0.2.20:5353", origin: `127.0.0.1:${origin.port}`, bytes_in: 9, bytes_out: 9 });
      expect(line!.client).toMatch(/^127\.0\.0\.1:\d+$/);
      expect(line!.duration_ms).toBeGreaterThanOrEqual(250);
      expect(line!.duration_ms).toBeLessThan(5_000);
    } finally {
      origin.socket.close();
    }
  }, 30_000);
});

describe("access log: clients the kernel refuses", () => {
  test("a deny rule's refusals appear as aggregated lines, at most one per service and reason per second", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const dir = logDir();
    const log = join(dir, "access.log");
    const config = join(dir, "edgeproxy.toml");
    writeFileSync(config, `access_log = "${log}"\nworkers = 2\n[[service]]\nname = "guarded"\norigin = "127.0.0.1:${origin.port}"\ndeny = ["192.0.2.66/32"]\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 5000\n`);
    f.ep = await EdgeproxyProcess.start(["--config", config]);
    const attempts = 3;
    for (let i = 0; i < attempts; i++) expect((await exchange("192.0.2.1", 5000, "x", 300, "192.0.2.66")).kind).not.toBe("data");
    expect(text(await exchange("192.0.2.1", 5000, "allowed", 5000, "192.0.2.67"))).toBe("allowed");
    // The aggregate of each second comes a second later.
    await Bun.sleep(2_500);
    const lines = await linesOf(log, 2);
    const kernel = lines.filter((l) => l.source === "kernel");
    const relayed = lines.filter((l) => l.source === undefined);
    expect(relayed.map((l) => [l.event, l.client.split(":")[0]])).toEqual([["close", "192.0.2.67"]]);
    expect(kernel.length).toBeGreaterThanOrEqual(1);
    for (const l of kernel) expect(l).toMatchObject({ service: "guarded", protocol: "tcp", event: "filtered", reason: "deny_rule" });
    for (const l of kernel) expect(l.window_ms).toBeGreaterThanOrEqual(900);
    // Every SYN (retransmissions too) is a refused lookup: at least one per attempt.
    expect(kernel.reduce((n, l) => n + l.count, 0)).toBeGreaterThanOrEqual(attempts);
    // At most one line per second: consecutive ones at least 0.9 s apart (the timer's slack).
    const times = kernel.map((l) => Date.parse(l.time));
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(900);
  }, 30_000);
});

describe("access log: tcp with TLS terminated", () => {
  test("openssl s_client through TLS termination: a connect line, then a close line with the TLS version and SNI (access_log_connect)", async () => {
    const origin = echoOrigin("127.0.0.1");
    servers.push(origin);
    const dir = logDir();
    const { cert, key } = writeCert(dir, { cn: "edge.test" });
    const log = join(dir, "tls.log");
    const config = join(dir, "edgeproxy.toml");
    writeFileSync(config, `instance = "edge1"\naccess_log = "${log}"\naccess_log_connect = true\nworkers = 2\n[[service]]\nname = "tls"\norigin = "127.0.0.1:${origin.port}"\ntls_cert = "${cert}"\ntls_key = "${key}"\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 8443\n`);
    f.ep = await EdgeproxyProcess.start(["--config", config]);
    // s_client ends the connection at its stdin's end (without -quiet, which would ignore it): once the echo is back.
    const client = Bun.spawn(["openssl", "s_client", "-connect", "192.0.2.10:8443", "-servername", "edge.test", "-brief"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => client.kill("SIGKILL"), 8_000);
    client.stdin.write("hello tls\n");
    await client.stdin.flush();
    const reader = client.stdout.getReader();
    let out = "";
    while (!out.includes("hello tls")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
    }
    await client.stdin.end();
    await client.exited;
    clearTimeout(timer);
    expect(out).toContain("hello tls");
    const lines = await linesOf(log, 2);
    expect(lines.map((l) => l.event)).toEqual(["connect", "close"]);
    const [open, close] = lines as [Line, Line];
    for (const l of lines) expect(l).toMatchObject({ instance: "edge1", service: "tls", protocol: "tcp", edge: "192.0.2.10:8443", origin: `127.0.0.1:${origin.port}`, tls_version: "TLSv1.3", sni: "edge.test" });
    expect(open.reason).toBeUndefined();
    expect(close).toMatchObject({ bytes_in: 10, bytes_out: 10 });
    expect(close.reason).toMatch(/^client_(fin|close)$/);
    expect(close.client).toBe(open.client);
  }, 30_000);
});
