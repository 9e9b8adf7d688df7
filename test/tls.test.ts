// TLS termination for tcp services, with a certificate openssl makes for
// each test; passthrough (no certificate configured) stays the default.
import { describe, expect, test } from "bun:test";
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { certFiles } from "./helpers/certs";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin, exchange, text } from "./helpers/net";
import { headerOrigin, type Seen } from "./helpers/proxyheaders";

const f = proxyFixture();
const certs = certFiles({ prefix: "ep-tls-", cn: "edge.test" });

type TlsOutcome = { kind: "data" | "reset" | "timeout"; bytes: Buffer; peerCert?: string; authorized?: boolean };

/** A TLS client (not verifying: the certificate is self-signed): send, half-close, read until the peer closes. */
function tlsExchange(host: string, port: number, payload: Uint8Array | string, timeoutMs = 8000): Promise<TlsOutcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    let peerCert: string | undefined;
    const settle = (kind: TlsOutcome["kind"]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ kind, bytes: Buffer.concat(chunks), peerCert });
    };
    let sock: { terminate(): void } | undefined;
    const timer = setTimeout(() => {
      sock?.terminate();
      settle("timeout");
    }, timeoutMs);
    const p = typeof payload === "string" ? Buffer.from(payload) : Buffer.from(payload);
    let off = 0;
    Bun.connect({
      hostname: host,
      port,
      tls: { rejectUnauthorized: false, serverName: "edge.test" },
      allowHalfOpen: true,
      socket: {
        open(s) {
          sock = s;
        },
        handshake(s) {
          const raw = (s as unknown as { getPeerX509Certificate?: () => X509Certificate | undefined }).getPeerX509Certificate?.();
          peerCert = raw?.fingerprint256;
          (s as any).pump = () => {
            while (off < p.length) {
              const n = s.write(p.subarray(off));
              if (n <= 0) return;
              off += n;
            }
            s.shutdown();
          };
          (s as any).pump();
        },
        drain(s) {
          (s as any).pump?.();
        },
        data(_s, d) {
          chunks.push(Buffer.from(d));
        },
        end(s) {
          s.end();
        },
        close(_s, err) {
          settle(err ? "reset" : "data");
        },
        connectError() {
          settle("reset");
        },
      },
    }).catch(() => settle("reset"));
  });
}

const fingerprint = () => new X509Certificate(readFileSync(certs.cert)).fingerprint256;

describe("TLS termination (--tls-cert, --tls-key)", () => {
  test("the handshake presents our certificate (IPv4 and IPv6); the origin gets plaintext", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    f.ep = await EdgeproxyProcess.start(["--ports", "8400-8500", "--prefix", "192.0.2.0/24,2001:db8::/64", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", certs.cert, "--tls-key", certs.key]);
    const a = await tlsExchange("192.0.2.10", 8443, "hello over tls");
    expect(a.kind).toBe("data");
    expect(a.peerCert).toBe(fingerprint());
    const seen = JSON.parse(a.bytes.toString()) as Seen;
    // Plaintext at the origin: the very bytes the client wrote inside TLS.
    expect(seen).toEqual({ version: undefined, payload: "hello over tls" } as Seen);
    const b = await tlsExchange("2001:db8::5", 8500, "v6");
    expect(JSON.parse(b.bytes.toString()).payload).toBe("v6");
  }, 30_000);

  test("bulk both ways through TLS with backpressure: 2 MiB echoed intact", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--tls-cert", certs.cert, "--tls-key", certs.key]);
    const payload = randomBytes(2 << 20);
    const r = await tlsExchange("192.0.2.10", 8443, payload, 20_000);
    expect(r.kind).toBe("data");
    expect(r.bytes.length).toBe(payload.length);
    expect(createHash("sha256").update(r.bytes).digest("hex")).toBe(createHash("sha256").update(payload).digest("hex"));
  }, 30_000);

  test("openssl s_client completes the handshake and sees CN=edge.test", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--tls-cert", certs.cert, "--tls-key", certs.key, "--idle-timeout", "1s"]);
    // The child joins this thread's namespace, as edgeproxy does. -ign_eof keeps it reading after
    // its stdin ends; edgeproxy's 1 s idle timeout then closes the connection, and s_client exits.
    const p = Bun.spawn(["openssl", "s_client", "-connect", "192.0.2.33:8443", "-servername", "edge.test", "-ign_eof"], {
      stdin: new Blob(["ping from s_client\n"]),
      stdout: "pipe",
      stderr: "pipe",
    });
    const kill = setTimeout(() => p.kill("SIGKILL"), 10_000);
    const [out, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(kill);
    expect(out).toContain("ping from s_client");
    expect(out).toMatch(/subject=\s*CN\s*=\s*edge\.test/);
    // s_client prints the certificate the server presented: ours, byte for byte.
    expect(out).toContain(readFileSync(certs.cert, "utf8").trim());
    void stderr;
  }, 30_000);

  test("the origin is dialled only after the handshake: a plaintext client and a silent one cost no origin connection; the silent one is reset after the timeout", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    const admin = join(certs.dir, "admin.sock");
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", certs.cert, "--tls-key", certs.key, "--handshake-timeout", "3s", "--admin", admin]);
    const plain = await exchange("192.0.2.10", 8443, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5000);
    expect(plain.kind === "data" || plain.kind === "reset").toBe(true);
    // A TLS alert at most (content type 21), never bytes from the origin.
    if (plain.kind !== "timeout" && plain.kind !== "refused" && plain.bytes.length) expect(plain.bytes[0]).toBe(21);
    const t0 = performance.now();
    const silent = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve("still open"), 8000);
      void Bun.connect({
        hostname: "192.0.2.10",
        port: 8443,
        socket: {
          data() {},
          close: (_s, err) => (clearTimeout(timer), resolve(err ? "reset" : "closed")),
          connectError: () => (clearTimeout(timer), resolve("refused")),
        },
      });
    });
    expect(silent).toBe("reset");
    expect(performance.now() - t0).toBeGreaterThan(2500);
    expect(o.accepted()).toBe(0);
    // A real client afterwards: one origin connection.
    expect((await tlsExchange("192.0.2.10", 8443, "x")).kind).toBe("data");
    expect(o.accepted()).toBe(1);
    // Both failures counted: the plaintext one as failed, the silent one as timeout.
    const metrics = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
    expect(metrics).toContain('edgeproxy_tls_handshake_errors_total{service="default",reason="failed"} 1');
    expect(metrics).toContain('edgeproxy_tls_handshake_errors_total{service="default",reason="timeout"} 1');
    expect(await f.ep.stop()).toBe(0);
    expect(f.ep.stderr).toContain("TLS handshake errors: failed 1, timeout 1");
  }, 20_000);

  test("PROXY v2 to the origin with TLS terminated: the header, then the plaintext", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", certs.cert, "--tls-key", certs.key, "--proxy-protocol", "v2"]);
    const r = await tlsExchange("192.0.2.10", 8443, "inside");
    const seen = JSON.parse(r.bytes.toString()) as Seen;
    expect(seen.header).toMatchObject({ destination: "192.0.2.10", destinationPort: 8443, transport: "stream" });
    expect(seen.payload).toBe("inside");
  }, 20_000);
});

describe("passthrough (the default)", () => {
  test("without a certificate the TLS bytes reach the origin untouched: a TLS origin completes the client's handshake", async () => {
    // The origin terminates TLS itself with the same certificate; edgeproxy only relays.
    const origin = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: readFileSync(certs.cert, "utf8"), key: readFileSync(certs.key, "utf8") },
      allowHalfOpen: true,
      socket: {
        data(s, d) {
          s.write(Buffer.concat([Buffer.from("origin-tls:"), Buffer.from(d)]));
        },
        end(s) {
          s.end();
        },
      },
    });
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
    const r = await tlsExchange("192.0.2.10", 8443, "through");
    expect(r.kind).toBe("data");
    expect(r.peerCert).toBe(fingerprint());
    expect(r.bytes.toString()).toBe("origin-tls:through");
    // And plain bytes still pass as they are.
    const raw = headerOrigin();
    f.servers.push(raw.listener);
    expect(await f.ep.stop()).toBe(0);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${raw.listener.port}`]);
    expect(JSON.parse(text(await exchange("192.0.2.10", 8443, "\x16\x03\x01 not really tls"))).payload).toBe("\x16\x03\x01 not really tls");
  }, 30_000);
});

describe("from a config file", () => {
  test("tls_cert/tls_key, proxy_protocol and accept_proxy in edgeproxy.toml; reload switches v1 to v2 for new connections", async () => {
    const o = headerOrigin();
    const echo = echoOrigin("127.0.0.1");
    f.servers.push(o.listener, echo);
    const file = join(certs.dir, "edgeproxy.toml");
    const admin = join(certs.dir, "file-admin.sock");
    const config = (pp: string) =>
      `[admin]\nsocket = "${admin}"\n` +
      `[[service]]\nname = "edge"\norigin = "127.0.0.1:${o.listener.port}"\nproxy_protocol = "${pp}"\naccept_proxy = ["192.0.2.200/32"]\n` +
      `[[service.bind]]\nprefixes = ["192.0.2.0/25"]\nports = ["7000"]\n` +
      `[[service]]\nname = "secure"\norigin = "127.0.0.1:${echo.port}"\ntls_cert = "${certs.cert}"\ntls_key = "${certs.key}"\n` +
      `[[service.bind]]\nprefixes = ["192.0.2.0/25"]\nports = ["8443"]\n`;
    writeFileSync(file, config("v1"));
    f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);
    const viaLb = (host: string) => exchange(host, 7000, "PROXY TCP4 203.0.113.9 192.0.2.10 4444 7000\r\nbody", 5000, "192.0.2.200");
    const first = JSON.parse(text(await viaLb("192.0.2.10"))) as Seen;
    expect(first).toEqual({ version: 1, header: { source: "203.0.113.9", sourcePort: 4444, destination: "192.0.2.10", destinationPort: 7000 }, payload: "body" } as Seen);
    const secure = await tlsExchange("192.0.2.11", 8443, "secret");
    expect([secure.kind, secure.bytes.toString(), secure.peerCert]).toEqual(["data", "secret", fingerprint()]);

    writeFileSync(file, config("v2"));
    const r = await runEdgeproxy(["reload", "--admin", admin]);
    expect(r.code).toBe(0);
    const second = JSON.parse(text(await viaLb("192.0.2.12"))) as Seen;
    expect(second.version).toBe(2);
    expect(second.header).toMatchObject({ source: "203.0.113.9", destinationPort: 7000, transport: "stream" });
    expect((await tlsExchange("192.0.2.11", 8443, "still")).bytes.toString()).toBe("still");
  }, 30_000);
});
