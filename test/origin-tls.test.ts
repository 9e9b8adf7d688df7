// TLS to origins (origin_tls: Spectrum's Full (strict) = verify, Full =
// insecure), end to end through the real kernel path, each test in a
// namespace of its own. The origins are Bun TLS listeners and openssl
// s_server with certificates signed by a CA openssl makes for this file; a
// second CA stands for "not trusted".
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange, text } from "./helpers/net";
import { originCertificates, pem, silent, tlsGreeter } from "./helpers/origintls";
import { dnsServer, scrape, workdir, writeConfig } from "./helpers/pools";

const f = proxyFixture();
originCertificates();

const tcpAsk = async (port: number, payload = "") => exchange("192.0.2.1", port, payload, 6000);

describe("origin_tls, tcp services", () => {
  test("verify with the right origin_ca: relayed; no SNI to an IP origin, origin_sni sent when set", async () => {
    const o = tlsGreeter("127.0.0.1");
    f.servers.push(o);
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem")]);
    // RFC 6066 §3: no IP literal in SNI; the certificate is checked against the address (IP SAN 127.0.0.1).
    expect(text(await tcpAsk(7000))).toBe("hello sni=-");
    expect(await f.ep.stop()).toBe(0);
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem"), "--origin-sni", "origin.test"]);
    expect(text(await tcpAsk(7000))).toBe("hello sni=origin.test");
  }, 30_000);

  test("an origin given by name: its name is the SNI and what is verified", async () => {
    const w = workdir();
    const resolv = join(w.dir, "resolv.conf");
    let mounted = false;
    const dns = await dnsServer("origin.tls.test", { answer: ["127.0.0.1"], ttl: 30 });
    try {
      // Only this test's mount namespace (bun test runs under unshare --mount) sees it.
      writeFileSync(resolv, "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n");
      const m = Bun.spawnSync(["mount", "--bind", resolv, "/etc/resolv.conf"], { stderr: "pipe" });
      expect(m.stderr.toString()).toBe("");
      mounted = true;
      const o = tlsGreeter("127.0.0.1");
      f.servers.push(o);
      writeConfig(w, { origins: [`origin.tls.test:${o.port}`], ports: "7000", extra: `origin_tls = "verify"\norigin_ca = "${pem("ca.pem")}"` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(text(await tcpAsk(7000))).toBe("hello sni=origin.tls.test");
    } finally {
      dns.socket.close();
      if (mounted) Bun.spawnSync(["umount", "/etc/resolv.conf"]);
      w.done();
    }
  }, 30_000);

  test("a wrong CA is refused: the client is reset, counted by reason, and the access log says why; repeated, the origin is ejected", async () => {
    const w = workdir();
    try {
      const o = tlsGreeter("127.0.0.1");
      f.servers.push(o);
      const log = join(w.dir, "access.log");
      writeConfig(w, { origins: [`127.0.0.1:${o.port}`], ports: "7000", extra: `origin_tls = "verify"\norigin_ca = "${pem("otherca.pem")}"\naccess_log = "${log}"\neject = { failures = 3, base_duration = "10s" }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      for (let i = 0; i < 3; i++) {
        const r = await tcpAsk(7000, "x");
        expect(r.kind).toBe("reset");
        expect(text(r)).toBe("");
      }
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_tls_handshake_errors_total", { reason: "verify" })).toBe(3);
      expect(m("edgeproxy_origin_tls_handshake_errors_total", { reason: "name" })).toBe(0);
      expect(m("edgeproxy_origin_errors_total", { class: "tls" })).toBe(3);
      // Three failed handshakes in a row are three failed connects: passive ejection.
      expect(m("edgeproxy_origin_ejections_total", { origin: `127.0.0.1:${o.port}`, address: "127.0.0.1" })).toBe(1);
      expect(f.ep.stderr).toMatch(/ejected for 10000ms after 3 failed connects \(last: tls\)/);
      let lines: { reason?: string }[] = [];
      for (let i = 0; i < 50 && lines.length < 3; i++) {
        await Bun.sleep(100);
        lines = readFileSync(log, "utf8").trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
      }
      expect(lines.map((l) => l.reason)).toEqual(["origin_tls_verify", "origin_tls_verify", "origin_tls_verify"]);
    } finally {
      w.done();
    }
  }, 30_000);

  test("a wrong name: refused in verify (reason name), accepted in insecure; insecure also takes an untrusted CA", async () => {
    const o = tlsGreeter("127.0.0.1");
    f.servers.push(o);
    const admin = pem("admin-name.sock");
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem"), "--origin-sni", "wrong.test", "--admin", admin]);
    expect((await tcpAsk(7000)).kind).toBe("reset");
    const m = await scrape(admin);
    expect(m("edgeproxy_origin_tls_handshake_errors_total", { service: "default", reason: "name" })).toBe(1);
    expect(await f.ep.stop()).toBe(0);
    // Spectrum's Full: encrypted, but any certificate is accepted (no origin_ca: the built-in store would not trust ours either).
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--origin-tls", "insecure", "--origin-sni", "wrong.test"]);
    expect(text(await tcpAsk(7000))).toBe("hello sni=wrong.test");
  }, 30_000);

  test("the built-in store does not trust a private CA: verify without origin_ca refuses", async () => {
    const o = tlsGreeter("127.0.0.1");
    f.servers.push(o);
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--origin-tls", "verify"]);
    expect((await tcpAsk(7000)).kind).toBe("reset");
  }, 30_000);

  test("a client certificate for an origin that requires one (openssl s_server -Verify 1)", async () => {
    const port = 19443;
    const server = Bun.spawn(["openssl", "s_server", "-accept", `127.0.0.1:${port}`, "-cert", pem("origin.pem"), "-key", pem("origin.key"), "-CAfile", pem("ca.pem"), "-Verify", "1", "-verify_return_error", "-rev", "-quiet"], { stdout: "pipe", stderr: "pipe" });
    try {
      for (let i = 0; i < 50; i++) {
        const r = await exchange("127.0.0.1", port, "", 500);
        if (r.kind !== "refused") break;
        await Bun.sleep(100);
      }
      const base = ["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem")];
      f.ep = await EdgeproxyProcess.start([...base, "--origin-cert", pem("client.pem"), "--origin-key", pem("client.key")]);
      // s_server -rev answers each line reversed: only over a handshake it accepted.
      const ok = await tcpAsk(7000, "hello origin\n");
      expect(text(ok)).toContain("nigiro olleh");
      expect(await f.ep.stop()).toBe(0);
      const admin = pem("admin-mtls.sock");
      f.ep = await EdgeproxyProcess.start([...base, "--admin", admin]);
      // Without one: TLS 1.3 refuses after our side of the handshake (an alert, certificate_required),
      // and that is still a failed connect, counted as a TLS protocol failure.
      for (let i = 0; i < 3; i++) {
        const refused = await tcpAsk(7000, "hello origin\n");
        expect(refused.kind).toBe("reset");
        expect(text(refused)).toBe("");
      }
      const m = await scrape(admin);
      expect(m("edgeproxy_origin_tls_handshake_errors_total", { service: "default", reason: "protocol" })).toBe(3);
      expect(m("edgeproxy_origin_errors_total", { service: "default", class: "tls" })).toBe(3);
      // Our handshake finished each time, yet none counted as a working connect: three in a row eject.
      expect(m("edgeproxy_origin_ejections_total", { service: "default", origin: `127.0.0.1:${port}`, address: "127.0.0.1" })).toBe(1);
    } finally {
      server.kill("SIGKILL");
      await server.exited;
    }
  }, 30_000);

  test("proxy_protocol v2, then TLS on the same connection: HAProxy (accept-proxy ssl) sees the client and our SNI", async () => {
    const port = 19444;
    writeFileSync(pem("combined.pem"), readFileSync(pem("origin.pem"), "utf8") + readFileSync(pem("origin.key"), "utf8"));
    writeFileSync(
      pem("haproxy.cfg"),
      `defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n` +
        `frontend f\n  bind 127.0.0.1:${port} accept-proxy ssl crt ${pem("combined.pem")}\n` +
        `  http-request return status 200 content-type text/plain lf-string "src=%[src] sni=%[ssl_fc_sni]"\n`,
    );
    const haproxy = Bun.spawn(["haproxy", "-db", "-f", pem("haproxy.cfg")], { stdout: "pipe", stderr: "pipe" });
    try {
      for (let i = 0; i < 50; i++) {
        if ((await exchange("127.0.0.1", port, "", 500)).kind !== "refused") break;
        await Bun.sleep(100);
      }
      f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${port}`, "--proxy-protocol", "v2", "--origin-tls", "verify", "--origin-ca", pem("ca.pem"), "--origin-sni", "origin.test"]);
      const r = await exchange("192.0.2.1", 7000, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 6000, "192.0.2.77");
      expect(text(r)).toMatch(/^HTTP\/1\.1 200/);
      expect(text(r)).toContain("src=192.0.2.77 sni=origin.test");
    } finally {
      haproxy.kill("SIGKILL");
      await haproxy.exited;
    }
  }, 30_000);

  test("connect_timeout covers the handshake: an origin that never answers it is a TLS timeout", async () => {
    const o = silent("127.0.0.1");
    f.servers.push(o);
    const admin = pem("admin-timeout.sock");
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem"), "--connect-timeout", "1s", "--admin", admin]);
    const t0 = Date.now();
    const r = await tcpAsk(7000, "x");
    const took = Date.now() - t0;
    expect(r.kind).toBe("reset");
    expect(took).toBeGreaterThanOrEqual(900);
    expect(took).toBeLessThan(4000);
    const m = await scrape(admin);
    expect(m("edgeproxy_origin_tls_handshake_errors_total", { service: "default", reason: "timeout" })).toBe(1);
    expect(m("edgeproxy_origin_errors_total", { service: "default", class: "timeout" })).toBe(1);
    // The half-done origin connection is closed with the client's, not left to the origin.
    for (let i = 0; i < 6 && o.open > 0; i++) await Bun.sleep(50);
    expect(o.open).toBe(0);
  }, 30_000);

  test("active health checks do the handshake: an untrusted origin goes down, a trusted one stays up", async () => {
    const w = workdir();
    try {
      const good = tlsGreeter("127.0.0.1");
      f.servers.push(good);
      writeConfig(w, { origins: [`127.0.0.1:${good.port}`], ports: "7000", extra: `origin_tls = "verify"\norigin_ca = "${pem("otherca.pem")}"\nhealth = { interval = "200ms", timeout = "150ms", fall = 2, rise = 2 }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const labels = { origin: `127.0.0.1:${good.port}`, address: "127.0.0.1" };
      let up: number | undefined = 1;
      for (let i = 0; i < 40 && up !== 0; i++) {
        await Bun.sleep(100);
        up = (await scrape(w.admin))("edgeproxy_origin_up", labels);
      }
      expect(up).toBe(0);
      expect(f.ep.stderr).toMatch(/down: check failed \(TLS handshake failed \(verify: UNABLE_TO_VERIFY_LEAF_SIGNATURE\)\)/);
      expect(await f.ep.stop()).toBe(0);
      writeConfig(w, { origins: [`127.0.0.1:${good.port}`], ports: "7000", extra: `origin_tls = "verify"\norigin_ca = "${pem("ca.pem")}"\nhealth = { interval = "200ms", timeout = "150ms", fall = 2, rise = 2 }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      await Bun.sleep(1000);
      expect((await scrape(w.admin))("edgeproxy_origin_up", labels)).toBe(1);
      expect(f.ep.stderr).not.toContain("check failed");
    } finally {
      w.done();
    }
  }, 30_000);
});

describe("origin_tls, cost", () => {
  // A measurement, printed; what is asserted is only that every connection got through.
  test("tcp: 200 connections one after another, plain origin vs origin_tls verify (a full handshake each)", async () => {
    const plain = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void s.end("hello"), data() {} } });
    const o = tlsGreeter("127.0.0.1");
    f.servers.push(plain, o);
    const rate = async (port: number) => {
      const t0 = performance.now();
      let ok = 0;
      for (let i = 0; i < 200; i++) if (text(await tcpAsk(port)).startsWith("hello")) ok++;
      return { ok, perSecond: Math.round(200 / ((performance.now() - t0) / 1000)) };
    };
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${plain.port}`]);
    const a = await rate(7000);
    expect(await f.ep.stop()).toBe(0);
    f.ep = await EdgeproxyProcess.start(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem")]);
    const b = await rate(7000);
    console.log(`origin_tls cost: plain origin ${a.perSecond} connections/s, TLS origin (ECDSA P-256, verify) ${b.perSecond} connections/s, sequential, one client`);
    expect(a.ok).toBe(200);
    expect(b.ok).toBe(200);
  }, 60_000);
});

describe("origin_tls configuration errors: one line, exit 2", () => {
  test.each([
    [["--origin-tls", "strict"], /^edgeproxy: --origin-tls: "strict" is not one of off, verify, insecure$/],
    [["--origin-ca", "/nonexistent.pem"], /^edgeproxy: --origin-ca: needs origin_tls = "verify" or "insecure"$/],
    [["--origin-tls", "verify", "--origin-ca", "/nonexistent.pem"], /^edgeproxy: --origin-ca: cannot read "\/nonexistent.pem": ENOENT$/],
    [["--origin-tls", "verify", "--origin-sni", "127.0.0.1"], /^edgeproxy: --origin-sni: "127.0.0.1" is not a host name/],
    [["--origin-tls", "verify", "--origin-cert", "CLIENT"], /^edgeproxy: --origin-key: is needed with origin_cert$/],
    [["--origin-tls", "verify", "--origin-cert", "CLIENT", "--origin-key", "OTHERKEY"], /^edgeproxy: --origin-key: ".*otherca.key" does not go with ".*client.pem"/],
  ])("%p", async (flags, message) => {
    const args = flags.map((a) => (a === "CLIENT" ? pem("client.pem") : a === "OTHERKEY" ? pem("otherca.key") : a));
    const r = await runEdgeproxy(["--ports", "7000", "--prefix", "192.0.2.0/24", "--origin", "127.0.0.1:9", ...args]);
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(message);
  });
});
