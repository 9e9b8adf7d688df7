// The http data plane's protocol details, run in this process (in a
// namespace of each test's own) with hand-built service configs, clients
// connecting to its listener directly; what users configure is also tested
// through edgeproxy and sk_lookup (http.test.ts, http-config.test.ts, and
// TLS here).
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCert } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin, inProcessService, parseReply, poolOf, rawClient } from "./helpers/http";
import { exchange, text } from "./helpers/net";

const f = proxyFixture();
let svc: ReturnType<typeof inProcessService> | undefined;
afterEach(() => {
  svc?.close();
  svc = undefined;
});

async function get(port: number, request: string, host = "127.0.0.1") {
  return parseReply(text(await exchange(host, port, request, 10_000)));
}

describe("http service", () => {
  test("routes by Host (with and without port, any case) and whole path segments; a route without a pool gets the responder", async () => {
    const names = ["a-api", "a-any", "a-8080", "any-static", "catch-all"];
    const o = names.map((n) => httpOrigin("127.0.0.1", n));
    f.servers.push(...o.map((x) => x.listener));
    const p = o.map((x) => poolOf("127.0.0.1", x.port));
    svc = inProcessService({
      pool: p[4],
      routes: [
        { host: "a.example:8080", path: "/", pool: p[2] },
        { host: "a.example", path: "/api", pool: p[0] },
        { host: "a.example", path: "/", pool: p[1] },
        { path: "/static", pool: p[3] },
        { path: "/about" },
      ],
    });
    const body = async (host: string, path: string) => (await get(svc!.port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)).body;
    expect(await body("a.example", "/api")).toBe("a-api");
    expect(await body("A.Example", "/api/v1/users?x=1")).toBe("a-api");
    expect(await body("a.example", "/apis")).toBe("a-any");
    expect(await body("a.example:8080", "/api")).toBe("a-8080");
    expect(await body("a.example:9090", "/api")).toBe("a-api");
    expect(await body("b.example", "/static/app.js")).toBe("any-static");
    expect(await body("b.example", "/staticx")).toBe("catch-all");
    expect(await body("a.example", "/static/app.js")).toBe("a-any"); // the host route wins
    const about = await get(svc.port, "GET /about HTTP/1.1\r\nHost: b.example\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    expect(about.status).toBe(200);
    expect(JSON.parse(about.body)).toMatchObject({ service: "edgeproxy", path: "/about" });
    expect(o[3]!.seen[0]!.target).toBe("/static/app.js");
  }, 20_000);

  test("504 when the origin accepts but sends no first byte within first_byte_timeout", async () => {
    const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    f.servers.push(silent);
    svc = inProcessService({ pool: poolOf("127.0.0.1", silent.port), http: { firstByteTimeoutMs: 300 } });
    const t0 = performance.now();
    const r = await get(svc.port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(r.status).toBe(504);
    expect(r.body).toBe("origin first byte timeout\n");
    expect(performance.now() - t0).toBeGreaterThan(250);
    expect(svc.svc.report().connections.originErrors).toEqual({ timeout: 1 });
    expect(svc.svc.report().http).toMatchObject({ requests: 1, responses: { "5xx": 1, "2xx": 0 } });
  }, 20_000);

  test("connect failures are reported to the pool: after eject.failures 502s the origin is ejected, yet tried in panic (the pool's only endpoint)", async () => {
    const gone = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = gone.port;
    gone.stop(true);
    svc = inProcessService({ pool: { ...poolOf("127.0.0.1", port), eject: { failures: 2, durationMs: 60_000, baseMs: 60_000 } } });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await get(svc.port, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")).status);
    expect(statuses).toEqual([502, 502, 502, 502, 502]);
    const [endpoint] = svc.svc.report().origins![0]!.endpoints;
    expect(endpoint).toMatchObject({ up: false, ejections: 1, panics: 3 });
    expect(svc.svc.report().connections.originErrors).toMatchObject({ refused: 5 });
  }, 20_000);

  test("413 when a chunked body crosses max body size mid-stream; under it, it passes", async () => {
    const o = httpOrigin("127.0.0.1", "ok");
    f.servers.push(o.listener);
    // The limit counts the chunked body as received, framing included: 1,000 data bytes take
    // 1,019 ("258\r\n", 600, CRLF, "190\r\n", 400, CRLF, "0\r\n\r\n").
    svc = inProcessService({ pool: poolOf("127.0.0.1", o.port), http: { maxBodyBytes: 1019 } });
    const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`;
    const small = await get(svc.port, `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${chunk("a".repeat(600))}${chunk("b".repeat(400))}0\r\n\r\n`);
    expect(small.status).toBe(200);
    expect(o.seen[0]!.body).toBe("a".repeat(600) + "b".repeat(400));
    const big = await get(svc.port, `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunk("a".repeat(600))}${chunk("b".repeat(401))}0\r\n\r\n`);
    expect(big.status).toBe(413);
    expect(o.seen.length).toBe(1);
    const byLength = await get(svc.port, `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1020\r\n\r\n`);
    expect(byLength.status).toBe(413);
  }, 20_000);

  test("HEAD, 204 and 304 have no body; 100-continue passes through; HTTP/1.0 gets a closed or kept connection as asked", async () => {
    const o = httpOrigin("127.0.0.1", "x", (req) => {
      if (req.target === "/204") return "HTTP/1.1 204 No Content\r\n\r\n";
      if (req.target === "/304") return 'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n';
      if (req.target === "/chunked") return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
      return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    });
    f.servers.push(o.listener);
    svc = inProcessService({ pool: poolOf("127.0.0.1", o.port) });
    // On one connection: HEAD, 204, 304 then a GET; the GET's body must be the first body seen.
    const c = await rawClient("127.0.0.1", svc.port);
    c.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\n");
    const all = await c.until((t) => t.includes("0\r\n\r\n"));
    const statuses = [...all.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    expect(statuses).toEqual(["200", "204", "304", "200"]);
    expect(all.split("hello").length - 1).toBe(1);
    expect(all.toLowerCase()).toContain("content-length: 5"); // HEAD keeps the GET's length
    c.close();

    // Expect: 100-continue: the origin's 100 reaches the client before it sends the body.
    // An origin that answers 100 first, then echoes the body.
    const cont = Bun.listen<{ n: number }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: (s) => void (s.data = { n: 0 }),
        data(s, d) {
          if (s.data.n++ === 0) return void s.write("HTTP/1.1 100 Continue\r\n\r\n");
          s.write(`HTTP/1.1 200 OK\r\ncontent-length: ${d.length}\r\n\r\n${d}`);
        },
      },
    });
    f.servers.push(cont);
    svc.close();
    svc = inProcessService({ pool: poolOf("127.0.0.1", cont.port) });
    const e2 = await rawClient("127.0.0.1", svc.port);
    e2.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    expect(await e2.until((t) => t.includes("\r\n\r\n"))).toBe("HTTP/1.1 100 Continue\r\n\r\n");
    e2.send("hello");
    expect(await e2.until((t) => t.endsWith("hello"))).toMatch(/100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello$/);
    e2.close();

    // HTTP/1.0: closed after the response unless keep-alive was asked for.
    svc.close();
    svc = inProcessService({ pool: poolOf("127.0.0.1", o.port) });
    const r10 = await get(svc.port, "GET / HTTP/1.0\r\n\r\n");
    expect(r10.head).toMatch(/^HTTP\/1\.0 200/);
    expect(r10.headers.get("connection")).toBe("close");
    const k = await rawClient("127.0.0.1", svc.port);
    k.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    expect(await k.until((t) => t.endsWith("hello"))).toContain("connection: keep-alive");
    // A chunked answer to a 1.0 client is decoded and framed by close.
    k.send("GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    await k.until(() => false, 1000);
    expect(k.closed).toBe(true);
    expect(k.text.endsWith("\r\n\r\nhello")).toBe(true);
    expect(o.seen.at(-1)!.headers.get("host")).toEqual([`127.0.0.1:${svc.port}`]); // 1.0 without Host: the address dialled
  }, 20_000);

  test("TLS termination: a test certificate, X-Forwarded-Proto https, curl sees the origin's answer", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-tls-"));
    try {
      writeCert(dir, { cn: "secure.example", names: ["secure.example"] });
      const o = httpOrigin("127.0.0.1", "secret");
      f.servers.push(o.listener);
      // Through the real path: edgeproxy steers 192.0.2.0/24 port 8443 to its TLS listener.
      f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")]);
      // curl verifies the certificate against the test CA (itself) and the name.
      const curl = Bun.spawn(["curl", "-sS", "--max-time", "5", "--cacert", join(dir, "cert.pem"), "--resolve", "secure.example:8443:192.0.2.9", "https://secure.example:8443/account"], { stdout: "pipe", stderr: "pipe" });
      const [out, err] = await Promise.all([new Response(curl.stdout).text(), new Response(curl.stderr).text()]);
      expect(err).toBe("");
      expect(out).toBe("secret");
      const seen = o.seen[0]!;
      expect(seen.headers.get("x-forwarded-proto")).toEqual(["https"]);
      expect(seen.headers.get("forwarded")![0]).toBe(`for=192.0.2.9;proto=https;host="secure.example:8443"`); // a local destination is its own source
      // Plain HTTP on the TLS port is no request: no answer.
      const plain = await exchange("192.0.2.9", 8443, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 3000);
      expect(text(plain)).not.toContain("secret");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);
});

describe("http drain", () => {
  test("a drain closes idle keep-alive connections and tells busy ones Connection: close after their response", async () => {
    const o = httpOrigin("127.0.0.1", "o");
    f.servers.push(o.listener);
    svc = inProcessService({ pool: poolOf("127.0.0.1", o.port) });
    const idle = await rawClient(svc.host, svc.port);
    const busy = await rawClient(svc.host, svc.port);
    const req = "GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n";
    idle.send(req);
    expect(parseReply(await idle.until((t) => t.includes("\r\n\r\n"))).headers.get("connection")).toBeUndefined();
    // Half a request: busy when the drain starts.
    busy.send("GET /y HTTP/1.1\r\n");
    await Bun.sleep(50);
    svc.svc.close(false);
    await idle.until(() => false, 2000);
    expect(idle.closed).toBe(true);
    busy.send("Host: a.example\r\n\r\n");
    const reply = parseReply(await busy.until((t) => t.includes("\r\n\r\n")));
    expect(reply.status).toBe(200);
    expect(reply.headers.get("connection")).toBe("close");
    await busy.until(() => false, 2000);
    expect(busy.closed).toBe(true);
    expect(svc.svc.openCount()).toBe(0);
  });
});
