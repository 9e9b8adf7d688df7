// The TLS-terminating peers of the `tls-handshake` and `h2` scenarios:
// edgeproxy --mode http with --tls-cert/--tls-key, nginx (http, `listen … ssl`)
// and HAProxy (mode http, `bind … ssl crt`), each one worker on the proxy core,
// forwarding to the HTTP/1.1 origin of the http scenario with origin
// connections kept alive. One throwaway ECDSA P-256 certificate for all.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { nginxHttpConfig } from "./http";
import { nginxCommand, ORIGIN, type Endpoint, type Peer } from "./peers";
import { must } from "./sys";
import { oneWorker } from "./tcp";

export interface Tls {
  cert: string;
  key: string;
  /** Certificate and key in one file, as HAProxy's `crt` wants them. */
  pem: string;
}

/** A throwaway self-signed P-256 certificate (the one test/tls.test.ts makes), files `<prefix>-…` in `dir`. */
export function makeCert(dir: string, prefix: string): Tls {
  const t: Tls = { cert: join(dir, `${prefix}-cert.pem`), key: join(dir, `${prefix}-key.pem`), pem: join(dir, `${prefix}-haproxy.pem`) };
  must(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=bench.test", "-keyout", t.key, "-out", t.cert]);
  writeFileSync(t.pem, readFileSync(t.cert, "utf8") + readFileSync(t.key, "utf8"));
  return t;
}

/** What a TLS peer is set up for. */
export interface TlsUse {
  /** Offer ALPN h2 (nginx `listen … http2`, HAProxy `alpn h2,http/1.1`). */
  h2: boolean;
  /** Refuse session resumption (no cache, no tickets) where the proxy has a setting for it. */
  noResumption: boolean;
}

/**
 * nginx 1.22 (Debian 12) offers TLS 1.0-1.2 unless told, so it would negotiate
 * TLS 1.2 where the others negotiate 1.3; 1.23.4+ defaults to this.
 */
const NGINX_PROTOCOLS = "TLSv1.2 TLSv1.3";

/** The port the TLS peers listen on (at the per-run address of bench/peers.ts's front()). */
export const TLS_PORT = 8443;

function haproxyConfig(at: Endpoint, tls: Tls, use: TlsUse): string {
  // tune.ssl.cachesize 0 disables the session cache and no-tls-tickets the tickets (HAProxy manual, 3.2 and 5.1);
  // alpn h2,http/1.1 is the manual's example for HTTP/2 over TLS; http-reuse always shares idle origin connections.
  return `global
  nbthread 1
  maxconn 8000
${use.noResumption ? "  tune.ssl.cachesize 0\n" : ""}defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
listen bench
  bind ${at.host}:${at.port} ssl crt ${tls.pem}${use.h2 ? " alpn h2,http/1.1" : ""}${use.noResumption ? " no-tls-tickets" : ""}
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header Forwarded "for=%[src];proto=https;host=\\"%[req.hdr(host)]\\""
  server origin ${ORIGIN.host}:${ORIGIN.port}
`;
}

/** edgeproxy, HAProxy and nginx terminating TLS with `tls` in front of ORIGIN. */
export function tlsPeers(dir: string, edgeproxy: string, tls: Tls, use: TlsUse, tag: string): Peer[] {
  const nginxFile = `${tag}-nginx.conf`;
  const haproxyFile = `${tag}-haproxy.cfg`;
  return [
    {
      name: "edgeproxy http+tls",
      proxied: true,
      // As in the http scenario: every port of the /24. ALPN h2 is whatever this build offers (nothing before HTTP/2 support).
      command: () => [edgeproxy, "--mode", "http", ...oneWorker(edgeproxy), "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", `${ORIGIN.host}:${ORIGIN.port}`, "--tls-cert", tls.cert, "--tls-key", tls.key],
    },
    { name: "haproxy (mode http, ssl)", proxied: true, command: () => ["haproxy", "-db", "-f", join(dir, haproxyFile)], config: (at) => ({ file: haproxyFile, text: haproxyConfig(at, tls, use) }) },
    {
      name: "nginx http ssl",
      proxied: true,
      command: () => nginxCommand(dir, nginxFile),
      config: (at) => ({ file: nginxFile, text: nginxHttpConfig(dir, `${tag}-nginx`, at, { cert: tls.cert, key: tls.key, protocols: NGINX_PROTOCOLS, http2: use.h2, noResumption: use.noResumption }) }),
    },
  ];
}
