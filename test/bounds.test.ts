// Issue 15, items 7 and 8: every number bounded (one line, exit 2, never a
// stack trace) and the admin API bounded: request bodies limited and read as
// they arrive, and nothing that reaches the admin listener accepted at start,
// at reload or through the API.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { createConnection } from "node:net";
import { join } from "node:path";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { expectOneLine } from "./helpers/oneline";

const f = proxyFixture();

function workdir() {
  const dir = mkdtempSync(join(tmpdir(), "ep-bounds-"));
  return { dir, file: join(dir, "edgeproxy.toml"), admin: join(dir, "admin.sock"), done: () => rmSync(dir, { recursive: true, force: true }) };
}


describe("every flag and environment number is bounded: one line, exit 2", () => {
  test.each([
    [["--workers", "99999999999999999999"], /--workers: 99999999999999999999 is not a whole number from 1 to 256$/],
    [["--workers", "257"], /--workers: 257 is not a whole number from 1 to 256$/],
    [["--workers", "0"], /--workers: 0 is not a whole number from 1 to 256$/],
    [["--workers", "1e3"], /--workers: "1e3" is not a whole number$/],
    [["--idle-timeout", "0.4ms"], /--idle-timeout: "0.4ms" must be at least 1ms and at most 7 days$/],
    [["--idle-timeout", "169h"], /--idle-timeout: "169h" must be at least 1ms and at most 7 days$/],
    [["--connect-timeout", "0"], /--connect-timeout: "0" must be at least 1ms/],
    [["--drain-timeout", "1e400"], /--drain-timeout: "1e400" is not a duration/],
    [["--mode", "http", "--first-byte-timeout", "0.1ms"], /--first-byte-timeout: "0.1ms" must be at least 1ms/],
    [["--origin", "127.0.0.1:1", "--health-interval", "0.5ms"], /--health-interval: "0.5ms" must be at least 1ms/],
    [["--max-connections", "2147483648"], /--max-connections: 2147483648 is not a whole number from 1 to 2147483647$/],
    [["--max-flows", "NaN"], /--max-flows: "NaN" is not a whole number$/],
    [["--source-connections", "2147483648"], /--source-connections: 2147483648 is not a whole number from 1 to 2147483647$/],
    [["--source-rate", "1000001"], /--source-rate: 1000001 is not a whole number from 1 to 1000000$/],
    [["--source-rate", "5", "--source-rate-burst", "0"], /--source-rate-burst: 0 is not a whole number from 1 to 1000000$/],
    [["--source-connections", "5", "--source-prefix-v6", "129"], /--source-prefix-v6: 129 is not a whole number from 1 to 128$/],
    [["--mode", "http", "--max-body-size", "1e400"], /--max-body-size: "1e400" is not a size/],
    [["--mode", "http", "--max-body-size", "2000000GiB"], /--max-body-size: "2000000GiB" must be at least 1 byte and at most 1 PiB$/],
    [["--ports", "65536"], /--ports: "65536": port 65536 is outside 1-65535$/],
    [["--origin", "127.0.0.1:80 weight=1001"], /--origin: .*weight=N with N 1-1000$/],
    [["register", "svc", "--pid", "99999999999999999999", "--fd", "3"], /register --pid: 99999999999999999999 is not a whole number from 1 to 4194304$/],
  ])("%p", async (args, pattern) => {
    const r = await runEdgeproxy(args as string[]);
    expect(r.code).toBe(2);
    expectOneLine(r.stderr, pattern as RegExp);
  });

  test.each([
    [{ EDGEPROXY_WORKERS: "99999999999999999999" }, /\$EDGEPROXY_WORKERS: 99999999999999999999 is not a whole number from 1 to 256$/],
    [{ EDGEPROXY_WORKERS: "257" }, /\$EDGEPROXY_WORKERS: 257 is not a whole number from 1 to 256$/],
    [{ EDGEPROXY_WORKERS: "-1" }, /\$EDGEPROXY_WORKERS: "-1" is not a whole number$/],
    [{ EDGEPROXY_WORKER: "x" }, /\$EDGEPROXY_WORKER: "x" is not a whole number$/],
  ])("environment %p", async (env, pattern) => {
    const r = await runEdgeproxy(["--prefix", "192.0.2.0/24", "--ports", "80"], env);
    expect(r.code).toBe(2);
    expectOneLine(r.stderr, pattern);
  });

  test("config file numbers go through the same bounds", async () => {
    const w = workdir();
    try {
      const svc = '[[service]]\nname = "a"\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = 80\n';
      writeFileSync(w.file, `workers = 257\n${svc}`);
      let r = await runEdgeproxy(["--config", w.file]);
      expect(r.code).toBe(2);
      expectOneLine(r.stderr, /edgeproxy\.toml: workers: 257 is not a whole number from 1 to 256$/);
      writeFileSync(w.file, svc.replace('name = "a"', 'name = "a"\nidle_timeout = "0.4ms"'));
      r = await runEdgeproxy(["--config", w.file]);
      expect(r.code).toBe(2);
      expectOneLine(r.stderr, /service "a": idle_timeout: "0\.4ms" must be at least 1ms/);
    } finally {
      w.done();
    }
  });

  test("more workers than CPUs: one warning line, and they serve", async () => {
    const n = availableParallelism() + 1;
    f.ep = await EdgeproxyProcess.start(["--workers", String(n), "--prefix", "192.0.2.0/24", "--ports", "80"]);
    const warnings = f.ep.stderr.split("\n").filter((l) => l.includes("workers will share CPUs"));
    expect(warnings).toEqual([`edgeproxy: ${n} workers on ${availableParallelism()} CPU(s): workers will share CPUs (the default is one per CPU)`]);
  }, 30_000);
});

/** VmRSS and VmHWM (the peak) of a process, in MiB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? NaN);
  return { rss: kib("VmRSS") / 1024, peak: kib("VmHWM") / 1024 };
}

/** curl over the admin socket: status, body, how many bytes it managed to send, and its error line if it failed. */
async function upload(socket: string, route: string, file: string, chunked: boolean): Promise<{ status: number; body: string; sent: number; error: string }> {
  const out = join(tmpdir(), `ep-bounds-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const p = Bun.spawn(
    ["curl", "-sS", "--max-time", "20", "--unix-socket", socket, "-o", out, "-w", "%{http_code} %{size_upload}", "-X", "POST",
      "-H", "content-type: application/json", ...(chunked ? ["-H", "transfer-encoding: chunked"] : []), "--data-binary", `@${file}`, `http://localhost${route}`],
    { stdout: "pipe", stderr: "pipe" },
  );
  const [w, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const [status, sent] = w.trim().split(" ").map(Number) as [number, number];
  let body = "";
  try {
    body = readFileSync(out, "utf8");
  } catch {}
  rmSync(out, { force: true });
  return { status, body, sent, error: stderr.trim() };
}

describe("admin request bodies are limited and never buffered whole", () => {
  test.each([
    ["one process", "1"],
    ["the supervisor's API, which proxies to its workers", "2"],
  ])("%s: ten 100 MB uploads at once (five with a length, five chunked) get 413 early; RSS grows by less than 64 MiB", async (_name, workers) => {
    const w = workdir();
    try {
      const big = join(w.dir, "big");
      // Sparse: 100 MB of zeros without writing them.
      writeFileSync(big, "");
      Bun.spawnSync(["truncate", "-s", "100M", big]);
      f.ep = await EdgeproxyProcess.start(["--admin", w.admin, "--prefix", "192.0.2.0/24", "--ports", "80", "--name", "web"], { EDGEPROXY_WORKERS: workers });
      const before = memory(f.ep.pid);
      const t0 = performance.now();
      const answers = await Promise.all(
        Array.from({ length: 10 }, (_, i) => upload(w.admin, i % 2 ? "/services/web/bindings" : "/reload", big, i >= 5)),
      );
      const elapsed = performance.now() - t0;
      const after = memory(f.ep.pid);
      for (const a of answers) {
        // Else with curl's error: a client that lost the answer reports the interim 100 as its last status.
        expect(a.status === 413 ? 413 : `${a.status} (${a.error})`).toBe(413);
        expect(a.body).not.toContain("\n");
        expect(JSON.parse(a.body)).toEqual({ error: "request body larger than 4 MiB; the admin API takes small JSON objects" });
        // Refused early: far less than the 100 MB was taken from the client.
        expect(a.sent).toBeLessThan(32 << 20);
      }
      console.log(`workers=${workers}: rss before ${before.rss.toFixed(1)} MiB, peak after ${after.peak.toFixed(1)} MiB, sent ${answers.map((a) => (a.sent / 1048576).toFixed(1)).join(",")} MiB, ${elapsed.toFixed(0)} ms, curl errors: ${answers.filter((a) => a.error).length}`);
      expect(after.peak - before.rss).toBeLessThan(64);
      expect(elapsed).toBeLessThan(15_000);
      // The API still answers, and nothing changed.
      const r = await fetch("http://localhost/services/web/bindings", { unix: w.admin } as RequestInit);
      expect(await r.json()).toEqual([{ protocol: "tcp", prefix: "192.0.2.0/24", ports: "80" }]);
      // Counted once each, by the process whose API refused them, in an exposition a Prometheus parser reads.
      const metrics = parsePrometheusTextFormat(await (await fetch("http://localhost/metrics", { unix: w.admin } as RequestInit)).text());
      const refused = metrics.find((m) => m.name === "edgeproxy_admin_requests_refused_total")!;
      expect(refused.metrics.map((m: any) => [m.labels.reason, m.value])).toEqual([["too_large", "10"], ["timeout", "0"]]);
    } finally {
      w.done();
    }
  }, 60_000);
});

/** Write `head` to the admin socket, then one header line every `everyMs`; resolves to what came back and when the server closed. */
function trickle(path: string, head: string, everyMs: number, limitMs: number): Promise<{ reply: string; closedAfterMs: number | undefined }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let reply = "";
    const s = createConnection(path, () => s.write(head));
    const timer = setInterval(() => s.writable && s.write("X-Slow: 1\r\n"), everyMs);
    const give = setTimeout(() => finish(undefined), limitMs);
    const finish = (closed: number | undefined) => {
      clearInterval(timer);
      clearTimeout(give);
      s.destroy();
      resolve({ reply, closedAfterMs: closed });
    };
    s.on("data", (d) => (reply += d.toString()));
    s.on("error", () => {});
    s.on("close", () => finish(performance.now() - t0));
  });
}

describe("admin request heads are bounded by Bun's server", () => {
  test("a head over 16 KiB gets 431; a head trickled a line every 2 s is closed by the idle timeout", async () => {
    const w = workdir();
    try {
      f.ep = await EdgeproxyProcess.start(["--admin", w.admin, "--prefix", "192.0.2.0/24", "--ports", "80"]);
      const big = await trickle(w.admin, `GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(100_000)}\r\n\r\n`, 60_000, 5_000);
      expect(big.reply).toMatch(/^HTTP\/1\.1 431 /);
      const slow = await trickle(w.admin, "GET /status HTTP/1.1\r\n", 2_000, 40_000);
      console.log(`trickled head closed after ${slow.closedAfterMs?.toFixed(0)} ms`);
      expect(slow.reply).toBe("");
      // idleTimeout is 10 s; Bun's timer is coarse (measured: closed at 12-15 s).
      expect(slow.closedAfterMs).toBeGreaterThan(9_000);
      expect(slow.closedAfterMs).toBeLessThan(30_000);
      expect((await fetch("http://localhost/healthz", { unix: w.admin } as RequestInit)).status).toBe(200);
    } finally {
      w.done();
    }
  }, 60_000);
});

/** curl to a TCP admin API (spawned, so it runs in the test's namespace; Bun's fetch thread is not there). */
async function tcpAdmin(port: number, route: string, method = "GET", body?: unknown): Promise<{ status: number; body: any }> {
  const p = Bun.spawn(
    ["curl", "-sS", "--max-time", "10", "-X", method, "-H", `authorization: Bearer ${TOKEN}`, "-H", "content-type: application/json", ...(body ? ["--data-binary", JSON.stringify(body)] : []),
      "-w", "\n%{http_code}", `http://127.0.0.1:${port}${route}`],
    { stdout: "pipe", stderr: "pipe" },
  );
  const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  const i = out.lastIndexOf("\n");
  const text = out.slice(0, i);
  return { status: Number(out.slice(i + 1)), body: text ? JSON.parse(text) : undefined };
}

const TOKEN = "0123456789abcdef0123";
const ADMIN_PORT = 19901;
const adminTable = `[admin]\nlisten = "127.0.0.1:${ADMIN_PORT}"\ntoken = "${TOKEN}"\n`;
const svc = (name: string, origin: string, ports = "80") => `[[service]]\nname = "${name}"\norigin = "${origin}"\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = "${ports}"\n`;

describe("nothing reaches the admin listener", () => {
  test.each([
    [`127.0.0.1:${ADMIN_PORT}`, `origin 127\\.0\\.0\\.1:${ADMIN_PORT} reaches`],
    [`localhost:${ADMIN_PORT}`, `origin localhost:${ADMIN_PORT} reaches`],
    [`0.0.0.0:${ADMIN_PORT}`, `origin 0\\.0\\.0\\.0:${ADMIN_PORT} reaches`],
  ])("at start: origin %s is refused in one line, exit 2", async (origin, what) => {
    const w = workdir();
    try {
      writeFileSync(w.file, adminTable + svc("web", origin));
      const r = await runEdgeproxy(["--config", w.file]);
      expect(r.code).toBe(2);
      expectOneLine(r.stderr, new RegExp(`service web: ${what} the admin API on 127\\.0\\.0\\.1:${ADMIN_PORT}; clients would be proxied to it`));
    } finally {
      w.done();
    }
  });

  test("at reload (API and SIGHUP) and through POST bindings: refused with 400 and one line, nothing changes, the steered port never answers for the admin API", async () => {
    const w = workdir();
    const origin = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void s.end("origin\n"), data() {} } });
    f.servers.push(origin);
    try {
      // "pp" forwards to 127.0.0.1 on the port dialled: harmless on port 80 (nothing there), the admin API's on ADMIN_PORT.
      const good = adminTable + svc("web", `127.0.0.1:${origin.port}`) + svc("pp", "127.0.0.1", "81");
      writeFileSync(w.file, good);
      f.ep = await EdgeproxyProcess.start(["--config", w.file]);
      expect((await tcpAdmin(ADMIN_PORT, "/services/web")).body.origin).toBe(`127.0.0.1:${origin.port}`);

      // Reload with the admin address as web's origin: refused, the running config kept.
      writeFileSync(w.file, adminTable + svc("web", `localhost:${ADMIN_PORT}`) + svc("pp", "127.0.0.1", "81"));
      const reload = await tcpAdmin(ADMIN_PORT, "/reload", "POST");
      expect(reload.status).toBe(400);
      expect(reload.body.error).toMatch(new RegExp(`^service web: origin localhost:${ADMIN_PORT} reaches the admin API on 127\\.0\\.0\\.1:${ADMIN_PORT}`));
      f.ep.proc.kill("SIGHUP");
      for (let i = 0; i < 100 && !f.ep.stderr.includes("reload rejected"); i++) await Bun.sleep(20);
      expect(f.ep.stderr).toMatch(new RegExp(`reload rejected, nothing changed: service web: origin localhost:${ADMIN_PORT} reaches the admin API`));
      expect((await tcpAdmin(ADMIN_PORT, "/services/web")).body.origin).toBe(`127.0.0.1:${origin.port}`);

      // A binding that steers the admin address and port.
      const steer = await tcpAdmin(ADMIN_PORT, "/services/web/bindings", "POST", { protocol: "tcp", prefix: "127.0.0.0/8", ports: String(ADMIN_PORT) });
      expect(steer.status).toBe(400);
      expect(steer.body.error).toBe(`admin.listen: 127.0.0.1:${ADMIN_PORT} lies inside the bindings of service web; the admin API must not be reachable from steered ports`);
      // A binding that makes the port-preserving origin dial the admin port.
      const reach = await tcpAdmin(ADMIN_PORT, "/services/pp/bindings", "POST", { protocol: "tcp", prefix: "192.0.2.0/24", ports: `9000-${ADMIN_PORT + 10}` });
      expect(reach.status).toBe(400);
      expect(reach.body.error).toMatch(new RegExp(`^service pp: origin 127\\.0\\.0\\.1 \\(port-preserving\\) reaches the admin API on 127\\.0\\.0\\.1:${ADMIN_PORT}`));
      expect((await tcpAdmin(ADMIN_PORT, "/services/pp/bindings")).body).toEqual([{ protocol: "tcp", prefix: "192.0.2.0/24", ports: "81" }]);
      expect((await tcpAdmin(ADMIN_PORT, "/services/web/bindings")).body).toEqual([{ protocol: "tcp", prefix: "192.0.2.0/24", ports: "80" }]);
      // So the admin port behind the service's addresses is not steered: nothing answers there.
      const probe = Bun.spawnSync(["curl", "-sS", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", `http://192.0.2.1:${ADMIN_PORT}/healthz`], { stdout: "pipe", stderr: "pipe" });
      expect(probe.stdout.toString()).toBe("000");
      // A binding that reaches nothing of ours is still accepted.
      const fine = await tcpAdmin(ADMIN_PORT, "/services/pp/bindings", "POST", { protocol: "tcp", prefix: "192.0.2.0/24", ports: "82" });
      expect(fine.status).toBe(201);
      writeFileSync(w.file, good);
    } finally {
      w.done();
    }
  }, 30_000);
});
