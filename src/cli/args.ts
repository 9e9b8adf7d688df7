import { readFileSync } from "node:fs";
import { parsePrefix, type Prefix } from "../config/address";
import { parseBalance, parseDuration, parseOrigin, parseProxyProtocol, poolOf } from "../config/origin";
import { parsePorts, type PortRange } from "../config/ports";
import { DEFAULTS, transportOf, type Balance, type Mode, type OriginConfig, type ServeConfig, type TlsConfig } from "../config/service";
import { ConfigError } from "../errors";

export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "serve"; config: ServeConfig }
  /** serve from a config file; --bpffs may still come from the command line. */
  | { kind: "serve-file"; file: string; bpffs?: string };

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
  --mode tcp|udp        service mode (default tcp; http is planned). udp keeps every
                        (client, original destination) pair as a flow with its own origin socket
  --proxy-protocol P    tell the origin the client's address; tcp: v1 or v2 (PROXY header at
                        the start of each origin connection); udp: v2 (PROXY v2 on a flow's
                        first datagram) or spp (Cloudflare's Simple Proxy Protocol); default off
  --accept-proxy LIST   tcp: source prefixes (trusted load balancers) whose connections must
                        start with a PROXY v1 or v2 header naming the real client (repeatable)
  --tls-cert FILE       tcp: terminate TLS with this PEM certificate (chain) and --tls-key FILE;
  --tls-key FILE        the origin gets plaintext (default: bytes pass through as they are)
  --name NAME           service name (default: default)
  --take-over           also steer ports where another socket already listens
  --bpffs PATH          bpffs mount for pinned state (default $EDGEPROXY_BPFFS or /sys/fs/bpf)
  --connect-timeout D   origin connect timeout (default 5s)
  --idle-timeout D      close connections idle this long (default 300s; udp flows 30s)
  --max-connections N   refuse new connections beyond N open ones
                        (default: what the open-file limit allows)
  --max-flows N         at most N UDP flows at once; when full, flows the client sent
                        only one datagram on are evicted first (default: open-file limit)
  -h, --help            this text
  -V, --version         version

Needs CAP_BPF and CAP_NET_ADMIN (or root) and Linux 5.9 or later with libbpf.so.1.
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
  let mode: Mode = "tcp";
  let name = "default";
  let takeOver = false;
  let connectTimeoutMs: number = DEFAULTS.connectTimeoutMs;
  let idleTimeoutMs: number | undefined;
  let proxyProtocolText = "off";
  let maxConnections: number | undefined;
  let maxFlows: number | undefined;
  let bpffs: string | undefined;
  let configFile: string | undefined;
  let admin: ServeConfig["admin"] = { kind: "off" };
  const acceptProxy: Prefix[] = [];
  let tlsCertFile: string | undefined;
  let tlsKeyFile: string | undefined;
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
      case "--mode": {
        once();
        const m = value();
        if (!MODES.includes(m as Mode)) throw new ConfigError("--mode", `"${m}" is not one of ${MODES.join(", ")}`);
        if (m === "http") throw new ConfigError("--mode", `${m} services are not available yet in this version`);
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
      case "--take-over":
        if (eq > 0) throw new ConfigError(flag, "takes no value");
        takeOver = true;
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
      case "--accept-proxy":
        for (const p of value().split(",")) acceptProxy.push(parsePrefix(p.trim(), "--accept-proxy"));
        break;
      case "--tls-cert":
        once();
        tlsCertFile = value();
        break;
      case "--tls-key":
        once();
        tlsKeyFile = value();
        break;
      case "--max-connections":
        once();
        maxConnections = positive(flag, value());
        break;
      case "--max-flows":
        once();
        maxFlows = positive(flag, value());
        break;
      default:
        throw new ConfigError(arg, arg.startsWith("-") ? "unknown option (see --help)" : "unexpected argument (see --help)");
    }
  }
  if (configFile !== undefined) {
    const shortcut = [...seen].filter((f) => f !== "--config" && f !== "--bpffs");
    if (shortcut.length || ports.length || prefixes.length || takeOver) {
      throw new ConfigError("--config", `cannot be combined with the one-service flags (${[...shortcut, ...(ports.length ? ["--ports"] : []), ...(prefixes.length ? ["--prefix"] : []), ...(takeOver ? ["--take-over"] : [])].join(", ")}); put them in the file`);
    }
    return { kind: "serve-file", file: configFile, bpffs };
  }
  const transport = transportOf(mode);
  if (transport === "udp" && seen.has("--connect-timeout")) throw new ConfigError("--connect-timeout", "UDP has no connections to time out; use --idle-timeout for flows");
  const proxyProtocol = parseProxyProtocol(proxyProtocolText, mode, "--proxy-protocol");
  if (transport === "udp" && acceptProxy.length) throw new ConfigError("--accept-proxy", "UDP datagrams carry no PROXY header to accept; it is for tcp services");
  const tls = tlsFlags(tlsCertFile, tlsKeyFile, transport);
  if (tls && acceptProxy.length) throw new ConfigError("--accept-proxy", "cannot be combined with --tls-cert yet (the PROXY header precedes the TLS handshake)");
  return {
    kind: "serve",
    config: {
      takeOver,
      maxConnections,
      maxFlows,
      bpffs,
      admin,
      services: [
        {
          name,
          mode,
          bindings: [
            {
              protocol: transport,
              prefixes: prefixes.length ? prefixes : [parsePrefix(DEFAULTS.prefix)],
              ports: ports.length ? ports : parsePorts(DEFAULTS.ports),
            },
          ],
          pool: origins.length ? poolOf(origins, { balance }) : undefined,
          connectTimeoutMs,
          idleTimeoutMs: idleTimeoutMs ?? (transport === "udp" ? DEFAULTS.udpIdleTimeoutMs : DEFAULTS.idleTimeoutMs),
          proxyProtocol,
          access: { allow: [], deny: [] },
          acceptProxy,
          ...(tls ? { tls } : {}),
        },
      ],
    },
  };
}

function tlsFlags(certFile: string | undefined, keyFile: string | undefined, transport: "tcp" | "udp"): TlsConfig | undefined {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (transport === "udp") throw new ConfigError(certFile !== undefined ? "--tls-cert" : "--tls-key", "TLS termination is for tcp services");
  if (certFile === undefined) throw new ConfigError("--tls-key", "needs --tls-cert too");
  if (keyFile === undefined) throw new ConfigError("--tls-cert", "needs --tls-key too");
  const read = (flag: string, file: string, what: RegExp) => {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      throw new ConfigError(flag, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!what.test(text)) throw new ConfigError(flag, `${file} holds no PEM ${what === PEM_CERT ? "certificate" : "private key"}`);
    return text;
  };
  return { certFile, keyFile, cert: read("--tls-cert", certFile, PEM_CERT), key: read("--tls-key", keyFile, PEM_KEY) };
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----/;
const PEM_KEY = /-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/;

function positive(flag: string, v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new ConfigError(flag, `"${v}" is not a positive whole number`);
  return Number(v);
}
