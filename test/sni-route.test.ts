// Routing by TLS server name without terminating TLS ([[service.route]] sni):
// real clients (openssl s_client, curl) reach TLS origins with different
// certificates through edgeproxy, which only reads the ClientHello.
import { beforeAll, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OPENSSL_A } from "../src/proxy/sni/hello.fixtures";
import { certFiles } from "./helpers/certs";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange, text } from "./helpers/net";
import { expectOneLine } from "./helpers/oneline";
import { headerOrigin, type Seen } from "./helpers/proxyheaders";

const f = proxyFixture();
const certs = certFiles({ prefix: "ep-sni-", pair: false });
const pem: Record<string, { cert: string; key: string; certFile: string; keyFile: string }> = {};

beforeAll(() => {
  // One self-signed certificate per origin: the subject a client sees says which origin completed its handshake.
  for (const [name, cn] of [["a", "a.example"], ["b", "*.b.example"], ["default", "default.example"]] as const) {
    const { cert: certFile, key: keyFile } = certs.make(name, { cn });
    pem[name] = { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8"), certFile, keyFile };
  }
});

/** A TLS origin with `name`'s certificate: answers any request with "origin NAME" and closes; counts connections. */
function tlsOrigin(name: string): { listener: TCPSocketListener<undefined>; accepted: () => number } {
  let accepted = 0;
  const body = `origin ${name}`;
  const listener = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: pem[name]!.cert, key: pem[name]!.key },
    socket: {
      open() {
        accepted++;
      },
      data(s) {
        s.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      },
    },
  });
  f.servers.push(listener);
  return { listener, accepted: () => accepted };
}

/** Run a client to completion (bounded), its stdout and stderr. */
async function run(cmd: string[], stdin = ""): Promise<{ out: string; err: string }> {
  const p = Bun.spawn(cmd, { stdin: new Blob([stdin]), stdout: "pipe", stderr: "pipe" });
  const kill = setTimeout(() => p.kill("SIGKILL"), 10_000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(kill);
  return { out, err };
}

/** openssl s_client with `servername` (undefined: -noservername): the subject it saw and the origin's answer. */
async function sClient(servername: string | undefined, port = 8443): Promise<{ subject: string | undefined; body: string | undefined }> {
  const { out } = await run(
    ["openssl", "s_client", "-connect", `192.0.2.10:${port}`, ...(servername ? ["-servername", servername] : ["-noservername"]), "-ign_eof"],
    `GET / HTTP/1.1\r\nHost: ${servername ?? "x"}\r\n\r\n`,
  );
  return { subject: /^subject=\s*CN\s*=\s*(\S+)/m.exec(out)?.[1], body: /origin \w+/.exec(out)?.[0] };
}

/** curl to https://NAME:8443/ resolved to the edge: the certificate subject it saw (-v) and the body. */
async function curl(name: string): Promise<{ subject: string | undefined; body: string }> {
  const { out, err } = await run(["curl", "-sk", "-v", "--max-time", "8", "--resolve", `${name}:8443:192.0.2.10`, `https://${name}:8443/`]);
  return { subject: /subject: CN=(\S+)/.exec(err)?.[1], body: out };
}

async function metrics(admin: string): Promise<string> {
  return (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
}

const route = (names: string[], port: number) => `[[service.route]]\nsni = [${names.map((n) => `"${n}"`).join(", ")}]\norigin = "127.0.0.1:${port}"\n`;

describe("routing by SNI to TLS origins, TLS untouched", () => {
  test("openssl and curl reach origin A by a.example, origin B by *.b.example names, the default origins otherwise", async () => {
    const a = tlsOrigin("a");
    const b = tlsOrigin("b");
    const d = tlsOrigin("default");
    const admin = join(certs.dir, "admin1.sock");
    const file = join(certs.dir, "sni.toml");
    writeFileSync(
      file,
      `[admin]\nsocket = "${admin}"\n[[service]]\nname = "edge"\norigin = "127.0.0.1:${d.listener.port}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8443"]\n` +
        route(["a.example"], a.listener.port) +
        route(["*.b.example"], b.listener.port),
    );
    f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);

    // The client sees the origin's own certificate: edgeproxy completed no handshake.
    expect(await sClient("a.example")).toEqual({ subject: "a.example", body: "origin a" });
    expect(await sClient("x.b.example")).toEqual({ subject: "*.b.example", body: "origin b" });
    expect(await curl("a.example")).toEqual({ subject: "a.example", body: "origin a" });
    expect(await curl("x.b.example")).toEqual({ subject: "*.b.example", body: "origin b" });
    // Case and a trailing dot do not matter (curl sends neither; openssl sends what it is given).
    expect(await sClient("Y.B.Example.")).toEqual({ subject: "*.b.example", body: "origin b" });
    // A wildcard is one label: neither b.example itself nor two labels down.
    expect(await curl("b.example")).toEqual({ subject: "default.example", body: "origin default" });
    expect(await curl("z.y.b.example")).toEqual({ subject: "default.example", body: "origin default" });
    expect(await curl("unknown.example")).toEqual({ subject: "default.example", body: "origin default" });
    expect(await sClient(undefined)).toEqual({ subject: "default.example", body: "origin default" });
    expect([a.accepted(), b.accepted(), d.accepted()]).toEqual([2, 3, 4]);

    const m = await metrics(admin);
    expect(m).toContain('edgeproxy_sni_route_connections_total{service="edge",route="1",sni="a.example"} 2');
    expect(m).toContain('edgeproxy_sni_route_connections_total{service="edge",route="2",sni="*.b.example"} 3');
    expect(m).toContain('edgeproxy_sni_route_connections_total{service="edge",route="default",sni=""} 4');
    expect(m).toContain('edgeproxy_sni_unmatched_total{service="edge",reason="unknown_name"} 3');
    expect(m).toContain('edgeproxy_sni_unmatched_total{service="edge",reason="no_sni"} 1');
    // Bytes per route, the ClientHello included (curl's is over 500 bytes; the answer about 1 KB with the certificate).
    const bytes = Number(/edgeproxy_sni_route_bytes_total\{service="edge",route="1",sni="a.example",direction="client_to_origin"\} (\d+)/.exec(m)?.[1]);
    expect(bytes).toBeGreaterThan(700);
    expect(m).toMatch(/edgeproxy_sni_parse_errors_total\{service="edge",reason="malformed"\} 0/);

    // A reload with a.example moved to origin B: new connections follow it.
    writeFileSync(
      file,
      `[admin]\nsocket = "${admin}"\n[[service]]\nname = "edge"\norigin = "127.0.0.1:${d.listener.port}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8443"]\n` +
        route(["a.example", "*.b.example"], b.listener.port),
    );
    expect((await runEdgeproxy(["reload", "--admin", admin])).code).toBe(0);
    expect(await curl("a.example")).toEqual({ subject: "*.b.example", body: "origin b" });
  }, 60_000);

  test("half a ClientHello is cut at handshake_timeout; too long and truncated ones are reset at once; no origin is dialled for any", async () => {
    const a = tlsOrigin("a");
    const d = tlsOrigin("default");
    const admin = join(certs.dir, "admin2.sock");
    const file = join(certs.dir, "stall.toml");
    writeFileSync(
      file,
      `[admin]\nsocket = "${admin}"\n[[service]]\nname = "edge"\norigin = "127.0.0.1:${d.listener.port}"\nhandshake_timeout = "2s"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8443"]\n` +
        route(["a.example"], a.listener.port) +
        // Nothing listens on port 1: a route's origin that refuses.
        route(["dead.example"], 1),
    );
    f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);

    const t0 = performance.now();
    const stalled = new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve("still open"), 8000);
      void Bun.connect({
        hostname: "192.0.2.10",
        port: 8443,
        socket: {
          open: (s) => void s.write(OPENSSL_A.subarray(0, 100)),
          data() {},
          close: (_s, err) => (clearTimeout(timer), resolve(err ? "reset" : "closed")),
          connectError: () => (clearTimeout(timer), resolve("refused")),
        },
      });
    });
    // Meanwhile: a hello that says it is 20000 bytes long, and one cut short by the client's FIN.
    const tooLong = await exchange("192.0.2.10", 8443, Buffer.from([22, 3, 1, 0, 4, 1, 0, 0x4e, 0x20]), 5000);
    expect(tooLong.kind).toBe("reset");
    const truncated = await exchange("192.0.2.10", 8443, OPENSSL_A.subarray(0, 200), 5000);
    expect(truncated.kind).toBe("reset");
    expect(await stalled).toBe("reset");
    const took = performance.now() - t0;
    expect(took).toBeGreaterThan(1500);
    expect(took).toBeLessThan(6000);
    expect([a.accepted(), d.accepted()]).toEqual([0, 0]);
    // A TCP check (connect, close, no byte) is closed quietly and costs no origin connection either.
    expect(await exchange("192.0.2.10", 8443, "", 5000)).toEqual({ kind: "data", bytes: new Uint8Array() });
    expect([a.accepted(), d.accepted()]).toEqual([0, 0]);
    // A real client afterwards.
    expect(await sClient("a.example")).toEqual({ subject: "a.example", body: "origin a" });
    // A route's refusing origin is ejected after three connect failures, as a service's own would be (eject defaults).
    for (let i = 0; i < 3; i++) expect(await sClient("dead.example")).toEqual({ subject: undefined, body: undefined });

    const m = await metrics(admin);
    expect(m).toContain('edgeproxy_deadline_expired_total{service="edge",stage="tls_handshake"} 1');
    expect(m).toContain('edgeproxy_sni_parse_errors_total{service="edge",reason="timeout"} 1');
    expect(m).toContain('edgeproxy_sni_parse_errors_total{service="edge",reason="too_long"} 1');
    expect(m).toContain('edgeproxy_sni_parse_errors_total{service="edge",reason="truncated"} 1');
    expect(m).toContain('edgeproxy_origin_ejections_total{service="edge",origin="127.0.0.1:1",address="127.0.0.1"} 1');
    expect(m).toContain('edgeproxy_origin_errors_total{service="edge",class="refused"} 3');
    expect(m).toContain('edgeproxy_sni_route_connections_total{service="edge",route="2",sni="dead.example"} 3');
    // Not a handshake of ours that failed.
    expect(m).toContain('edgeproxy_tls_handshake_errors_total{service="edge",reason="timeout"} 0');
    expect(await f.ep.stop()).toBe(0);
    expect(f.ep.stderr).toContain("sni routes: 1 1, 2 3, default 0, ClientHellos refused: too_long 1, truncated 1, timeout 1");
  }, 30_000);

  test("not TLS goes to the default origins; PROXY v2 to the origin, then the ClientHello as sent; access log sni and route; no origins of its own: reset", async () => {
    const a = headerOrigin();
    const d = headerOrigin();
    f.servers.push(a.listener, d.listener);
    const admin = join(certs.dir, "admin3.sock");
    const log = join(certs.dir, "access.log");
    const file = join(certs.dir, "plain.toml");
    writeFileSync(
      file,
      `access_log = "${log}"\n[admin]\nsocket = "${admin}"\n` +
        `[[service]]\nname = "mixed"\norigin = "127.0.0.1:${d.listener.port}"\nproxy_protocol = "v2"\naccept_proxy = ["192.0.2.200/32"]\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8443"]\n` +
        route(["a.example"], a.listener.port) +
        `[[service]]\nname = "strict"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["9443"]\n` +
        route(["a.example"], a.listener.port),
    );
    f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);

    const plain = JSON.parse(text(await exchange("192.0.2.10", 8443, "hello, not tls"))) as Seen;
    expect(plain).toMatchObject({ version: 2, header: { destination: "192.0.2.10", destinationPort: 8443 }, payload: "hello, not tls" });
    // The ClientHello reaches the route's origin byte for byte, after the PROXY header.
    const hello = JSON.parse(text(await exchange("192.0.2.11", 8443, OPENSSL_A))) as Seen;
    expect(hello).toMatchObject({ version: 2, header: { destination: "192.0.2.11" } });
    expect(Buffer.from(hello.payload, "latin1").equals(Buffer.from(OPENSSL_A))).toBe(true);
    // From a trusted load balancer: its PROXY header first (the client it names goes on to the origin), then the ClientHello.
    const proxiedOut = await exchange("192.0.2.10", 8443, Buffer.concat([Buffer.from("PROXY TCP4 203.0.113.9 192.0.2.13 4444 8443\r\n"), OPENSSL_A]), 5000, "192.0.2.200");
    const proxied = JSON.parse(text(proxiedOut)) as Seen;
    expect(proxied).toMatchObject({ version: 2, header: { source: "203.0.113.9", sourcePort: 4444, destination: "192.0.2.13" } });
    expect(Buffer.from(proxied.payload, "latin1").equals(Buffer.from(OPENSSL_A))).toBe(true);
    expect([a.accepted(), d.accepted()]).toEqual([2, 1]);
    // The busiest clients count the header's client, with the relay's bytes both ways (the ClientHello in, the origin's answer out).
    const view = (await (await fetch("http://localhost/dashboard.json", { unix: admin } as RequestInit)).json()) as { clients: { top: { address: string; connections: number; bytes: number }[] } };
    expect(view.clients.top.find((r) => r.address === "203.0.113.9")).toMatchObject({ connections: 1, bytes: OPENSSL_A.length + (proxiedOut.kind === "data" ? proxiedOut.bytes.length : NaN) });

    // A service with routes only: an unmatched connection is reset, counted; a matched one goes through.
    expect((await exchange("192.0.2.12", 9443, "not tls", 5000)).kind).toBe("reset");
    expect(JSON.parse(text(await exchange("192.0.2.12", 9443, OPENSSL_A))).payload.length).toBe(OPENSSL_A.length);

    const m = await metrics(admin);
    expect(m).toContain('edgeproxy_sni_unmatched_total{service="mixed",reason="not_tls"} 1');
    expect(m).toContain('edgeproxy_sni_no_route_total{service="strict"} 1');
    expect(m).toContain('edgeproxy_sni_unmatched_total{service="strict",reason="not_tls"} 1');
    expect(await f.ep.stop()).toBe(0);
    f.ep = undefined;
    const lines = readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.find((l) => l.service === "mixed" && l.edge === "192.0.2.11:8443")).toMatchObject({ sni: "a.example", route: "1" });
    expect(lines.find((l) => l.edge === "192.0.2.10:8443")).toMatchObject({ sni: null, route: "default" });
    expect(lines.find((l) => l.edge === "192.0.2.13:8443")).toMatchObject({ client: "203.0.113.9:4444", sni: "a.example", route: "1" });
    expect(lines.find((l) => l.service === "strict" && l.reason === "no_route")).toMatchObject({ sni: null, route: null });
  }, 30_000);

  test("sni routes with tls_cert: refused at start in one line", async () => {
    const file = join(certs.dir, "bad.toml");
    writeFileSync(
      file,
      `[[service]]\nname = "edge"\norigin = "127.0.0.1:1"\ntls_cert = "${pem.a!.certFile}"\ntls_key = "${pem.a!.keyFile}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8443"]\n` + route(["a.example"], 2),
    );
    const r = await runEdgeproxy(["serve", "--config", file]);
    expect(r.code).toBe(2);
    expectOneLine(r.stderr, /route: sni routes pass TLS through to their origins; they cannot be combined with tls_cert\/tls_key/);
  }, 30_000);
});
