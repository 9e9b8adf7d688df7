import { parsePrefix, type Prefix } from "../config/address";
import { readFileSync } from "node:fs";
import { parseBalance, parseDuration, parseOrigin, parseProxyProtocol, parseSize, poolOf } from "../config/origin";
import { parseCount, WORKER_BOUNDS } from "../config/numbers";
import { POOL_DEFAULTS, type HealthConfig } from "../config/pool";
import { healthOf, parseHealthPort, parseTls } from "../config/pool-file";
import { checkService } from "../config/validate";
import { parsePorts, type PortRange } from "../config/ports";
import { DEFAULTS, transportOf, type Balance, type Mode, type OriginConfig, type ServeConfig, type ServiceConfig } from "../config/service";
import { completeDeadlines, DEADLINE_KEYS, type Deadlines } from "../config/deadlines";
import { ConfigError } from "../errors";
import { checkInstanceName } from "../dispatcher/instances";
import { SOURCE_BOUNDS, sourceLimitsOf } from "../config/sourcelimits";

export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "serve"; config: ServeConfig }
  /** serve from a config file; --bpffs may still come from the command line. */
  | { kind: "serve-file"; file: string; bpffs?: string; workers?: number; drainTimeoutMs?: number; instance?: string; takeOver?: boolean };

export const USAGE = `Usage: edgeproxy [serve] [options]

Answer on whole port ranges and IP prefixes with one socket per address family,
steered by a BPF sk_lookup program, and proxy every connection to an origin.

       edgeproxy [serve] --config edgeproxy.toml

Options:
  --config FILE         many services from a TOML file (the flags below are the one-service shortcut);
                        SIGHUP or 'edgeproxy reload' re-reads it
  --admin PATH          serve the admin API (status, bindings, /metrics) on this unix socket
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
  --take-over           also steer ports where another socket already listens, and replace a
                        running instance whose service names or bindings overlap (it drains and exits)
  --instance NAME       this serve's instance name (default: the config file's base name, else "default")
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
  -h, --help            this text
  -V, --version         version

Durations (D) are like 500ms, 5s, 2m, 1h, from 1ms to 7 days; counts (N) are whole numbers.

Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root) and Linux 5.9 or later with libbpf.so.1.
Exit codes: 0 ok, 1 runtime failure, 2 usage, config or environment error.`;

const MODES: readonly Mode[] = ["tcp", "udp", "http"];

/** Parse argv (without the program name). Throws ConfigError with a one-line message. */
export function parseArgs(argv: readonly string[]): Command {
  const args = [...argv];
  if (args[0] === "serve") args.shift();
  const ports: PortRange[] = [];
  const prefixes: Prefix[] = [];
  const origins: OriginConfig[] = [];
  let balance: Balance | undefined;
  const health: { -readonly [K in keyof HealthConfig]?: HealthConfig[K] } = {};
  const acceptProxy: Prefix[] = [];
  let tlsCert: string | undefined;
  let tlsKey: string | undefined;
  let firstByteTimeoutMs: number | undefined;
  let maxBodyBytes: number | undefined;
  const deadlines: Partial<Record<keyof Deadlines, number>> = {};
  let mode: Mode = "tcp";
  let name = "default";
  let takeOver = false;
  let instance: string | undefined;
  let connectTimeoutMs: number = DEFAULTS.connectTimeoutMs;
  let idleTimeoutMs: number | undefined;
  let proxyProtocolText = "off";
  let maxConnections: number | undefined;
  let maxFlows: number | undefined;
  let bpffs: string | undefined;
  let workers: number | undefined;
  let drainTimeoutMs: number | undefined;
  let configFile: string | undefined;
  let admin: ServeConfig["admin"] = { kind: "off" };
  const source: { connections?: number; rate?: number; burst?: number; prefixV6?: number } = {};
  const seen = new Set<string>();

  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq > 0) return arg.slice(eq + 1);
      const v = args[++i];
      if (v === undefined || v === "") throw new ConfigError(flag, "needs a value");
      return v;
    };
    const once = () => {
      if (seen.has(flag)) throw new ConfigError(flag, "given twice");
      seen.add(flag);
    };
    switch (flag) {
      case "-h":
      case "--help":
        return { kind: "help" };
      case "-V":
      case "--version":
        return { kind: "version" };
      case "--ports":
        ports.push(...parsePorts(value(), "--ports"));
        break;
      case "--prefix":
        for (const p of value().split(",")) prefixes.push(parsePrefix(p.trim(), "--prefix"));
        break;
      case "--origin":
        origins.push(parseOrigin(value(), "--origin"));
        break;
      case "--balance":
        once();
        balance = parseBalance(value(), flag);
        break;
      case "--health-interval":
        once();
        health.intervalMs = parseDuration(value(), flag);
        break;
      case "--health-timeout":
        once();
        health.timeoutMs = parseDuration(value(), flag);
        break;
      case "--health-port":
        once();
        health.port = parseHealthPort(value(), flag);
        break;
      case "--health-path":
        once();
        health.path = value();
        if (!/^\/[\x21-\x7e]*$/.test(health.path)) throw new ConfigError(flag, `"${health.path}" must start with / and hold no spaces or control characters`);
        break;
      case "--accept-proxy":
        for (const p of value().split(",")) acceptProxy.push(parsePrefix(p.trim(), flag));
        break;
      case "--tls-cert":
        once();
        tlsCert = value();
        break;
      case "--tls-key":
        once();
        tlsKey = value();
        break;
      case "--first-byte-timeout":
        once();
        firstByteTimeoutMs = parseDuration(value(), flag);
        break;
      case "--max-body-size":
        once();
        maxBodyBytes = parseSize(value(), flag);
        break;
      case "--mode": {
        once();
        const m = value();
        if (!MODES.includes(m as Mode)) throw new ConfigError("--mode", `"${m}" is not one of ${MODES.join(", ")}`);
        mode = m as Mode;
        break;
      }
      case "--name":
        once();
        name = value();
        if (!/^[a-zA-Z0-9_.-]{1,64}$/.test(name)) throw new ConfigError("--name", `"${name}": use 1-64 of a-z A-Z 0-9 _ . -`);
        break;
      case "--config":
        once();
        configFile = value();
        break;
      case "--admin":
        once();
        admin = { kind: "unix", path: value() };
        break;
      case "--bpffs":
        once();
        bpffs = value();
        break;
      case "--workers":
        once();
        workers = parseCount(value(), flag, WORKER_BOUNDS);
        break;
      case "--drain-timeout":
        once();
        drainTimeoutMs = parseDuration(value(), flag);
        break;
      case "--take-over":
        if (eq > 0) throw new ConfigError(flag, "takes no value");
        takeOver = true;
        break;
      case "--instance":
        once();
        instance = checkInstanceName(value(), flag);
        break;
      case "--connect-timeout":
        once();
        connectTimeoutMs = parseDuration(value(), flag);
        break;
      case "--idle-timeout":
        once();
        idleTimeoutMs = parseDuration(value(), flag);
        break;
      case "--proxy-protocol":
        once();
        proxyProtocolText = value();
        break;
      case "--max-connections":
        once();
        maxConnections = parseCount(value(), flag);
        break;
      case "--max-flows":
        once();
        maxFlows = parseCount(value(), flag);
        break;
      case "--source-connections":
        once();
        source.connections = parseCount(value(), flag, SOURCE_BOUNDS.connections);
        break;
      case "--source-rate":
        once();
        source.rate = parseCount(value(), flag, SOURCE_BOUNDS.rate);
        break;
      case "--source-rate-burst":
        once();
        source.burst = parseCount(value(), flag, SOURCE_BOUNDS.burst);
        break;
      case "--source-prefix-v6":
        once();
        source.prefixV6 = parseCount(value(), flag, SOURCE_BOUNDS.prefixV6);
        break;
      case "--proxy-header-timeout":
      case "--handshake-timeout":
      case "--header-timeout":
      case "--keepalive-timeout":
      case "--body-timeout":
        once();
        deadlines[DEADLINE_KEYS.find((k) => k.flag === flag)!.field] = parseDuration(value(), flag);
        break;
      default:
        throw new ConfigError(arg, arg.startsWith("-") ? "unknown option (see --help)" : "unexpected argument (see --help)");
    }
  }
  if (configFile !== undefined) {
    const shortcut = [...seen].filter((f) => !["--config", "--bpffs", "--workers", "--drain-timeout", "--instance"].includes(f));
    if (shortcut.length || ports.length || prefixes.length) {
      throw new ConfigError("--config", `cannot be combined with the one-service flags (${[...shortcut, ...(ports.length ? ["--ports"] : []), ...(prefixes.length ? ["--prefix"] : [])].join(", ")}); put them in the file`);
    }
    return { kind: "serve-file", file: configFile, bpffs, workers, drainTimeoutMs, ...(instance ? { instance } : {}), ...(takeOver ? { takeOver } : {}) };
  }
  const transport = transportOf(mode);
  if (transport === "udp" && seen.has("--connect-timeout")) throw new ConfigError("--connect-timeout", "UDP has no connections to time out; use --idle-timeout for flows");
  const proxyProtocol = parseProxyProtocol(proxyProtocolText, mode, "--proxy-protocol");
  const checks = Object.keys(health).length ? healthOf(health, "--health-interval") : undefined;
  if (checks && !seen.has("--health-interval")) throw new ConfigError(["--health-timeout", "--health-path", "--health-port"].find((x) => seen.has(x))!, "needs --health-interval");
  if (health.path !== undefined && mode !== "http") throw new ConfigError("--health-path", `${mode} pools are checked by TCP connect; --health-path is for --mode http`);
  if ((balance || checks) && origins.length === 0) throw new ConfigError(balance ? "--balance" : "--health-interval", "applies to a pool: give --origin too");
  for (const flag of ["--first-byte-timeout", "--max-body-size"]) if (seen.has(flag) && mode !== "http") throw new ConfigError(flag, `is for --mode http`);
  const tls = parseTls({ file: tlsCert, where: "--tls-cert" }, { file: tlsKey, where: "--tls-key" }, mode, (p) => readFileSync(p, "utf8"));
  const http =
    mode === "http"
      ? { ...POOL_DEFAULTS.http, firstByteTimeoutMs: firstByteTimeoutMs ?? POOL_DEFAULTS.http.firstByteTimeoutMs, maxBodyBytes: maxBodyBytes ?? POOL_DEFAULTS.http.maxBodyBytes, routes: [] }
      : undefined;
  const sourceLimits = sourceLimitsOf(source, mode, { connections: "--source-connections", rate: "--source-rate", burst: "--source-rate-burst", prefixV6: "--source-prefix-v6" });
  const service: ServiceConfig = {
    name,
    mode,
    bindings: [
      {
        protocol: transport,
        prefixes: prefixes.length ? prefixes : [parsePrefix(DEFAULTS.prefix)],
        ports: ports.length ? ports : parsePorts(DEFAULTS.ports),
      },
    ],
    pool: origins.length ? poolOf(origins, { balance, health: checks }) : undefined,
    connectTimeoutMs,
    idleTimeoutMs: idleTimeoutMs ?? (transport === "udp" ? DEFAULTS.udpIdleTimeoutMs : DEFAULTS.idleTimeoutMs),
    proxyProtocol,
    access: { allow: [], deny: [] },
    acceptProxy,
    tls,
    http,
    ...(sourceLimits ? { sourceLimits } : {}),
    deadlines: completeDeadlines(deadlines, { mode, tls: tls !== undefined, acceptProxy: acceptProxy.length > 0 }, (k) => k.flag),
  };
  checkService(service, (key) => ({ origins: "--origin", route: "--origin", accept_proxy: "--accept-proxy" })[key] ?? key);
  return { kind: "serve", config: { instance: instance ?? DEFAULTS.instance, takeOver, maxConnections, maxFlows, bpffs, admin, services: [service], ...(workers ? { workers } : {}), ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}) } };
}
