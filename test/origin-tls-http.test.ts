// TLS to origins of http services (origin_tls): keep-alive reuse over TLS,
// 502/504 on refused and slow handshakes, per-route settings, a client
// certificate (openssl s_server -www -Verify 1). See origin-tls.test.ts.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange } from "./helpers/net";
import { curl, originCertificates, pem, silent, tlsHttpOrigin } from "./helpers/origintls";
import { scrape, workdir } from "./helpers/pools";

const f = proxyFixture();
originCertificates();

describe("origin_tls, http services", () => {
  test("verify with the right CA: curl gets the origin's answers, on one kept-alive TLS connection", async () => {
    const o = tlsHttpOrigin("127.0.0.1");
    f.servers.push(o.listener);
    const admin = pem("admin-http.sock");
    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem"), "--origin-sni", "origin.test", "--admin", admin]);
    const bodies: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await curl("http://192.0.2.1:8080/x");
      expect(r.status).toBe("200");
      bodies.push(r.body);
    }
    // Five requests from five client connections, one origin TLS connection.
    expect(bodies).toEqual(Array(5).fill("conn=1 sni=origin.test"));
    expect(o.connections()).toBe(1);
    const m = await scrape(admin);
    expect(m("edgeproxy_http_origin_connections_total", { service: "default", how: "opened" })).toBe(1);
    expect(m("edgeproxy_http_origin_connections_total", { service: "default", how: "reused" })).toBe(4);
  }, 30_000);

  test("a client certificate for an origin that requires one (openssl s_server -www -Verify 1); without it, 502 naming the alert", async () => {
    const port = 19445;
    const server = Bun.spawn(["openssl", "s_server", "-accept", `127.0.0.1:${port}`, "-cert", pem("origin.pem"), "-key", pem("origin.key"), "-CAfile", pem("ca.pem"), "-Verify", "1", "-verify_return_error", "-www", "-quiet"], { stdout: "pipe", stderr: "pipe" });
    try {
      for (let i = 0; i < 50; i++) {
        if ((await exchange("127.0.0.1", port, "", 500)).kind !== "refused") break;
        await Bun.sleep(100);
      }
      const base = ["--mode", "http", "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${port}`, "--origin-tls", "verify", "--origin-ca", pem("ca.pem")];
      f.ep = await EdgeproxyProcess.start([...base, "--origin-cert", pem("client.pem"), "--origin-key", pem("client.key")]);
      const ok = await curl("http://192.0.2.1:8080/");
      expect(ok.status).toBe("200");
      // s_server -www describes the session: our client certificate's subject is in it.
      expect(ok.body).toContain("edge.client");
      expect(await f.ep.stop()).toBe(0);
      f.ep = await EdgeproxyProcess.start(base);
      const refused = await curl("http://192.0.2.1:8080/");
      expect(refused.status).toBe("502");
      expect(refused.body).toContain("TLS handshake failed (protocol: TLSV1_ALERT_CERTIFICATE_REQUIRED)");
    } finally {
      server.kill("SIGKILL");
      await server.exited;
    }
  }, 30_000);

  test("a wrong CA is 502, counted; a handshake timeout is 504", async () => {
    const o = tlsHttpOrigin("127.0.0.1");
    const quiet = silent("127.0.0.1");
    f.servers.push(o.listener, quiet);
    const admin = pem("admin-http2.sock");
    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--origin-tls", "verify", "--origin-ca", pem("otherca.pem"), "--admin", admin]);
    const r = await curl("http://192.0.2.1:8080/");
    expect(r.status).toBe("502");
    expect(r.body).toContain("TLS handshake failed (verify: UNABLE_TO_VERIFY_LEAF_SIGNATURE)");
    let m = await scrape(admin);
    expect(m("edgeproxy_origin_tls_handshake_errors_total", { service: "default", reason: "verify" })).toBe(1);
    expect(m("edgeproxy_origin_errors_total", { service: "default", class: "tls" })).toBe(1);
    expect(await f.ep.stop()).toBe(0);

    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${quiet.port}`, "--origin-tls", "insecure", "--connect-timeout", "1s", "--admin", admin]);
    const t = await curl("http://192.0.2.1:8080/");
    expect(t.status).toBe("504");
    expect(t.body).toContain("origin TLS handshake timeout");
    m = await scrape(admin);
    expect(m("edgeproxy_origin_tls_handshake_errors_total", { service: "default", reason: "timeout" })).toBe(1);
  }, 30_000);

  test("per route: a route's origin_* keys over its service's (one route plain, one TLS to the same address)", async () => {
    const w = workdir();
    try {
      const o = tlsHttpOrigin("127.0.0.1");
      f.servers.push(o.listener);
      writeFileSync(
        w.file,
        `[admin]\nsocket = "${w.admin}"\n\n[[service]]\nname = "p"\nmode = "http"\norigin_tls = "verify"\norigin_ca = "${pem("ca.pem")}"\norigin_sni = "origin.test"\n` +
          `[[service.route]]\npath = "/strict"\norigin = "127.0.0.1:${o.listener.port}"\n` +
          `[[service.route]]\npath = "/wrongname"\norigin = "127.0.0.1:${o.listener.port}"\norigin_sni = "other.test"\n` +
          `[[service.route]]\npath = "/full"\norigin = "127.0.0.1:${o.listener.port}"\norigin_sni = "other.test"\norigin_tls = "insecure"\n` +
          `[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "8080"\n`,
      );
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(await curl("http://192.0.2.1:8080/strict")).toEqual({ status: "200", body: "conn=1 sni=origin.test" });
      expect((await curl("http://192.0.2.1:8080/wrongname")).status).toBe("502");
      const full = await curl("http://192.0.2.1:8080/full");
      expect(full.status).toBe("200");
      // Not the strict route's kept-alive connection: its own, with its own SNI.
      expect(full.body).toMatch(/^conn=\d+ sni=other\.test$/);
      expect((await scrape(w.admin))("edgeproxy_origin_tls_handshake_errors_total", { reason: "name" })).toBe(1);
    } finally {
      w.done();
    }
  }, 30_000);
});

describe("origin_tls, http health checks", () => {
  test("the GET goes over TLS, verified: up with the right CA, down with a wrong one", async () => {
    const w = workdir();
    try {
      const o = tlsHttpOrigin("127.0.0.1");
      f.servers.push(o.listener);
      const config = (ca: string) =>
        writeFileSync(
          w.file,
          `[admin]\nsocket = "${w.admin}"\n\n[[service]]\nname = "p"\nmode = "http"\norigin = "127.0.0.1:${o.listener.port}"\norigin_tls = "verify"\norigin_ca = "${pem(ca)}"\norigin_sni = "origin.test"\n` +
            `health = { interval = "200ms", timeout = "150ms", fall = 2, rise = 2, path = "/healthz" }\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "8080"\n`,
        );
      const labels = { origin: `127.0.0.1:${o.listener.port}`, address: "127.0.0.1" };
      config("ca.pem");
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      await Bun.sleep(1000);
      expect((await scrape(w.admin))("edgeproxy_origin_up", labels)).toBe(1);
      expect(f.ep.stderr).not.toContain("check failed");
      // The checks reached the origin as HTTP over TLS: its connections grew with them (no client traffic was sent).
      expect(o.connections()).toBeGreaterThanOrEqual(2);
      expect(await f.ep.stop()).toBe(0);
      config("otherca.pem");
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      let up: number | undefined = 1;
      for (let i = 0; i < 40 && up !== 0; i++) {
        await Bun.sleep(100);
        up = (await scrape(w.admin))("edgeproxy_origin_up", labels);
      }
      expect(up).toBe(0);
      expect(f.ep.stderr).toContain("check failed (TLS handshake failed (verify: UNABLE_TO_VERIFY_LEAF_SIGNATURE))");
    } finally {
      w.done();
    }
  }, 30_000);
});

describe("origin_tls, http cost", () => {
  // A measurement, printed; asserted: no errors, and the kept-alive origin connections stay few under load.
  test("wrk, 8 connections for 3 s: plain origin vs TLS origin (verify), keep-alive to the origin", async () => {
    const run = async (plain: boolean) => {
      const o = tlsHttpOrigin("127.0.0.1", plain);
      f.servers.push(o.listener);
      const admin = pem(`admin-wrk-${plain}.sock`);
      const tls = plain ? [] : ["--origin-tls", "verify", "--origin-ca", pem("ca.pem"), "--origin-sni", "origin.test"];
      f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8080", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, ...tls, "--admin", admin]);
      const p = Bun.spawn(["wrk", "-t1", "-c8", "-d3s", "http://192.0.2.1:8080/"], { stdout: "pipe", stderr: "pipe" });
      const kill = setTimeout(() => p.kill("SIGKILL"), 20_000);
      const out = await new Response(p.stdout).text();
      await p.exited;
      clearTimeout(kill);
      const m = await scrape(admin);
      const opened = m("edgeproxy_http_origin_connections_total", { service: "default", how: "opened" })!;
      const reused = m("edgeproxy_http_origin_connections_total", { service: "default", how: "reused" })!;
      expect(await f.ep.stop()).toBe(0);
      f.ep = undefined;
      expect(out).not.toContain("Non-2xx");
      expect(out).not.toContain("Socket errors");
      return { perSecond: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0), opened, reused, originConns: o.connections() };
    };
    const a = await run(true);
    const b = await run(false);
    console.log(`origin_tls http cost (wrk -c8, 3 s): plain origin ${Math.round(a.perSecond)} req/s (${a.opened} origin connections opened, ${a.reused} reused), TLS origin ${Math.round(b.perSecond)} req/s (${b.opened} opened, ${b.reused} reused)`);
    expect(b.perSecond).toBeGreaterThan(0);
    // Eight clients at a time need about eight origin connections, whatever the number of requests.
    expect(b.opened).toBeLessThanOrEqual(16);
    expect(b.reused).toBeGreaterThan(100 * b.opened);
    expect(b.originConns).toBe(b.opened);
  }, 60_000);
});
