// http services on the engine (engine = "epoll", src/engine/http.ts) end to
// end: edgeproxy --mode http --engine epoll in a namespace of each test's
// own, curl and node (llhttp) as clients, over the real kernel path. The
// HTTP behaviour itself is Bun's path's code, run by every test/http*.ts
// with EDGEPROXY_ENGINE=epoll; these check what the transport adds: that it
// is the engine that serves, keep-alive both sides, backpressure both ways
// with large bodies, and the refusal of what it cannot run yet.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { createHash, randomBytes } from "node:crypto";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { exchange, text } from "./helpers/net";

const f = proxyFixture();
const servers = f.servers;

const start = (origin: string, more: string[] = []) =>
  EdgeproxyProcess.start(["--engine", "epoll", "--mode", "http", "--ports", "80,8080", "--prefix", "192.0.2.0/24,2001:db8::/64", "--origin", origin, ...more]);

async function run(cmd: string[], ms: number): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => p.kill(), ms);
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, out, err };
}

describe("http on the engine (epoll)", () => {
  test("curl: keep-alive requests over IPv4 and IPv6 reuse one origin connection; the shutdown summary names the engine", async () => {
    const o = httpOrigin("127.0.0.1", "hello");
    servers.push(o.listener);
    f.ep = await start(`127.0.0.1:${o.port}`);
    for (const host of ["192.0.2.9", "[2001:db8::9]"]) {
      // Five requests on one connection: curl reuses it (-w prints num_connects per transfer: 1 then 0s).
      const urls = Array.from({ length: 5 }, (_, i) => `http://${host}:8080/r${i}`);
      const r = await run(["curl", "-sS", "--max-time", "10", "-w", " %{http_code}:%{num_connects}\\n", ...urls], 15_000);
      expect(r.err).toBe("");
      expect(r.out.trim().split("\n")).toEqual(["hello 200:1", "hello 200:0", "hello 200:0", "hello 200:0", "hello 200:0"]);
    }
    expect(o.seen.map((s) => s.target)).toEqual(["/r0", "/r1", "/r2", "/r3", "/r4", "/r0", "/r1", "/r2", "/r3", "/r4"]);
    // One origin connection for all ten: the keep-alive pool on the engine's thread.
    expect(new Set(o.seen.map((s) => s.connection)).size).toBe(1);
    expect(await f.ep.stop()).toBe(0);
    expect(f.ep.stderr).toMatch(/2 connections, 10 requests \(1xx 0, 2xx 10, .*\(engine epoll\)/);
    f.ep = undefined;
  }, 40_000);

  test("large bodies both ways, chunked upload and length-framed download, to a slow reader: intact (node's llhttp client, origin)", async () => {
    // An origin in node (llhttp) that hashes what it receives and answers with 24 MiB of a known pattern.
    const size = 24 * 1024 * 1024;
    const origin = Bun.spawn(
      [
        "node",
        "-e",
        `const http=require("node:http"),crypto=require("node:crypto");const big=Buffer.alloc(${size});for(let i=0;i<big.length;i+=4096)big[i]=i>>12&255;
         const srv=http.createServer((req,res)=>{const h=crypto.createHash("sha256");let n=0;req.on("data",d=>{h.update(d);n+=d.length});
         req.on("end",()=>{res.writeHead(200,{"content-length":big.length,"x-got":n+":"+h.digest("hex")});res.end(big)})});
         srv.listen(0,"127.0.0.1",()=>console.log(srv.address().port));`,
      ],
      { stdout: "pipe", stderr: "inherit" },
    );
    try {
      const reader = origin.stdout.getReader();
      const port = Number(new TextDecoder().decode((await reader.read()).value).trim());
      reader.releaseLock();
      f.ep = await start(`127.0.0.1:${port}`);
      const expected = Buffer.alloc(size);
      for (let i = 0; i < expected.length; i += 4096) expected[i] = (i >> 12) & 255;
      const up = randomBytes(9 * 1024 * 1024 + 5);
      // The client: node's http (llhttp), a chunked upload, and a reader that pauses so the proxy must hold back the origin.
      const client = `
        const http=require("node:http"),crypto=require("node:crypto");
        const up=Buffer.from(require("node:fs").readFileSync(0));
        const req=http.request({host:"192.0.2.33",port:80,method:"POST",path:"/up",headers:{"transfer-encoding":"chunked"}},res=>{
          const h=crypto.createHash("sha256");let n=0;
          res.on("data",d=>{h.update(d);n+=d.length;if(n<4*1024*1024){res.pause();setTimeout(()=>res.resume(),20)}});
          res.on("end",()=>console.log(JSON.stringify({status:res.statusCode,got:res.headers["x-got"],n,sha:h.digest("hex")})));
        });
        req.on("error",e=>{console.error(e.message);process.exit(1)});
        for(let i=0;i<up.length;i+=65536)req.write(up.subarray(i,i+65536));req.end();`;
      const p = Bun.spawn(["node", "-e", client], { stdin: up, stdout: "pipe", stderr: "pipe" });
      const timer = setTimeout(() => p.kill(), 30_000);
      const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      clearTimeout(timer);
      expect(err).toBe("");
      const r = JSON.parse(out);
      expect(r.status).toBe(200);
      expect(r.got).toBe(`${up.length}:${createHash("sha256").update(up).digest("hex")}`);
      expect(r.n).toBe(expected.length);
      expect(r.sha).toBe(createHash("sha256").update(expected).digest("hex"));
    } finally {
      origin.kill();
    }
  }, 60_000);

  test("busiest clients: the engine's http connections are in the live view, with their bytes both ways", async () => {
    const o = httpOrigin("127.0.0.1", "hello");
    servers.push(o.listener);
    f.ep = await start(`127.0.0.1:${o.port}`);
    for (let i = 0; i < 3; i++) {
      const r = await run(["curl", "-sS", "--max-time", "5", "--interface", "192.0.2.7", "-o", "/dev/null", "-w", "%{http_code}", "http://192.0.2.1:80/"], 10_000);
      expect(r.out).toBe("200");
    }
    type Top = { address: string; connections: number; bytes: number }[];
    let top: Top = [];
    const end = Date.now() + 10_000;
    while (top.length < 1 && Date.now() < end) {
      const r = await runEdgeproxy(["status", "--json"]);
      expect(r.code).toBe(0);
      top = Object.values((JSON.parse(r.stdout) as { clients: Record<string, { top: Top }> }).clients)[0]?.top ?? [];
      if (top.length < 1) await Bun.sleep(300);
    }
    expect(top.length).toBe(1);
    expect(top[0]!.address).toBe("192.0.2.7");
    expect(top[0]!.connections).toBe(3);
    // Each connection's request and response (a few hundred bytes both ways), counted at close.
    expect(top[0]!.bytes).toBeGreaterThan(3 * 100);
  }, 30_000);

  test("accept_proxy: the header names the client; a balancer silent past --proxy-header-timeout is reset, counted as a deadline", async () => {
    const o = httpOrigin("127.0.0.1", "hi");
    servers.push(o.listener);
    f.ep = await start(`127.0.0.1:${o.port}`, ["--accept-proxy", "192.0.2.200/32", "--proxy-header-timeout", "500ms"]);
    const via = text(await exchange("192.0.2.9", 80, "PROXY TCP4 203.0.113.7 192.0.2.9 5555 80\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 5000, "192.0.2.200"));
    expect(via).toStartWith("HTTP/1.1 200");
    expect(o.seen[0]!.headers.get("x-forwarded-for")).toEqual(["203.0.113.7"]);
    // A balancer that starts a header and stalls (no FIN): reset at the deadline.
    const t0 = performance.now();
    const how = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve("still open"), 5000);
      const options = {
        hostname: "192.0.2.9",
        port: 80,
        localAddress: "192.0.2.200",
        socket: {
          open: (s: Socket) => void s.write("PROXY TCP4 "),
          data: () => {},
          close: (_s: Socket, err?: Error) => {
            clearTimeout(timer);
            resolve(err ? "reset" : "closed");
          },
        },
      };
      // localAddress: Bun.connect binds the client there (as helpers/net.ts exchange does); its types omit it.
      void Bun.connect(options as unknown as Parameters<typeof Bun.connect>[0]);
    });
    const ms = performance.now() - t0;
    expect(how).toBe("reset");
    // Within the deadline and a sweep (100 ms) of it, with a margin for a loaded machine.
    expect(ms).toBeGreaterThan(400);
    expect(ms).toBeLessThan(2500);
    // Counted as Bun's pipeline counts it: a deadline and a PROXY header error (the status' connection counters).
    const admin = (JSON.parse((await runEdgeproxy(["status", "--json"])).stdout) as { instances: { admin: string }[] }).instances[0]!.admin;
    const metrics = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
    expect(metrics).toMatch(/^edgeproxy_deadline_expired_total\{service="default",stage="proxy_header"\} 1$/m);
  }, 30_000);

  test("--engine epoll on an http service with what it cannot run yet is one clear line, exit 2", async () => {
    for (const [more, want] of [
      [["--origin-tls", "verify"], '--engine: "epoll" does not speak TLS to origins yet (origin_tls)'],
    ] as const) {
      const p = Bun.spawnSync([process.execPath, "src/main.ts", "--engine", "epoll", "--mode", "http", "--origin", "127.0.0.1:80", ...more], { stderr: "pipe" });
      expect(p.exitCode).toBe(2);
      const err = p.stderr.toString().trim();
      expect(err.split("\n")).toHaveLength(1);
      expect(err).toContain(want);
    }
  });
});
