// Where the TLS features meet (issue 18's merges): HTTP/2 clients of a TLS
// http service whose origins are TLS too (origin_tls = verify); the service's
// certificate file rewritten while an HTTP/2 session is open; the busiest-clients
// tracker's bytes for HTTP/2 sessions. Real clients: node:http2, curl, openssl s_client.
import { describe, expect, test } from "bun:test";
import { renameSync } from "node:fs";
import { join } from "node:path";
import { writeCert } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { originCertificates, pem, silent, tlsHttpOrigin } from "./helpers/origintls";
import { scrape } from "./helpers/pools";

const f = proxyFixture();
originCertificates();

/** A self-signed edge certificate for `cn`, written to tmp files then renamed over `edge.pem`/`edge.key` (a new inode). */
function edgeCertificate(cn: string): void {
  writeCert({ cert: pem("edge.pem.new"), key: pem("edge.key.new") }, { cn });
  renameSync(pem("edge.key.new"), pem("edge.key"));
  renameSync(pem("edge.pem.new"), pem("edge.pem"));
}

/** Run a client to completion within `ms` (killed after). */
async function run(cmd: string[], ms = 15_000): Promise<{ out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const kill = setTimeout(() => p.kill("SIGKILL"), ms);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(kill);
  return { out, err };
}

/** One kept-open node:http2 session (helpers/h2session.mjs): `get(path)` sends one request on it and reads its JSON line. */
function h2Session(url: string, servername: string) {
  const p = Bun.spawn(["node", join(import.meta.dir, "helpers/h2session.mjs"), url, servername], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  const reader = p.stdout.getReader();
  let buf = "";
  const line = async (): Promise<string> => {
    const deadline = Date.now() + 10_000;
    while (!buf.includes("\n")) {
      if (Date.now() > deadline) throw new Error("h2session: no answer in 10 s");
      const { value, done } = await reader.read();
      if (done) throw new Error(`h2session ended: ${await new Response(p.stderr).text()}`);
      buf += new TextDecoder().decode(value);
    }
    const nl = buf.indexOf("\n");
    const l = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    return l;
  };
  return {
    async get(path: string): Promise<{ status?: number; body?: string; sessions?: number; error?: string }> {
      p.stdin.write(`${path}\n`);
      p.stdin.flush();
      return JSON.parse(await line());
    },
    async close(): Promise<void> {
      p.stdin.end();
      const kill = setTimeout(() => p.kill("SIGKILL"), 5_000);
      await p.exited;
      clearTimeout(kill);
    },
  };
}

/** A process-wide (unlabelled) series. */
async function processMetric(admin: string, name: string): Promise<number> {
  const text = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
  return Number(new RegExp(`^edgeproxy_${name} (\\d+)`, "m").exec(text)?.[1] ?? NaN);
}

async function until(what: string, ok: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await Bun.sleep(100);
  }
}

describe("TLS at both ends, HTTP/2 in front", () => {
  test("HTTP/2 clients through origin_tls = verify; the certificate rewritten under an open HTTP/2 session; the session's bytes in the busiest clients", async () => {
    edgeCertificate("edge.test");
    const o = tlsHttpOrigin("127.0.0.1");
    f.servers.push(o.listener);
    const admin = pem("admin-seams.sock");
    f.ep = await EdgeproxyProcess.start([
      "--mode", "http", "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`,
      "--origin-tls", "verify", "--origin-ca", pem("ca.pem"), "--origin-sni", "origin.test",
      "--tls-cert", pem("edge.pem"), "--tls-key", pem("edge.key"), "--admin", admin,
    ]);
    const session = h2Session("https://192.0.2.10:8443", "edge.test");
    try {
      // Streams of one HTTP/2 session, and curl's own HTTP/2 session: one verified TLS origin connection, kept alive.
      expect(await session.get("/a")).toEqual({ status: 200, body: "conn=1 sni=origin.test", sessions: 1 });
      expect(await session.get("/b")).toEqual({ status: 200, body: "conn=1 sni=origin.test", sessions: 1 });
      const c = await run(["curl", "-sk", "--max-time", "8", "--http2", "--resolve", "edge.test:8443:192.0.2.11", "-w", "\n%{http_version}", "https://edge.test:8443/c"]);
      expect(c.out).toBe("conn=1 sni=origin.test\n2");
      // curl is gone: its session closes at its FIN (not at keepalive_timeout), while node's stays open.
      await until("curl's session is closed", async () => (await scrape(admin))("edgeproxy_connections_active", { service: "default" }) === 1, 5_000);

      // The certificate file changes: new handshakes get the new one, the open session goes on.
      edgeCertificate("edge2.test");
      await until("the rewritten certificate is loaded", async () => (await scrape(admin))("edgeproxy_tls_certificate_reloads_total", { service: "default", result: "ok" }) === 1);
      const s = await run(["openssl", "s_client", "-connect", "192.0.2.12:8443", "-servername", "edge.test", "-alpn", "h2"]);
      expect(s.out).toMatch(/^subject=\s*CN\s*=\s*edge2\.test/m);
      expect(s.out).toContain("ALPN protocol: h2");
      expect(await session.get("/d")).toEqual({ status: 200, body: "conn=1 sni=origin.test", sessions: 1 });
    } finally {
      await session.close();
    }
    const m = await scrape(admin);
    // node's, curl's and openssl's (ALPN h2, no request).
    expect(m("edgeproxy_http2_sessions_total", { service: "default" })).toBe(3);
    expect(m("edgeproxy_http2_streams_total", { service: "default" })).toBe(4);
    expect(m("edgeproxy_http_origin_connections_total", { service: "default", how: "opened" })).toBe(1);
    expect(m("edgeproxy_origin_tls_handshake_errors_total", { service: "default", reason: "verify" }) ?? 0).toBe(0);
    expect(o.connections()).toBe(1);

    // The busiest clients: node's session (192.0.2.10) and curl's (192.0.2.11) with their bytes both ways, counted at close.
    await until("the HTTP/2 sessions are closed", async () => (await scrape(admin))("edgeproxy_connections_active", { service: "default" }) === 0, 5_000);
    const view = (await (await fetch("http://localhost/dashboard.json", { unix: admin } as RequestInit)).json()) as { clients: { top: { address: string; connections: number; bytes: number }[] } };
    const h2Clients = view.clients.top.filter((r) => r.address === "192.0.2.10" || r.address === "192.0.2.11");
    expect(h2Clients).toHaveLength(2);
    // Each session's frames both ways (preface, SETTINGS, HEADERS, DATA; TLS plaintext): counted, where they were 0.
    for (const r of h2Clients) expect(r.bytes).toBeGreaterThan(100);
  }, 60_000);
});

describe("HTTP/2 streams and the connection cap", () => {
  test("streams past a session's first take a cap slot each for their origin connection; over the cap: 503, counted, slots given back", async () => {
    edgeCertificate("edge.test");
    // An origin that accepts and never answers: each stream holds its origin connection until first_byte_timeout.
    const quiet = silent("127.0.0.1");
    f.servers.push(quiet);
    const admin = pem("admin-cap.sock");
    f.ep = await EdgeproxyProcess.start([
      "--mode", "http", "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${quiet.port}`, "--first-byte-timeout", "2s",
      "--max-connections", "4", "--tls-cert", pem("edge.pem"), "--tls-key", pem("edge.key"), "--admin", admin,
    ]);
    const client = run(["node", join(import.meta.dir, "helpers/h2streams.mjs"), "https://192.0.2.10:8443", "10"], 20_000);
    // The session's slot covers its first origin connection; 3 more slots, 3 more origin connections.
    await until("4 origin connections are open", async () => quiet.open === 4, 5_000);
    await Bun.sleep(300);
    expect(quiet.open).toBe(4);
    const outcomes = JSON.parse((await client).out.trim()) as { status?: number; rst?: number }[];
    // 4 held to first_byte_timeout, 6 refused at once.
    expect(outcomes.filter((o) => o.status === 504)).toHaveLength(4);
    expect(outcomes.filter((o) => o.status === 503)).toHaveLength(6);
    expect(await processMetric(admin, "connection_cap_refused_total")).toBe(6);
    await until("every slot is back", async () => (await processMetric(admin, "connection_cap_active")) === 0, 5_000);
  }, 30_000);
});
