// The default TLS policy as a third party grades it: Debian's testssl.sh
// (3.0.x) against an http service with an ECDSA and an RSA certificate.
// It checks the findings: protocols offered (-p), cipher categories
// and static RSA (-s), the server's cipher order (-P) and vulnerabilities
// including LUCKY13 and the CBC ones (-U). -S (server defaults) is left out:
// its chain-of-trust lines are "NOT ok" for any self-signed test certificate.
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { certFiles } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";

const f = proxyFixture();
const certs = certFiles({ prefix: "ep-testssl-", pair: false });
const makeCert = (name: string, type: "ec" | "rsa") => certs.make(name, { cn: "edge.test", names: ["edge.test"], type });

const TESTSSL = "/usr/bin/testssl";
// testssl runs hundreds of openssl handshakes; on two shared cores that takes 1-3 minutes.
const BUDGET_MS = 240_000;

test.skipIf(!existsSync(TESTSSL))(
  "testssl.sh on the defaults: no NOT ok, no VULNERABLE; server order, no CBC, no static RSA, TLS 1.2 and 1.3 only",
  async () => {
    const o = httpOrigin("127.0.0.1", "origin");
    f.servers.push(o.listener);
    const ec = makeCert("ec", "ec");
    const rsa = makeCert("rsa", "rsa");
    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${o.listener.port}`, "--tls-cert", ec.cert, "--tls-key", ec.key, "--tls-cert", rsa.cert, "--tls-key", rsa.key]);
    const p = Bun.spawn(
      [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--openssl", "/usr/bin/openssl", "--sneaky", "--connect-timeout", "5", "--openssl-timeout", "5", "--ip", "192.0.2.10", "-p", "-s", "-P", "-U", "https://edge.test:8443/"],
      { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, TERM: "dumb" } },
    );
    const kill = setTimeout(() => p.kill("SIGKILL"), BUDGET_MS - 10_000);
    const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(kill);
    const report = out + err;
    if (/NOT ok|VULNERABLE/.test(report) || !/\n Done \d{4}-/.test(report)) console.error(report);
    expect(report).toMatch(/\n Done \d{4}-/);
    expect(report).not.toContain("NOT ok");
    expect(report).not.toMatch(/VULNERABLE/);
    // The findings, line by line.
    expect(report).toMatch(/Has server cipher order\?\s+yes \(OK\)/);
    expect(report).toMatch(/LUCKY13 \(CVE-2013-0169\), experimental\s+not vulnerable/);
    expect(report).toMatch(/TLS 1\.1\s+not offered/);
    expect(report).toMatch(/TLS 1\.3\s+offered/);
    expect(report).toMatch(/Obsolete CBC ciphers \(AES, ARIA etc\.\)\s+not offered/);
    expect(report).toMatch(/Strong encryption \(AEAD ciphers\)\s+offered \(OK\)/);
    // No static RSA key exchange (no forward secrecy): nothing for ROBOT to test.
    expect(report).toMatch(/ROBOT\s+Server does not support any cipher suites that use RSA key transport/);
    // The server's TLS 1.2 order: ECDHE with AEAD only.
    const order = /TLSv1\.2:\s+([^\n]+)/.exec(report)?.[1]?.trim().split(/\s+/) ?? [];
    expect(order.length).toBeGreaterThan(1);
    for (const c of order) expect(c).toMatch(/^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
  },
  BUDGET_MS,
);
