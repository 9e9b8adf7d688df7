import { parsePrefix, type Prefix } from "../config/address";
import { readFileSync } from "node:fs";
import { parseBalance, parseDuration, parseOrigin, parseProxyProtocol, parseSize, poolOf } from "../config/origin";
import { parseCount, WORKER_BOUNDS } from "../config/numbers";
import { POOL_DEFAULTS, type HealthConfig } from "../config/pool";
import { healthOf, parseHealthPort } from "../config/pool-file";
import { parseTls, type CertificateFiles } from "../config/tls";
import { checkService } from "../config/validate";
import { parsePorts, type PortRange } from "../config/ports";
import { checkInstance, completeEngine, defaultAdmin, DEFAULTS, ENGINE_SETTINGS, type EngineSetting, MAX_SOCKET_PATH, transportOf, type AdminConfig, type Balance, type Mode, type OriginConfig, type ServeConfig, type ServiceConfig } from "../config/service";
import { completeDeadlines, DEADLINE_KEYS, type Deadlines } from "../config/deadlines";
import { ConfigError } from "../errors";
import { SOURCE_BOUNDS, sourceLimitsOf } from "../config/sourcelimits";
import { tokenize } from "./flags";
import { checkAccessLogPath, checkSample, completeAccessLog } from "../config/accesslog";
import { completeOriginTls, type OriginTlsSettings } from "../config/origintls";

export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | { kind: "serve"; config: ServeConfig }
  /** serve from a config file; the flags of WITH_CONFIG may still come from the command line, over the file's. */
  | { kind: "serve-file"; file: string; overrides: ServeOverrides };

/** What the command line may set over a config file's settings. */
export interface ServeOverrides {
  readonly bpffs?: string;
  readonly workers?: number;
  readonly drainTimeoutMs?: number;
  readonly instance?: string;
  readonly admin?: AdminConfig;
  readonly pidFile?: string;
  /** --take-over: replace a live instance in the way (a container's replacement says so on its command line). */
  readonly takeOver?: boolean;
}

/** Flags that combine with --config (the process's own settings, not a service's). */
const WITH_CONFIG = ["--config", "--bpffs", "--workers", "--drain-timeout", "--instance", "--admin", "--no-admin", "--pid-file", "--take-over"];

export { SERVE_FLAGS, USAGE } from "./serve-flags";
import { SERVE_FLAGS } from "./serve-flags";

const MODES: readonly Mode[] = ["tcp", "udp", "http"];

/** A unix socket path from the command line: absolute, and short enough for sun_path. */
function socketPathOf(path: string, flag: string): string {
  if (!path.startsWith("/")) throw new ConfigError(flag, `"${path}" is not an absolute path`);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new ConfigError(flag, `"${path}" is longer than ${MAX_SOCKET_PATH} bytes`);
  return path;
}

/** --pid-file: absolute, since the process may change directory and systemd's PIDFile= is absolute too. */
function pidFileOf(path: string, flag: string): string {
  if (!path.startsWith("/") || path.endsWith("/")) throw new ConfigError(flag, `"${path}" is not an absolute file path`);
  return path;
}

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
  // --tls-cert and --tls-key in pairs, in order: the n-th key belongs to the n-th certificate.
  const tlsCerts: string[] = [];
  const tlsKeys: string[] = [];
  let tlsMinVersion: string | undefined;
  let tlsCiphers: string | undefined;
  const originTls: { -readonly [K in keyof OriginTlsSettings]: OriginTlsSettings[K] } = {};
  let engine: EngineSetting | undefined;
  let firstByteTimeoutMs: number | undefined;
  let maxBodyBytes: number | undefined;
  let noHttp2 = false;
  let requestIdInResponse = false;
  let http2Streams: number | undefined;
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
  let admin: AdminConfig | undefined;
  let noAdmin = false;
  let pidFile: string | undefined;
  const source: { connections?: number; rate?: number; burst?: number; prefixV6?: number } = {};
  const accessLog: { path?: string; sample?: number } = {};
  const seen = new Set<string>();

  for (const token of tokenize(args, SERVE_FLAGS)) {
    if ("arg" in token) throw new ConfigError(token.arg, "unexpected argument (see --help)");
    const flag = token.flag;
    const value = (): string => token.value!;
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
        tlsCerts.push(value());
        break;
      case "--tls-key":
        tlsKeys.push(value());
        break;
      case "--tls-min-version":
        once();
        tlsMinVersion = value();
        break;
      case "--tls-ciphers":
        once();
        tlsCiphers = value();
        break;
      case "--origin-tls":
        once();
        originTls.mode = value();
        break;
      case "--origin-ca":
        once();
        originTls.caFile = value();
        break;
      case "--origin-sni":
        once();
        originTls.sni = value();
        break;
      case "--origin-cert":
        once();
        originTls.certFile = value();
        break;
      case "--origin-key":
        once();
        originTls.keyFile = value();
        break;
      case "--first-byte-timeout":
        once();
        firstByteTimeoutMs = parseDuration(value(), flag);
        break;
      case "--max-body-size":
        once();
        maxBodyBytes = parseSize(value(), flag);
        break;
      case "--no-http2":
        once();
        noHttp2 = true;
        break;
      case "--request-id-in-response":
        once();
        requestIdInResponse = true;
        break;
      case "--http2-max-concurrent-streams":
        once();
        http2Streams = parseCount(value(), flag, { min: 1, max: 1000 });
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
        admin = { kind: "unix", path: socketPathOf(value(), flag) };
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
        takeOver = true;
        break;
      case "--instance":
        once();
        instance = checkInstance(value(), flag);
        break;
      case "--no-admin":
        once();
        noAdmin = true;
        break;
      case "--pid-file":
        once();
        pidFile = pidFileOf(value(), flag);
        break;
      case "--connect-timeout":
        once();
        connectTimeoutMs = parseDuration(value(), flag);
        break;
      case "--idle-timeout":
        once();
        idleTimeoutMs = parseDuration(value(), flag);
        break;
      case "--engine": {
        once();
        const e = value();
        if (!ENGINE_SETTINGS.includes(e as EngineSetting)) throw new ConfigError(flag, `"${e}" is not one of ${ENGINE_SETTINGS.join(", ")}`);
        engine = e as EngineSetting;
        break;
      }
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
      case "--access-log":
        once();
        accessLog.path = checkAccessLogPath(value(), flag);
        break;
      case "--access-log-sample":
        once();
        accessLog.sample = checkSample(value(), flag);
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
        throw new Error(`flag ${flag} is in SERVE_FLAGS but not handled`);
    }
  }
  if (noAdmin && admin) throw new ConfigError("--no-admin", "cannot be combined with --admin");
  const adminOverride: AdminConfig | undefined = noAdmin ? { kind: "off" } : admin;
  if (configFile !== undefined) {
    const shortcut = [...seen].filter((f) => !WITH_CONFIG.includes(f));
    if (shortcut.length || ports.length || prefixes.length) {
      throw new ConfigError("--config", `cannot be combined with the one-service flags (${[...shortcut, ...(ports.length ? ["--ports"] : []), ...(prefixes.length ? ["--prefix"] : [])].join(", ")}); put them in the file`);
    }
    return { kind: "serve-file", file: configFile, overrides: { bpffs, workers, drainTimeoutMs, instance, admin: adminOverride, pidFile, ...(takeOver ? { takeOver } : {}) } };
  }
  const transport = transportOf(mode);
  if (transport === "udp" && seen.has("--connect-timeout")) throw new ConfigError("--connect-timeout", "UDP has no connections to time out; use --idle-timeout for flows");
  const proxyProtocol = parseProxyProtocol(proxyProtocolText, mode, "--proxy-protocol");
  const checks = Object.keys(health).length ? healthOf(health, "--health-interval") : undefined;
  if (checks && !seen.has("--health-interval")) throw new ConfigError(["--health-timeout", "--health-path", "--health-port"].find((x) => seen.has(x))!, "needs --health-interval");
  if (health.path !== undefined && mode !== "http") throw new ConfigError("--health-path", `${mode} pools are checked by TCP connect; --health-path is for --mode http`);
  if ((balance || checks) && origins.length === 0) throw new ConfigError(balance ? "--balance" : "--health-interval", "applies to a pool: give --origin too");
  for (const flag of ["--first-byte-timeout", "--max-body-size", "--no-http2", "--http2-max-concurrent-streams", "--request-id-in-response"]) if (seen.has(flag) && mode !== "http") throw new ConfigError(flag, `is for --mode http`);
  const flagOf = { origin_tls: "--origin-tls", origin_ca: "--origin-ca", origin_sni: "--origin-sni", origin_cert: "--origin-cert", origin_key: "--origin-key" } as const;
  const originTlsConfig = completeOriginTls(originTls, mode, (k) => flagOf[k], (p) => readFileSync(p, "utf8"));
  if (originTlsConfig && origins.length === 0) throw new ConfigError("--origin-tls", "applies to origins: give --origin too");
  if (tlsCerts.length !== tlsKeys.length) {
    const [missing, other] = tlsCerts.length > tlsKeys.length ? ["--tls-key", "--tls-cert"] : ["--tls-cert", "--tls-key"];
    throw new ConfigError(missing, `is needed with each ${other} (give them in pairs: ${tlsCerts.length} certificates, ${tlsKeys.length} keys)`);
  }
  const pairs: CertificateFiles[] = tlsCerts.map((cert, i) => ({ cert, key: tlsKeys[i], certWhere: "--tls-cert", keyWhere: "--tls-key" }));
  const tls = parseTls(
    { pairs, ...(tlsMinVersion !== undefined ? { minVersion: { value: tlsMinVersion, where: "--tls-min-version" } } : {}), ...(tlsCiphers !== undefined ? { ciphers: { value: tlsCiphers, where: "--tls-ciphers" } } : {}) },
    mode,
    (p) => readFileSync(p, "utf8"),
    (line) => process.stderr.write(`edgeproxy: ${line}\n`),
  );
  const http =
    mode === "http"
      ? {
          ...POOL_DEFAULTS.http,
          firstByteTimeoutMs: firstByteTimeoutMs ?? POOL_DEFAULTS.http.firstByteTimeoutMs,
          maxBodyBytes: maxBodyBytes ?? POOL_DEFAULTS.http.maxBodyBytes,
          http2: !noHttp2,
          http2MaxConcurrentStreams: http2Streams ?? POOL_DEFAULTS.http.http2MaxConcurrentStreams,
          requestIdInResponse,
          routes: [],
        }
      : undefined;
  const sourceLimits = sourceLimitsOf(source, mode, { connections: "--source-connections", rate: "--source-rate", burst: "--source-rate-burst", prefixV6: "--source-prefix-v6" });
  const pool = origins.length ? poolOf(origins, { balance, health: checks, tls: originTlsConfig }) : undefined;
  const completedEngine = completeEngine(engine, { mode, pool, tls, sniRoutes: undefined, http }, "--engine");
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
    pool,
    connectTimeoutMs,
    idleTimeoutMs: idleTimeoutMs ?? (transport === "udp" ? DEFAULTS.udpIdleTimeoutMs : DEFAULTS.idleTimeoutMs),
    proxyProtocol,
    access: { allow: [], deny: [] },
    acceptProxy,
    tls,
    http,
    ...(sourceLimits ? { sourceLimits } : {}),
    deadlines: completeDeadlines(deadlines, { mode, tls: tls !== undefined, acceptProxy: acceptProxy.length > 0 }, (k) => k.flag),
    ...(completedEngine ? { engine: completedEngine } : {}),
  };
  checkService(service, (key) => ({ origins: "--origin", route: "--origin", accept_proxy: "--accept-proxy", proxy_protocol: "--proxy-protocol" })[key] ?? key);
  const instanceName = instance ?? DEFAULTS.instance;
  if (accessLog.sample !== undefined && accessLog.path === undefined) throw new ConfigError("--access-log-sample", "needs --access-log");
  const log = completeAccessLog(accessLog, {}, instanceName);
  return {
    kind: "serve",
    config: {
      instance: instanceName,
      takeOver,
      maxConnections,
      maxFlows,
      bpffs,
      // Every serve gets an admin socket by default, so control commands find it (--no-admin: none).
      admin: adminOverride ?? defaultAdmin(instanceName, "--instance"),
      ...(pidFile ? { pidFile } : {}),
      services: [log ? { ...service, accessLog: log } : service], ...(workers ? { workers } : {}), ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}),
    },
  };
}
