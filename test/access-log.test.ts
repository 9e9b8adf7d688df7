// Access logs end to end, tcp, udp and the kernel's refusals: edgeproxy with 2
// workers in a namespace of each test's own, real traffic, every line parsed
// with JSON.parse and checked against what the test did. http requests:
// access-log-http.test.ts; the file itself (reopen, errors, a stalled
// destination): access-log-file.test.ts.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { RFC3339_MS, WORKERS, linesOf, logDir, type Line } from "./helpers/accesslog";
import { writeCert } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { udpExchange, udpOrigin, udpText } from "./helpers/udp";

const f = proxyFixture();
const servers = f.servers;

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

  // The engine makes an origin's text once per endpoint and port (origins.ts, at dial.ts's pick): an origin that follows the
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
