// Helpers of the origin_tls tests: a CA and certificates openssl makes for a
// test file (a second CA stands for "not trusted"), TLS origins (Bun TLS
// listeners), a listener that never answers a handshake, and curl.
import { afterAll, beforeAll } from "bun:test";
import type { TCPSocketListener } from "bun";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeCert } from "./certs";

let dir = "";
/** A file of this test file's certificate directory: ca.pem, otherca.pem, origin.pem/.key (origin.test, origin.tls.test, IP 127.0.0.1), client.pem/.key. */
export const pem = (name: string) => join(dir, name);

function sh(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stderr: "pipe", cwd: dir });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
}

/** Make the certificates before the file's tests, remove them after. */
export function originCertificates(): void {
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "ep-origintls-"));
  // A CA is a self-signed certificate (openssl req -x509 marks it CA:TRUE); its leaves are signed by it, below.
  const ca = (name: string) => writeCert({ cert: pem(`${name}.pem`), key: pem(`${name}.key`) }, { cn: name });
  const leaf = (name: string, signer: string, san: string) => {
    sh(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.csr`]);
    writeFileSync(pem(`${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n`);
    sh(["openssl", "x509", "-req", "-in", `${name}.csr`, "-CA", `${signer}.pem`, "-CAkey", `${signer}.key`, "-CAcreateserial", "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`]);
  };
  ca("ca");
  ca("otherca");
  // The origin's certificate names origin.test and the address 127.0.0.1 (not 127.0.0.2).
  leaf("origin", "ca", "DNS:origin.test,DNS:origin.tls.test,IP:127.0.0.1");
  leaf("client", "ca", "DNS:edge.client");
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));
}

/** A TLS origin that greets each connection with the SNI it got ("-": none) and the peer certificate's CN, then closes. */
export function tlsGreeter(host: string, port = 0): TCPSocketListener<undefined> {
  return Bun.listen({
    hostname: host,
    port,
    tls: { cert: readFileSync(pem("origin.pem"), "utf8"), key: readFileSync(pem("origin.key"), "utf8") },
    socket: {
      handshake(s) {
        s.end(`hello sni=${s.getServername() || "-"}`);
      },
      data() {},
    },
  });
}

/**
 * A keep-alive HTTP/1.1 origin over TLS (`plain`: the same without TLS):
 * every request gets 200 with the SNI and the number of the connection it came on.
 */
export function tlsHttpOrigin(host: string, plain = false) {
  let conns = 0;
  const listener = Bun.listen<{ id: number; buf: string }>({
    hostname: host,
    port: 0,
    ...(plain ? {} : { tls: { cert: readFileSync(pem("origin.pem"), "utf8"), key: readFileSync(pem("origin.key"), "utf8") } }),
    socket: {
      open(s) {
        s.data = { id: ++conns, buf: "" };
      },
      data(s, d) {
        s.data.buf += d.toString("latin1");
        let end: number;
        while ((end = s.data.buf.indexOf("\r\n\r\n")) >= 0) {
          s.data.buf = s.data.buf.slice(end + 4);
          const body = `conn=${s.data.id} sni=${s.getServername() || "-"}`;
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nContent-Type: text/plain\r\n\r\n${body}`);
        }
      },
    },
  });
  return { listener, connections: () => conns };
}

/** A listener that accepts and never answers the handshake; counts connections open now. */
export function silent(host: string): TCPSocketListener<undefined> & { open: number } {
  const counts = { open: 0 };
  const l = Bun.listen({ hostname: host, port: 0, socket: { open: () => void counts.open++, close: () => void counts.open--, data() {} } });
  // (Object.assign would copy the getter's value once: define it.)
  return Object.defineProperty(l, "open", { get: () => counts.open }) as TCPSocketListener<undefined> & { open: number };
}

// curl, not our parser, reads the reply.
export async function curl(url: string, ...extra: string[]): Promise<{ status: string; body: string }> {
  const p = Bun.spawn(["curl", "-s", "--max-time", "8", "-w", "\n%{http_code}", ...extra, url], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const nl = out.lastIndexOf("\n");
  return { status: out.slice(nl + 1), body: out.slice(0, nl) };
}
