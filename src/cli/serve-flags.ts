import { DEADLINE_KEYS } from "../config/deadlines";
import { DEFAULTS } from "../config/service";
import { MIN_KERNEL_TEXT } from "../system/environment";
import { flagLines, type FlagSpec } from "./flags";

// The help of the deadline flags, by flag (their names come from DEADLINE_KEYS, as the TOML keys do).
const DEADLINE_HELP: Readonly<Record<string, string>> = {
  "--proxy-header-timeout": "--accept-proxy: the PROXY header must be complete within D (default 5s)",
  "--handshake-timeout": "TLS: the handshake must be complete within D of accept (after a PROXY header: of its end) (default 10s)",
  "--header-timeout": "http: a request head must be complete within D of its first byte (a new connection's first request: of accept) (default 30s)",
  "--keepalive-timeout": "http: close a connection when no next request starts within D (default 60s)",
  "--body-timeout": "http: cut a request body after D without a byte of it (default 60s)",
};

/**
 * Every flag of `edgeproxy [serve]`, in the order --help lists them: the
 * parser (src/cli/args.ts through src/cli/flags.ts: `--flag VALUE` or
 * `--flag=VALUE`), --help, the man page and the shell completions
 * (src/cli/help.ts) all read this table.
 */
export const SERVE_FLAGS: readonly FlagSpec[] = [
  { name: "--config", value: "FILE", complete: "file", help: "many services from a TOML file (the flags below are the one-service shortcut); SIGHUP or 'edgeproxy reload' re-reads it" },
  { name: "--instance", value: "NAME", help: "this serve's name among the namespace's instances (default: the config file's base name, else default); control commands take --instance NAME" },
  { name: "--admin", value: "PATH", complete: "file", help: `serve the admin API (status, bindings, /metrics) on this unix socket (default: ${DEFAULTS.runDir}/<instance>.sock, mode 0600; $EDGEPROXY_RUN_DIR moves it)` },
  { name: "--no-admin", help: "no admin API (control commands cannot reach this serve)" },
  { name: "--pid-file", value: "PATH", complete: "file", help: "write the serving pid here at ready (an upgrade's successor rewrites it; removed at exit), for service managers" },
  { name: "--ports", value: "LIST", help: `ports and ranges, e.g. 22,80,8000-8999 (repeatable; default ${DEFAULTS.ports})` },
  { name: "--prefix", value: "LIST", help: `IPv4/IPv6 prefixes, e.g. 192.0.2.0/24,2001:db8::/64 (repeatable; default ${DEFAULTS.prefix})` },
  {
    name: "--origin",
    value: "HOST[:PORT]",
    help:
      "forward to HOST; without PORT, to the port the client dialled. Without --origin: a built-in responder (HTTP page naming the original destination, echo for anything else). " +
      "Repeat --origin for a pool, 'HOST:PORT weight=N' weighs one; HOST:LO-HI maps the edge range by offset",
  },
  { name: "--balance", value: "B", choices: ["round-robin", "least-connections", "hash"], help: "round-robin (default), least-connections or hash (client address)" },
  { name: "--health-interval", value: "D", help: "check origins actively every D (TCP connect; http: GET --health-path)" },
  { name: "--health-timeout", value: "D", help: "a check's timeout (default 2s, at most the interval)" },
  { name: "--health-path", value: "PATH", help: "http: the path checked (default /; 2xx and 3xx pass)" },
  { name: "--health-port", value: "N", help: "the port checked on origins without a fixed port (default: the first of the origin's range, or of the service's ports if port-preserving)" },
  {
    name: "--mode",
    value: "MODE",
    choices: ["tcp", "udp", "http"],
    help: "service mode: tcp (default), udp or http. udp keeps every (client, original destination) pair as a flow with its own origin socket; http proxies HTTP/1.1 requests with X-Forwarded-* and Forwarded headers",
  },
  {
    name: "--proxy-protocol",
    value: "P",
    choices: ["off", "v1", "v2", "spp"],
    help: "tell the origin the client's address: tcp v1 or v2 (PROXY header at the start of each origin connection); udp v2 (on a flow's first datagram) or spp (Cloudflare's Simple Proxy Protocol); default off",
  },
  { name: "--accept-proxy", value: "LIST", help: "tcp/http: connections from these prefixes (your load balancers) must start with a PROXY v1/v2 header naming the real client" },
  { name: "--tls-cert", value: "FILE", complete: "file", help: "tcp/http: terminate TLS with this PEM certificate chain (and --tls-key FILE). Repeat the pair for more certificates, chosen by the client's SNI; the first is for clients without SNI or naming none. Changed files are reloaded" },
  { name: "--tls-key", value: "FILE", complete: "file", help: "the PEM private key of the --tls-cert in the same position" },
  { name: "--tls-min-version", value: "V", choices: ["1.2", "1.3"], help: "the oldest TLS version accepted: 1.2 (default) or 1.3" },
  { name: "--tls-ciphers", value: "LIST", help: "TLS 1.2 cipher suites, OpenSSL syntax, in the server's order of preference (default: ECDHE with AES-GCM or ChaCha20-Poly1305 only)" },
  { name: "--origin-tls", value: "MODE", choices: ["off", "verify", "insecure"], help: "tcp/http: TLS to the origins: verify (certificate chain and name checked, Spectrum's Full (strict)), insecure (encrypted, any certificate: Full) or off (default)" },
  { name: "--origin-ca", value: "FILE", complete: "file", help: "--origin-tls verify: trust these PEM CA certificates (default: the built-in Mozilla store)" },
  { name: "--origin-sni", value: "NAME", help: "--origin-tls: the name sent as SNI and verified (default: the origin's host name; none for an IP address, which the certificate must then name)" },
  { name: "--origin-cert", value: "FILE", complete: "file", help: "--origin-tls: present this PEM client certificate (and --origin-key FILE) to origins that ask for one" },
  { name: "--origin-key", value: "FILE", complete: "file", help: "the PEM private key of --origin-cert" },
  { name: "--first-byte-timeout", value: "D", help: "http: the origin's response must start within D (default 60s)" },
  { name: "--max-body-size", value: "SIZE", help: "http: larger request bodies get 413 (default 1GiB; 100MiB, 512KiB ...)" },
  { name: "--no-http2", help: "http with TLS: offer only http/1.1 by ALPN (default: h2, then http/1.1)" },
  { name: "--request-id-in-response", help: "http: also return each request's X-Request-Id (the access log's request_id) to the client (default: to the origin only)" },
  { name: "--http2-max-concurrent-streams", value: "N", help: "http: HTTP/2 streams open at once per connection, 1-1000 (default 100)" },
  ...DEADLINE_KEYS.map((k) => ({ name: k.flag, value: "D", help: DEADLINE_HELP[k.flag] ?? `the ${k.key} deadline` })),
  { name: "--name", value: "NAME", help: "service name (default: default)" },
  { name: "--take-over", help: "also steer ports where another socket already listens, and replace a running instance whose service names or bindings overlap (it drains and exits); with --config too, over the file's take_over" },
  { name: "--workers", value: "N", help: "worker processes sharing each service's sockets, 1-256 (default: one per CPU; a supervisor restarts any that dies)" },
  { name: "--drain-timeout", value: "D", help: "on upgrade (or SIGQUIT), how long open connections may finish (default 30s)" },
  { name: "--bpffs", value: "PATH", complete: "dir", help: "bpffs mount for pinned state (default $EDGEPROXY_BPFFS or /sys/fs/bpf)" },
  { name: "--engine", value: "E", help: 'data plane: "auto" (default: epoll where it serves the service, else bun; $EDGEPROXY_ENGINE sets the default), "epoll" (raw sockets on an epoll loop; tcp and plain-HTTP/1.1 services with origins, no TLS yet) or "bun" (Bun\'s sockets: TLS, HTTP/2, sni routes)' },
  { name: "--connect-timeout", value: "D", help: "origin connect timeout (default 5s)" },
  { name: "--idle-timeout", value: "D", help: "close connections idle this long (default 300s; udp flows 30s)" },
  { name: "--max-connections", value: "N", help: "refuse new connections beyond N open ones, all workers together (default: what the open-file limit allows each worker)" },
  { name: "--max-flows", value: "N", help: "at most N UDP flows at once; when full, flows the client sent only one datagram on are evicted first (default: open-file limit)" },
  { name: "--source-connections", value: "N", help: "at most N open connections (udp: flows) per client, all workers together; a client at its limit is refused in the kernel" },
  { name: "--source-rate", value: "N", help: "at most N new connections per second per client (tcp/http), refused in the kernel at socket lookup" },
  { name: "--source-rate-burst", value: "M", help: "--source-rate: M connections back to back (default: N)" },
  { name: "--source-prefix-v6", value: "L", help: `IPv6 clients of the two limits above are grouped by /L (default ${DEFAULTS.sourcePrefixV6})` },
  { name: "--access-log", value: "PATH", complete: "file", help: 'one JSON line per connection, flow or request to PATH ("-": stdout; default off); SIGUSR1 reopens it (logrotate)' },
  { name: "--access-log-sample", value: "R", help: "the share of lines written, 0 to 1 (default 1)" },
  { name: "--help", short: "-h", help: "this text" },
  { name: "--version", short: "-V", help: "version" },
];

export const SERVE_SUMMARY = `Answer on whole port ranges and IP prefixes with one socket per address family,
steered by a BPF sk_lookup program, and proxy every connection to an origin.`;

export const SERVE_NOTES = `Durations (D) are like 500ms, 5s, 2m, 1h, from 1ms to 7 days; counts (N) are whole numbers.

Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root) and Linux ${MIN_KERNEL_TEXT} or later with libbpf.so.1.
Exit codes: 0 ok, 1 runtime failure, 2 usage, config or environment error.`;

export const USAGE = `Usage: edgeproxy [serve] [options]

${SERVE_SUMMARY}

       edgeproxy [serve] --config edgeproxy.toml

Options:
${flagLines(SERVE_FLAGS).join("\n")}

Every --flag VALUE may also be written --flag=VALUE.
${SERVE_NOTES}`;
