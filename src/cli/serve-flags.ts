import { DEADLINE_KEYS } from "../config/deadlines";
import { DEFAULTS } from "../config/service";
import type { FlagSpec } from "./flags";

export const USAGE = `Usage: edgeproxy [serve] [options]

Answer on whole port ranges and IP prefixes with one socket per address family,
steered by a BPF sk_lookup program, and proxy every connection to an origin.

       edgeproxy [serve] --config edgeproxy.toml

Options:
  --config FILE         many services from a TOML file (the flags below are the one-service shortcut);
                        SIGHUP or 'edgeproxy reload' re-reads it
  --instance NAME       this serve's name among the namespace's instances (default: the config
                        file's base name, else default); control commands take --instance NAME
  --admin PATH          serve the admin API (status, bindings, /metrics) on this unix socket
                        (default: ${DEFAULTS.runDir}/<instance>.sock, mode 0600; $EDGEPROXY_RUN_DIR moves it)
  --no-admin            no admin API (control commands cannot reach this serve)
  --pid-file PATH       write the serving pid here at ready (an upgrade's successor rewrites it;
                        removed at exit), for service managers
  --ports LIST          ports and ranges, e.g. 22,80,8000-8999 (repeatable; default ${DEFAULTS.ports})
  --prefix LIST         IPv4/IPv6 prefixes, e.g. 192.0.2.0/24,2001:db8::/64 (repeatable; default ${DEFAULTS.prefix})
  --origin HOST[:PORT]  forward to HOST; without PORT, to the port the client dialled.
                        Without --origin: a built-in responder (HTTP page naming the
                        original destination, echo for anything else)
  --origin 'HOST:PORT weight=N'
                        repeat --origin for a pool; HOST:LO-HI maps the edge range by offset
  --balance B           round-robin (default), least-connections or hash (client address)
  --health-interval D   check origins actively every D (TCP connect; http: GET --health-path)
  --health-timeout D    a check's timeout (default 2s, at most the interval)
  --health-path PATH    http: the path checked (default /; 2xx and 3xx pass)
  --health-port N       the port checked on origins without a fixed port (default: the first
                        of the origin's range, or of the service's ports if port-preserving)
  --mode tcp|udp|http   service mode (default tcp). udp keeps every (client, original
                        destination) pair as a flow with its own origin socket; http proxies
                        HTTP/1.1 requests with X-Forwarded-* and Forwarded headers
  --proxy-protocol P    tell the origin the client's address: tcp v1 or v2 (PROXY header at the
                        start of each origin connection); udp v2 (on a flow's first datagram)
                        or spp (Cloudflare's Simple Proxy Protocol); default off
  --accept-proxy LIST   tcp/http: connections from these prefixes (your load balancers) must
                        start with a PROXY v1/v2 header naming the real client
  --tls-cert FILE       tcp/http: terminate TLS with this PEM certificate (and --tls-key FILE)
  --first-byte-timeout D  http: the origin's response must start within D (default 60s)
  --max-body-size SIZE  http: larger request bodies get 413 (default 1GiB; 100MiB, 512KiB ...)
  --proxy-header-timeout D  --accept-proxy: the PROXY header must be complete within D (default 5s)
  --handshake-timeout D TLS: the handshake must be complete within D of accept (default 10s)
  --header-timeout D    http: a request head must be complete within D of its first byte
                        (a new connection's first request: of accept) (default 30s)
  --keepalive-timeout D http: close a connection when no next request starts within D (default 60s)
  --body-timeout D      http: cut a request body after D without a byte of it (default 60s)
  --name NAME           service name (default: default)
  --take-over           also steer ports where another socket already listens
  --workers N           worker processes sharing each service's sockets, 1-256 (default: one per
                        CPU; a supervisor restarts any that dies)
  --drain-timeout D     on upgrade (or SIGQUIT), how long open connections may finish (default 30s)
  --bpffs PATH          bpffs mount for pinned state (default $EDGEPROXY_BPFFS or /sys/fs/bpf)
  --connect-timeout D   origin connect timeout (default 5s)
  --idle-timeout D      close connections idle this long (default 300s; udp flows 30s)
  --max-connections N   refuse new connections beyond N open ones, all workers together
                        (default: what the open-file limit allows each worker)
  --max-flows N         at most N UDP flows at once; when full, flows the client sent
                        only one datagram on are evicted first (default: open-file limit)
  --source-connections N  at most N open connections (udp: flows) per client, all workers
                        together; a client at its limit is refused in the kernel
  --source-rate N       at most N new connections per second per client (tcp/http), refused
                        in the kernel at socket lookup; --source-rate-burst M back to back
                        (default: N)
  --source-prefix-v6 L  IPv6 clients of the two limits above are grouped by /L (default ${DEFAULTS.sourcePrefixV6})
  --access-log PATH     one JSON line per connection, flow or request to PATH ("-": stdout; default off);
                        SIGUSR1 reopens it (logrotate)
  --access-log-sample R the share of lines written, 0 to 1 (default 1)
  -h, --help            this text
  -V, --version         version

Every --flag VALUE may also be written --flag=VALUE.
Durations (D) are like 500ms, 5s, 2m, 1h, from 1ms to 7 days; counts (N) are whole numbers.

Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root) and Linux 5.9 or later with libbpf.so.1.
Exit codes: 0 ok, 1 runtime failure, 2 usage, config or environment error.`;

/** Every flag of `edgeproxy [serve]` (src/cli/flags.ts: `--flag VALUE` or `--flag=VALUE`). */
export const SERVE_FLAGS: readonly FlagSpec[] = [
  { name: "-h" }, { name: "--help" }, { name: "-V" }, { name: "--version" },
  { name: "--config", value: "FILE" }, { name: "--instance", value: "NAME" },
  { name: "--admin", value: "PATH" }, { name: "--no-admin" }, { name: "--pid-file", value: "PATH" },
  { name: "--ports", value: "LIST" }, { name: "--prefix", value: "LIST" }, { name: "--origin", value: "HOST[:PORT]" },
  { name: "--balance", value: "B" }, { name: "--health-interval", value: "D" }, { name: "--health-timeout", value: "D" },
  { name: "--health-path", value: "PATH" }, { name: "--health-port", value: "N" }, { name: "--mode", value: "MODE" },
  { name: "--proxy-protocol", value: "P" }, { name: "--accept-proxy", value: "LIST" }, { name: "--tls-cert", value: "FILE" },
  { name: "--tls-key", value: "FILE" }, { name: "--first-byte-timeout", value: "D" }, { name: "--max-body-size", value: "SIZE" },
  { name: "--name", value: "NAME" }, { name: "--take-over" }, { name: "--workers", value: "N" },
  { name: "--drain-timeout", value: "D" }, { name: "--bpffs", value: "PATH" }, { name: "--connect-timeout", value: "D" },
  { name: "--idle-timeout", value: "D" }, { name: "--max-connections", value: "N" }, { name: "--max-flows", value: "N" },
  { name: "--source-connections", value: "N" }, { name: "--source-rate", value: "N" }, { name: "--source-rate-burst", value: "N" },
  { name: "--source-prefix-v6", value: "L" }, { name: "--access-log", value: "PATH" }, { name: "--access-log-sample", value: "R" },
  ...DEADLINE_KEYS.map((k) => ({ name: k.flag, value: "D" })),
];
