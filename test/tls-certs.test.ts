// Several certificates per service chosen by SNI, hot reload of changed
// files, the TLS policy, and a PROXY v2 header before TLS on one connection
// (HAProxy send-proxy-v2). Real clients: openssl s_client, curl, HAProxy.
import { beforeAll, describe, expect, test } from "bun:test";
import { renameSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { join } from "node:path";
import { certFiles } from "./helpers/certs";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { expectOneLine } from "./helpers/oneline";
import { headerOrigin, type Seen } from "./helpers/proxyheaders";

const f = proxyFixture();
// Certificates `name`.crt/.key: CN, SAN DNS names (none: "cnonly"), ec (P-256) or rsa.
const certs = certFiles({ prefix: "ep-tlscerts-", pair: false });
const files = (name: string) => ({ cert: join(certs.dir, `${name}.crt`), key: join(certs.dir, `${name}.key`) });

beforeAll(() => {
  certs.make("first", { cn: "first.example", names: ["first.example"] });
  certs.make("a-rsa", { cn: "a.example", names: ["a.example"], type: "rsa" });
  certs.make("a-ec", { cn: "a.example", names: ["a.example"] });
  certs.make("wild", { cn: "wild", names: ["*.w.example"] });
  certs.make("cnonly", { cn: "cn.example" });
});

interface Hello {
  ok: boolean;
  subject: string | undefined;
  bits: number | undefined;
  protocol: string | undefined;
  cipher: string | undefined;
  out: string;
}

/** One handshake with openssl s_client (its stdin ends at once: it closes after the handshake). */
async function sClient(port: number, args: string[], host = "192.0.2.10", from?: string): Promise<Hello> {
  const p = Bun.spawn(["openssl", "s_client", "-connect", `${host}:${port}`, ...(from ? ["-bind", `${from}:0`] : []), ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const kill = setTimeout(() => p.kill("SIGKILL"), 10_000);
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(kill);
  const all = out + err;
  const cipher = /New, (TLSv[\d.]+|\(NONE\)), Cipher is (\S+)/.exec(all);
  return {
    ok: !!cipher && cipher[2] !== "(NONE)",
    subject: /subject=\s*CN\s*=\s*(\S+)/.exec(all)?.[1],
    bits: Number(/Server public key is (\d+) bit/.exec(all)?.[1]) || undefined,
    protocol: cipher?.[1],
    cipher: cipher?.[2],
    out: all,
  };
}

async function metrics(admin: string): Promise<string> {
  return (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
}

async function until(what: string, ok: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await ok())) {
    if (performance.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await Bun.sleep(200);
  }
}

describe("certificates by SNI", () => {
  test("exact names, a wildcard of one label, RSA and ECDSA for one name; no SNI or an unknown name get the first; counted by match", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    const file = join(certs.dir, "sni.toml");
    const admin = join(certs.dir, "sni.sock");
    const cert = (n: string) => `[[service.certificate]]\ncert = "${files(n).cert}"\nkey = "${files(n).key}"\n`;
    writeFileSync(
      file,
      `[admin]\nsocket = "${admin}"\n[[service]]\nname = "tls"\norigin = "127.0.0.1:${o.listener.port}"\n` +
        `tls_cert = "${files("first").cert}"\ntls_key = "${files("first").key}"\n` +
        `[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8443"]\n` +
        cert("a-rsa") + cert("a-ec") + cert("wild") + cert("cnonly"),
    );
    f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);
    // RSA and ECDSA for a.example: the client's algorithms choose (TLS 1.2 by suite, TLS 1.3 by signature algorithm).
    const rsa = await sClient(8443, ["-servername", "a.example", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]);
    expect([rsa.ok, rsa.subject, rsa.bits]).toEqual([true, "a.example", 2048]);
    const ec = await sClient(8443, ["-servername", "a.example", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    expect([ec.ok, ec.subject, ec.bits]).toEqual([true, "a.example", 256]);
    const rsa13 = await sClient(8443, ["-servername", "A.Example", "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"]);
    expect([rsa13.subject, rsa13.bits, rsa13.protocol]).toEqual(["a.example", 2048, "TLSv1.3"]);
    // *.w.example: exactly one label (RFC 6125 §6.4.3).
    expect((await sClient(8443, ["-servername", "x.w.example"])).subject).toBe("wild");
    expect((await sClient(8443, ["-servername", "y.x.w.example"])).subject).toBe("first.example");
    expect((await sClient(8443, ["-servername", "w.example"])).subject).toBe("first.example");
    // A certificate without SAN is chosen by its CN.
    expect((await sClient(8443, ["-servername", "cn.example"])).subject).toBe("cn.example");
    expect((await sClient(8443, ["-servername", "first.example"])).subject).toBe("first.example");
    expect((await sClient(8443, ["-servername", "nobody.example"])).subject).toBe("first.example");
    expect((await sClient(8443, ["-noservername"])).subject).toBe("first.example");
    const m = await metrics(admin);
    expect(m).toContain('edgeproxy_tls_handshakes_total{service="tls",sni="exact"} 5');
    expect(m).toContain('edgeproxy_tls_handshakes_total{service="tls",sni="wildcard"} 1');
    expect(m).toContain('edgeproxy_tls_handshakes_total{service="tls",sni="default"} 3');
    expect(m).toContain('edgeproxy_tls_handshakes_total{service="tls",sni="none"} 1');
    expect(m).toMatch(/edgeproxy_tls_certificate_expiry_seconds\{service="tls",name="a\.example",file=".*a-rsa\.crt"\} \d{10}/);
  }, 60_000);

  test("a changed file is served to new handshakes without a restart; a broken one keeps the previous certificate and says so in one line", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    const live = certs.make("live", { cn: "old.example", names: ["old.example"] });
    const admin = join(certs.dir, "live.sock");
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", live.cert, "--tls-key", live.key, "--admin", admin]);
    expect((await sClient(8443, ["-noservername"])).subject).toBe("old.example");
    // As certbot and cert-manager do: new files renamed into place.
    const next = certs.make("next", { cn: "new.example", names: ["new.example"], type: "rsa" });
    renameSync(next.key, live.key);
    renameSync(next.cert, live.cert);
    await until("the new certificate is served", async () => (await sClient(8443, ["-noservername"])).subject === "new.example");
    expect(await metrics(admin)).toContain('edgeproxy_tls_certificate_reloads_total{service="default",result="ok"} 1');
    // A broken certificate file: the previous pair stays, one line names the file and why.
    writeFileSync(live.cert, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
    await until("the failure is counted", async () => (await metrics(admin)).includes('edgeproxy_tls_certificate_reloads_total{service="default",result="failed"} 1'));
    const after = await sClient(8443, ["-servername", "new.example"]);
    expect([after.ok, after.subject, after.bits]).toEqual([true, "new.example", 2048]);
    await Bun.sleep(4500); // two more polls: still one line
    const lines = f.ep.stderr.split("\n").filter((l) => l.includes("not reloaded"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(live.cert);
    expect(lines[0]).toMatch(/^edgeproxy: service default: certificate not reloaded, still serving the previous one: .*not a valid certificate/);
  }, 60_000);
});

test("reload: rewritten files are served at once to new handshakes, on the same sockets; a reload with a bad file changes nothing", async () => {
  const o = headerOrigin();
  f.servers.push(o.listener);
  const live = certs.make("r", { cn: "before.example", names: ["before.example"] });
  const file = join(certs.dir, "reload.toml");
  const admin = join(certs.dir, "reload.sock");
  writeFileSync(file, `[admin]\nsocket = "${admin}"\n[[service]]\nname = "r"\norigin = "127.0.0.1:${o.listener.port}"\ntls_cert = "${live.cert}"\ntls_key = "${live.key}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8443"]\n`);
  f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);
  expect((await sClient(8443, [])).subject).toBe("before.example");
  const sockets = async () => JSON.stringify(((await (await fetch("http://localhost/services", { unix: admin } as RequestInit)).json()) as { sockets: unknown }[]).map((s) => s.sockets));
  const before = await sockets();
  const next = certs.make("r2", { cn: "after.example", names: ["after.example"] });
  renameSync(next.key, live.key);
  renameSync(next.cert, live.cert);
  const r = await runEdgeproxy(["reload", "--admin", admin]);
  expect(r.code).toBe(0);
  // At once (no file poll needed), on the same listening sockets.
  expect((await sClient(8443, [])).subject).toBe("after.example");
  expect(await sockets()).toBe(before);
  // A reload that finds a broken file is refused as a whole, one line; the running certificate stays.
  writeFileSync(live.key, "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n");
  const bad = await runEdgeproxy(["reload", "--admin", admin]);
  expect(bad.code).not.toBe(0);
  expect(bad.stderr).toMatch(/tls_key: "[^"]*r\.key": not a valid private key/);
  expect((await sClient(8443, [])).subject).toBe("after.example");
}, 60_000);

describe("policy", () => {
  test("defaults: TLS 1.1 refused, static RSA and CBC suites refused, the server's order wins; tls_min_version 1.3 refuses 1.2", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443-8444", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", files("a-rsa").cert, "--tls-key", files("a-rsa").key]);
    expect((await sClient(8443, ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])).ok).toBe(false);
    expect((await sClient(8443, ["-tls1_2", "-cipher", "AES128-SHA"])).ok).toBe(false);
    expect((await sClient(8443, ["-tls1_2", "-cipher", "AES128-GCM-SHA256"])).ok).toBe(false);
    expect((await sClient(8443, ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"])).ok).toBe(false);
    // The client prefers ChaCha20; the server's order puts AES128-GCM first.
    const pref = await sClient(8443, ["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256"]);
    expect([pref.protocol, pref.cipher]).toEqual(["TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"]);
    expect((await sClient(8443, [])).protocol).toBe("TLSv1.3");
    expect(await f.ep.stop()).toBe(0);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", files("a-ec").cert, "--tls-key", files("a-ec").key, "--tls-min-version", "1.3"]);
    expect((await sClient(8443, ["-tls1_2"])).ok).toBe(false);
    expect((await sClient(8443, ["-tls1_3"])).ok).toBe(true);
  }, 60_000);

  test("bad settings are one line each, exit 2", async () => {
    const tls = ["--tls-cert", files("a-ec").cert, "--tls-key", files("a-ec").key];
    const cases: [string[], RegExp][] = [
      [[...tls, "--tls-min-version", "1.1"], /--tls-min-version: "1.1" is not one of 1.2, 1.3/],
      [[...tls, "--tls-ciphers", "ECDHE-RSA-AES128-GCM-SHA256:NOPE"], /--tls-ciphers: "NOPE" is not a cipher suite/],
      [["--tls-cert", files("a-ec").cert, "--tls-key", files("a-rsa").key], /--tls-key: ".*a-rsa\.key" is not the key of the certificate/],
      [[...tls, "--tls-cert", files("wild").cert], /--tls-key: is needed with each --tls-cert/],
      [["--tls-min-version", "1.2"], /--tls-min-version: applies to TLS-terminating services/],
    ];
    for (const [args, pattern] of cases) {
      const r = await runEdgeproxy(["--ports", "8443", "--prefix", "192.0.2.0/24", ...args]);
      expect(r.code).toBe(2);
      expectOneLine(r.stderr, pattern);
    }
  }, 30_000);
});

/** A node TLS client that writes its PROXY v2 header (if any) and its ClientHello in one segment, sends `payload`, half-closes and reads to the end. */
function proxiedTls(port: number, header: Buffer | undefined, payload: string, host = "192.0.2.10", from = "192.0.2.200"): Promise<string> {
  return new Promise((resolve, reject) => {
    const raw = netConnect({ host, port, localAddress: from }, () => {
      raw.cork();
      if (header) raw.write(header);
      const t = tlsConnect({ socket: raw, rejectUnauthorized: false, servername: "a.example" });
      process.nextTick(() => raw.uncork());
      const got: Buffer[] = [];
      t.on("secureConnect", () => t.end(payload));
      t.on("data", (d: Buffer) => got.push(d));
      t.on("end", () => resolve(Buffer.concat(got).toString()));
      t.on("error", reject);
    });
    raw.on("error", reject);
    setTimeout(() => reject(new Error("timeout")), 8000);
  });
}

/** PROXY v2 PROXY TCP4 `src`:`sport` → 192.0.2.10:8443. */
function v2Header(src: string, sport: number): Buffer {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 12]);
  const addrs = Buffer.alloc(12);
  src.split(".").forEach((b, i) => addrs.writeUInt8(Number(b), i));
  [192, 0, 2, 10].forEach((b, i) => addrs.writeUInt8(b, 4 + i));
  addrs.writeUInt16BE(sport, 8);
  addrs.writeUInt16BE(8443, 10);
  return Buffer.concat([sig, addrs]);
}

describe("PROXY header, then TLS", () => {
  test("a header and the ClientHello in one segment: the handshake completes, the origin is told the header's client", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", files("a-ec").cert, "--tls-key", files("a-ec").key, "--accept-proxy", "192.0.2.200/32", "--proxy-protocol", "v2"]);
    for (let i = 0; i < 5; i++) {
      const seen = JSON.parse(await proxiedTls(8443, v2Header("203.0.113.7", 5000 + i), `hello ${i}`)) as Seen;
      expect(seen.header).toMatchObject({ source: "203.0.113.7", sourcePort: 5000 + i, destination: "192.0.2.10", destinationPort: 8443 });
      expect(seen.payload).toBe(`hello ${i}`);
    }
    // A balancer's connection without a header is refused; a client that is not one does TLS at once.
    expect((await sClient(8443, ["-servername", "a.example"], "192.0.2.10", "192.0.2.200")).ok).toBe(false);
    expect((await sClient(8443, ["-servername", "a.example"], "192.0.2.10", "192.0.2.201")).ok).toBe(true);
  }, 30_000);

  async function haproxy(cfg: string): Promise<{ stop: () => Promise<void> }> {
    const file = join(certs.dir, `haproxy-${Math.random().toString(36).slice(2)}.cfg`);
    writeFileSync(file, cfg);
    const p = Bun.spawn(["haproxy", "-db", "-f", file], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    // Ready when its frontend accepts.
    await until("haproxy listens", async () => {
      const c = await Bun.connect({ hostname: "192.0.2.50", port: 9443, socket: { data() {} } }).catch(() => undefined);
      c?.end();
      return c !== undefined;
    });
    return {
      stop: async () => {
        p.kill("SIGTERM");
        await p.exited;
      },
    };
  }
  const haproxyConfig = (mode: string) =>
    `global\n  maxconn 100\ndefaults\n  mode ${mode}\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n` +
    `frontend fe\n  bind 192.0.2.50:9443\n  default_backend be\nbackend be\n  server edge 192.0.2.10:8443 send-proxy-v2 source 192.0.2.200\n`;

  test("HAProxy send-proxy-v2 in front of TLS ending at edgeproxy (tcp service): the origin is told the client's address", async () => {
    const o = headerOrigin();
    f.servers.push(o.listener);
    f.ep = await EdgeproxyProcess.start(["--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", files("a-ec").cert, "--tls-key", files("a-ec").key, "--accept-proxy", "192.0.2.200/32", "--proxy-protocol", "v1"]);
    const h = await haproxy(haproxyConfig("tcp"));
    try {
      // Through HAProxy: a TLS client (node's) from 192.0.2.77.
      const seen = JSON.parse(await proxiedTls(9443, undefined, "through haproxy", "192.0.2.50", "192.0.2.77")) as Seen;
      expect(seen.version).toBe(1);
      // HAProxy names the client and its own frontend address.
      expect(seen.header).toMatchObject({ source: "192.0.2.77", destination: "192.0.2.50", destinationPort: 9443 });
      expect(seen.payload).toBe("through haproxy");
    } finally {
      await h.stop();
    }
  }, 30_000);

  test("HAProxy send-proxy-v2 in front of TLS ending at edgeproxy (http service): curl gets the origin's answer over HTTP/2, X-Forwarded-For is curl's address", async () => {
    const o = httpOrigin("127.0.0.1", "origin");
    f.servers.push(o.listener);
    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", files("a-ec").cert, "--tls-key", files("a-ec").key, "--accept-proxy", "192.0.2.200/32"]);
    const h = await haproxy(haproxyConfig("tcp"));
    try {
      for (let i = 0; i < 3; i++) {
        const p = Bun.spawn(["curl", "-sk", "--max-time", "8", "--interface", "192.0.2.77", "--resolve", "a.example:9443:192.0.2.50", "https://a.example:9443/x", "-w", " %{http_version}"], { stdout: "pipe", stderr: "pipe" });
        const out = await new Response(p.stdout).text();
        expect(await p.exited).toBe(0);
        // curl offers h2 by ALPN, and edgeproxy takes it: HTTP/2 over TLS behind the balancer's PROXY header.
        expect(out).toBe("origin 2");
      }
      expect(o.seen).toHaveLength(3);
      for (const r of o.seen) expect(r.headers.get("x-forwarded-for")).toEqual(["192.0.2.77"]);
    } finally {
      await h.stop();
    }
  }, 30_000);
});
