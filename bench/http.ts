// Scenario 2: HTTP/1.1 reverse proxying, L7 proxies side by side: edgeproxy
// --mode http, nginx (proxy_pass to an upstream with keepalive) and HAProxy
// mode http, each adding X-Forwarded-For / -Proto / -Host and keeping
// origin connections alive. Run through bench/wrk-scenario.ts: same origin,
// wrk, core pinning and CPU accounting as the TCP scenario.
import { join } from "node:path";
import { nginxCommand, nginxMain, ORIGIN, type Endpoint, type Peer } from "./peers";
import type { Scenario } from "./scenario";
import { oneWorker, withArgs } from "./tcp";
import { features } from "./netns";
import { wrkScenario } from "./wrk-scenario";

/** TLS for nginxHttpConfig: certificate and key; `protocols` sets ssl_protocols, `http2` adds ALPN h2, `noResumption` turns the session cache and tickets off. */
export interface NginxTls {
  cert: string;
  key: string;
  protocols?: string;
  http2?: boolean;
  noResumption?: boolean;
}

/**
 * nginx as an HTTP reverse proxy to ORIGIN on `at`, every timeout at nginx's
 * default; with `tls`, `listen … ssl` with that certificate and key.
 */
export function nginxHttpConfig(dir: string, name: string, at: Endpoint, tls?: NginxTls): string {
  // `listen … http2` is nginx 1.22's form (`http2 on` came in 1.25.1). ssl_session_cache off tells clients
  // sessions cannot be reused; ssl_session_tickets off issues no tickets (ngx_http_ssl_module docs).
  const ssl = !tls
    ? ""
    : `    ssl_certificate ${tls.cert};\n    ssl_certificate_key ${tls.key};\n` +
      (tls.protocols ? `    ssl_protocols ${tls.protocols};\n` : "") +
      (tls.noResumption ? "    ssl_session_cache off;\n    ssl_session_tickets off;\n" : "");
  // keepalive 64: idle origin connections per worker, like edgeproxy's pool;
  // proxy_http_version 1.1 and an empty Connection are what upstream keep-alive needs.
  return `${nginxMain(dir, name)}http {
  access_log off;
  client_body_temp_path ${dir}/${name}-body;
  proxy_temp_path ${dir}/${name}-proxy;
  fastcgi_temp_path ${dir}/${name}-fastcgi;
  uwsgi_temp_path ${dir}/${name}-uwsgi;
  scgi_temp_path ${dir}/${name}-scgi;
  keepalive_requests 100000000;
  upstream origin {
    server ${ORIGIN.host}:${ORIGIN.port};
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen ${at.host}:${at.port}${tls ? " ssl" : ""}${tls?.http2 ? " http2" : ""} backlog=4096;
${ssl}    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\"";
    }
  }
}
`;
}

export function httpPeers(dir: string, edgeproxy: string): Peer[] {
  const nginx = (at: Endpoint) => ({ file: "http-proxy.conf", text: nginxHttpConfig(dir, "http-proxy", at) });
  const haproxy = (at: { host: string; port: number }) => ({
    file: "haproxy-http.cfg",
    // http-reuse always: idle origin connections are shared between clients, as edgeproxy's are.
    text: `global
  nbthread 1
  maxconn 8000
defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
listen bench
  bind ${at.host}:${at.port}
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header Forwarded "for=%[src];proto=http;host=\\"%[req.hdr(host)]\\""
  server origin ${ORIGIN.host}:${ORIGIN.port}
`,
  });
  return [
    { name: "direct (no proxy)", proxied: false, command: () => [] },
    {
      name: "edgeproxy http",
      proxied: true,
      // Every port of the /24, as in the TCP scenario.
      command: () => [edgeproxy, "--mode", "http", "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", `${ORIGIN.host}:${ORIGIN.port}`],
    },
    { name: "haproxy (mode http)", proxied: true, command: () => ["haproxy", "-db", "-f", join(dir, "haproxy-http.cfg")], config: haproxy },
    { name: "nginx http proxy", proxied: true, command: () => nginxCommand(dir, "http-proxy.conf"), config: nginx },
  ];
}

/** Scenario 2: HTTP/1.1 keep-alive and one connection per request through each L7 proxy. */
export const httpScenario: Scenario = (ctx) =>
  wrkScenario(ctx, {
    kind: "HTTP",
    plot: "http",
    title: "HTTP proxy (L7): CPU per request",
    // edgeproxy twice where http runs on the engine: its default and the other data plane. A binary whose http
    // default is the engine (its help says so) runs `--engine bun` beside it; an older one `--engine epoll`.
    peers: httpPeers(ctx.dir, ctx.edgeproxy).flatMap((p) => {
      if (!p.name.startsWith("edgeproxy")) return [p];
      const one = withArgs(p, oneWorker(ctx.edgeproxy));
      const f = features(ctx.edgeproxy, false);
      if (!f.httpEngine) return [one];
      return [one, f.httpEngineDefault ? withArgs(one, ["--engine", "bun"], " (bun)") : withArgs(one, ["--engine", "epoll"], " (epoll)")];
    }),
    method:
      "Each proxy parses the request, adds X-Forwarded-For/-Proto/-Host and Forwarded, and keeps origin connections alive (nginx `keepalive 64`, HAProxy `http-reuse always`, edgeproxy's pool). " +
      "One worker each: edgeproxy `--mode http --workers 1`, HAProxy `nbthread 1`, nginx `worker_processes 1`." +
      (!features(ctx.edgeproxy, false).httpEngine
        ? ""
        : features(ctx.edgeproxy, false).httpEngineDefault
          ? " edgeproxy runs twice: by default (plain HTTP/1.1 on raw sockets on the data plane's epoll loop, src/engine/http.ts) and `--engine bun` (the same HTTP code on Bun's sockets, what TLS and HTTP/2 services run on)."
          : " edgeproxy runs twice: on Bun's sockets (this binary's default) and `--engine epoll` (the same HTTP code on raw sockets on the data plane's epoll loop, src/engine/http.ts)."),
  });
