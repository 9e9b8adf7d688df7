import { readFileSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { EP_MAX_SERVICES } from "../dispatcher/abi";
import { compileBindings } from "../dispatcher/compile";
import { ConfigError } from "../errors";
import { serviceBindings } from "../server/bindings";
import { parseAddress, parsePrefix, type Prefix } from "./address";
import { completeDeadlines, DEADLINE_KEYS } from "./deadlines";
import { WORKER_BOUNDS } from "./numbers";
import { parseDuration, parseEndpoint, parseProxyProtocol } from "./origin";
import { originTlsSettings, parseHttp, parsePool, POOL_FIELDS } from "./pool-file";
import { completeOriginTls, ORIGIN_TLS_FIELDS, type OriginTlsWhere } from "./origintls";
import { poolsOf } from "./pool";
import { parseSniRoutes } from "./sni";
import { parseTls, type CertificateFiles } from "./tls";
import { parsePorts } from "./ports";
import { Fields, isTable } from "./schema";
import { checkService } from "./validate";
import { checkAccessLogPath, checkSample, completeAccessLog, type AccessLogSettings } from "./accesslog";
import { parseSize } from "./numbers";
import { SOURCE_BOUNDS, sourceLimitsOf } from "./sourcelimits";
import { completeEngine, DEFAULTS, defaultAdmin, ENGINE_SETTINGS, type EngineSetting, instanceOf, MAX_SOCKET_PATH, transportOf, type AdminConfig, type BindingConfig, type Mode, type ServeConfig, type ServiceConfig } from "./service";

const ACCESS_LOG_FIELDS = ["access_log", "access_log_sample", "access_log_connect"];
const NAME = /^[a-zA-Z0-9_.-]{1,64}$/;
const MODES: readonly Mode[] = ["tcp", "udp", "http"];
// Dispatcher id 0 means "not bound", so ids 1..EP_MAX_SERVICES-1 are left for services.
const MAX_SERVICES = EP_MAX_SERVICES - 1;
const MIN_TOKEN = 16;

export const TOP_FIELDS = ["instance", "take_over", "max_connections", "max_flows", "workers", "drain_timeout", "admin", "service", ...ACCESS_LOG_FIELDS, "access_log_buffer"];
export const ADMIN_FIELDS = ["enabled", "socket", "listen", "token", "token_file"];
export const SERVICE_FIELDS = [
  "name", "mode", "engine", ...POOL_FIELDS, "connect_timeout", "idle_timeout", "proxy_protocol", "accept_proxy", "tls_cert", "tls_key", "certificate", "tls_min_version", "tls_ciphers",
  "first_byte_timeout", "max_body_size", "max_header_size", "http2", "http2_max_concurrent_streams", "request_id_in_response", "allow", "deny", "bind", "route",
  "source_connections", "source_rate", "source_rate_burst", "source_prefix_v6",
  // config/deadlines.ts DEADLINE_KEYS
  "proxy_header_timeout", "handshake_timeout", "header_timeout", "keepalive_timeout", "body_timeout",
  ...ACCESS_LOG_FIELDS,
];
export const BIND_FIELDS = ["protocol", "prefixes", "ports"];
export const CERTIFICATE_FIELDS = ["cert", "key"];
const IN_SERVICE = "it belongs in a [[service]] table";
const IN_BIND = "it belongs in a [[service.bind]] table";
const TOP_HINTS = { name: IN_SERVICE, origin: IN_SERVICE, mode: IN_SERVICE, bind: IN_SERVICE, ports: IN_BIND, prefixes: IN_BIND, services: "the tables are [[service]]" };
const SERVICE_HINTS = { ports: IN_BIND, prefixes: IN_BIND, protocol: IN_BIND, prefix: IN_BIND };

/** How parseConfig reads files the config points at (token_file); tests pass their own. */
export interface ParseOptions {
  readonly readFile?: (path: string) => string;
  /** --instance on the command line, over the file's `instance` (the default admin socket follows it). */
  readonly instance?: string;
  /** A running serve re-reads its file (reload): a FIFO is refused, its read would hold the reload until someone writes. */
  readonly reread?: boolean;
}

/**
 * Parse and validate an edgeproxy.toml. Every error is a one-line ConfigError
 * naming the file, the service and the field. Origins that loop back into the
 * bindings are checked at startup (rejectLoops), not here.
 */
export function parseConfig(text: string, file: string, options: ParseOptions = {}): ServeConfig {
  const top = Fields.of(parseToml(text, file), file, ": ", TOP_FIELDS, TOP_HINTS);
  const takeOver = top.boolean("take_over") ?? false;
  const maxConnections = top.positiveInteger("max_connections");
  const maxFlows = top.positiveInteger("max_flows");
  const workers = top.positiveInteger("workers", WORKER_BOUNDS);
  const drainText = top.text("drain_timeout");
  const drainTimeoutMs = drainText === undefined ? undefined : parseDuration(drainText, top.at("drain_timeout"));
  const instance = options.instance ?? instanceOf(top.string("instance"), file, top.at("instance"));
  const admin = parseAdmin(top, file, options.readFile ?? ((p) => readFileSync(p, "utf8")), instance);

  const raw = top.tables("service", "[[service]]");
  if (!raw || raw.length === 0) throw top.missing("service", "add a [[service]] table");
  if (raw.length > MAX_SERVICES) throw new ConfigError(top.at("service"), `${raw.length} services; at most ${MAX_SERVICES} are supported`);
  const read = options.readFile ?? ((p: string) => readFileSync(p, "utf8"));
  const bufferText = top.text("access_log_buffer");
  const logDefaults = { ...accessLogSettings(top), ...(bufferText !== undefined ? { bufferBytes: parseSize(bufferText, top.at("access_log_buffer")) } : {}) };
  const services = raw.map((t, i) => parseService(t, i, file, read, logDefaults, instance));

  const seen = new Map<string, number>();
  services.forEach((s, i) => {
    const first = seen.get(s.name);
    if (first !== undefined) throw new ConfigError(`${file}: service[${i + 1}]: name`, `"${s.name}" is already the name of service[${first + 1}]`);
    seen.set(s.name, i);
  });

  try {
    compileBindings(serviceBindings(services));
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`${file}: ${e.where}`, e.message.slice(e.where.length + 2));
    throw e;
  }
  return { instance, services, takeOver, maxConnections, maxFlows, admin, source: file, ...(workers ? { workers } : {}), ...(drainTimeoutMs !== undefined ? { drainTimeoutMs } : {}) };
}

/** The largest config file read: thousands of services take a few MiB. */
const MAX_CONFIG_BYTES = 64 << 20;

/** Read and parse a config file; an unreadable file is a ConfigError naming it. */
export async function loadConfig(file: string, options: ParseOptions = {}): Promise<ServeConfig> {
  let text: string;
  try {
    // A device such as /dev/zero never ends, a file has a bound; a FIFO (`--config <(...)`) is read once at
    // start, but a reload's read of it would wait for a writer, holding the reload (and the next ones) forever.
    const st = await stat(file);
    if (st.isFile() && st.size > MAX_CONFIG_BYTES) throw new ConfigError(file, `cannot read config file: ${st.size} bytes, more than ${MAX_CONFIG_BYTES >> 20} MiB`);
    if (st.isFIFO() && options.reread) throw new ConfigError(file, "cannot re-read config file: a FIFO (a reload reads a regular file)");
    if (!st.isFile() && !st.isDirectory() && !st.isFIFO()) throw new ConfigError(file, "cannot read config file: not a regular file (a device or socket)");
    text = await readFile(file, "utf8");
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(file, `cannot read config file: ${ioReason(e)}`);
  }
  return parseConfig(text, file, options);
}

function ioReason(e: unknown): string {
  const code = (e as { code?: string }).code;
  const words: Record<string, string> = { ENOENT: "no such file", EACCES: "permission denied", EISDIR: "is a directory" };
  return code ? `${words[code] ?? "error"} (${code})` : (e as Error).message;
}

function parseToml(text: string, file: string): unknown {
  try {
    return Bun.TOML.parse(text);
  } catch (e) {
    const message = (e as Error).message;
    const line = errorLine(text, message);
    throw new ConfigError(line ? `${file}:${line}` : file, `TOML syntax error: ${message.replace(/^TOML Parse error: /, "")}`);
  }
}

/*
 * Bun's TOML errors carry no position (their line/column point into our own
 * source), so find the line by parsing prefixes of the file: the first line
 * from which every prefix fails with the same message is where the parser
 * gave up. Most errors appear as soon as their line is included and persist,
 * so binary search finds it. An unterminated array, inline table or
 * multi-line string also "fails" in the middle of every valid multi-line one
 * before it, so for those walk back from the end instead, a bounded distance.
 */
const UNTERMINATED = /end of file$|Unterminated (array|inline table|string)($|; expected)/;
const WALK_BACK = 200;

function errorLine(text: string, message: string): number | undefined {
  const lines = text.split("\n");
  const failsAt = (n: number) => {
    try {
      // Keep each line's newline: "unterminated" messages differ with and without it.
      Bun.TOML.parse(n === lines.length ? text : `${lines.slice(0, n).join("\n")}\n`);
      return false;
    } catch (e) {
      return (e as Error).message === message;
    }
  };
  if (!failsAt(lines.length)) return undefined;
  if (UNTERMINATED.test(message)) {
    for (let n = lines.length - 1; n >= Math.max(0, lines.length - WALK_BACK); n--) {
      if (n === 0 || !failsAt(n)) return n + 1;
    }
    return undefined;
  }
  let lo = 1;
  let hi = lines.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (failsAt(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function parseAdmin(top: Fields, file: string, read: (path: string) => string, instance: string): AdminConfig {
  if (!top.has("admin")) return defaultAdmin(instance, top.at("instance"));
  const f = Fields.of(top.value("admin"), `${file}: admin`, ".", ADMIN_FIELDS);
  const set = ["socket", "listen", "token", "token_file"].filter((k) => f.has(k));
  if (f.boolean("enabled") === false) {
    if (set.length) throw new ConfigError(f.at("enabled"), `false cannot be combined with ${set.join(", ")}`);
    return { kind: "off" };
  }
  if (f.has("socket") && f.has("listen")) throw new ConfigError(f.where, "set socket or listen, not both");
  if (f.has("token") && f.has("token_file")) throw new ConfigError(f.where, "set token or token_file, not both");
  const listen = f.string("listen");
  if (listen === undefined) {
    if (f.has("token") || f.has("token_file")) throw new ConfigError(f.where, "token and token_file only apply with listen");
    if (!f.has("socket")) return defaultAdmin(instance, f.at("socket"));
    const path = f.string("socket")!;
    if (!path.startsWith("/")) throw new ConfigError(f.at("socket"), `"${path}" is not an absolute path`);
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) throw new ConfigError(f.at("socket"), `"${path}" is longer than ${MAX_SOCKET_PATH} bytes`);
    return { kind: "unix", path };
  }
  const { host, port } = parseEndpoint(listen, listen, f.at("listen"));
  if (port === undefined) throw new ConfigError(f.at("listen"), `"${listen}" needs a port`);
  const addr = parseAddress(host);
  const loopback = addr && (addr.length === 4 ? addr[0] === 127 : addr.every((b, i) => b === (i === 15 ? 1 : 0)));
  if (!loopback) throw new ConfigError(f.at("listen"), `"${listen}" must be a loopback address (127.0.0.0/8 or [::1]); the admin API is not for the network`);
  return { kind: "tcp", host, port, token: adminToken(f, read) };
}

function adminToken(f: Fields, read: (path: string) => string): string {
  let token = f.string("token");
  let key = "token";
  if (token === undefined) {
    const path = f.string("token_file");
    if (path === undefined) throw new ConfigError(f.where, "listen needs token or token_file");
    key = "token_file";
    if (!path.startsWith("/")) throw new ConfigError(f.at(key), `"${path}" is not an absolute path`);
    try {
      token = read(path).trim();
    } catch (e) {
      throw new ConfigError(f.at(key), `cannot read "${path}": ${ioReason(e)}`);
    }
  }
  // Sent as an HTTP bearer token, so it must fit in a header as one word.
  if (!/^[\x21-\x7e]*$/.test(token)) throw new ConfigError(f.at(key), "the token must be printable ASCII without spaces");
  if (token.length < MIN_TOKEN) throw new ConfigError(f.at(key), `the token has ${token.length} characters; use at least ${MIN_TOKEN}`);
  return token;
}

/** The access_log keys of a table (top level or a service), checked, not yet completed. */
function accessLogSettings(f: Fields): AccessLogSettings {
  const path = f.string("access_log");
  const sample = f.has("access_log_sample") ? checkSample(f.value("access_log_sample"), f.at("access_log_sample")) : undefined;
  const connect = f.boolean("access_log_connect");
  return {
    ...(path !== undefined ? { path: checkAccessLogPath(path, f.at("access_log")) } : {}),
    ...(sample !== undefined ? { sample } : {}),
    ...(connect !== undefined ? { connect } : {}),
  };
}

function parseService(raw: unknown, index: number, file: string, read: (path: string) => string, logDefaults: AccessLogSettings = {}, instance?: string): ServiceConfig {
  // Name the service in messages as soon as possible, even before its name is checked.
  const rawName = isTable(raw) ? raw.name : undefined;
  const label = typeof rawName === "string" && NAME.test(rawName) ? `service "${rawName}"` : `service[${index + 1}]`;
  const f = Fields.of(raw, `${file}: ${label}`, ": ", SERVICE_FIELDS, SERVICE_HINTS);

  const name = f.string("name");
  if (name === undefined) throw f.missing("name");
  if (!NAME.test(name)) throw new ConfigError(f.at("name"), `"${name}": use 1-64 of a-z A-Z 0-9 _ . -`);

  const mode = (f.string("mode") ?? "tcp") as Mode;
  if (!MODES.includes(mode)) throw new ConfigError(f.at("mode"), `"${mode}" is not one of ${MODES.join(", ")}`);
  const transport = transportOf(mode);

  // origin_tls and its keys: the service's pool's, and the default of its routes'.
  const originTls = originTlsSettings(f);
  const tlsAt: OriginTlsWhere = (k) => f.at(k);
  const pool = parsePool(f, mode, completeOriginTls(originTls, mode, tlsAt, read));
  const duration = (key: string, fallback: number) => {
    const t = f.text(key);
    return t === undefined ? fallback : parseDuration(t, f.at(key));
  };
  if (transport === "udp" && f.text("connect_timeout") !== undefined) {
    throw new ConfigError(f.at("connect_timeout"), "UDP has no connections to time out; use idle_timeout for flows");
  }
  const connectTimeoutMs = duration("connect_timeout", DEFAULTS.connectTimeoutMs);
  const idleTimeoutMs = duration("idle_timeout", transport === "udp" ? DEFAULTS.udpIdleTimeoutMs : DEFAULTS.idleTimeoutMs);
  const proxyProtocol = parseProxyProtocol(f.string("proxy_protocol") ?? "off", mode, f.at("proxy_protocol"));
  const access = { allow: prefixes(f, "allow") ?? [], deny: prefixes(f, "deny") ?? [] };
  const acceptProxy = prefixes(f, "accept_proxy") ?? [];
  const tls = parseTls(tlsSettings(f), mode, read, (line) => process.stderr.write(`edgeproxy: ${line}\n`));
  const http = parseHttp(f, mode, { tls: originTls, tlsAt, read });
  const sniRoutes = mode === "tcp" ? parseSniRoutes(f.tables("route", "[[service.route]]") ?? [], f.where) : undefined;
  const sourceLimits = sourceLimitsOf(
    {
      connections: f.positiveInteger("source_connections", SOURCE_BOUNDS.connections),
      rate: f.positiveInteger("source_rate", SOURCE_BOUNDS.rate),
      burst: f.positiveInteger("source_rate_burst", SOURCE_BOUNDS.burst),
      prefixV6: f.positiveInteger("source_prefix_v6", SOURCE_BOUNDS.prefixV6),
    },
    mode,
    { connections: f.at("source_connections"), rate: f.at("source_rate"), burst: f.at("source_rate_burst"), prefixV6: f.at("source_prefix_v6") },
  );
  const deadlines = completeDeadlines(
    Object.fromEntries(DEADLINE_KEYS.map((k) => [k.field, f.text(k.key) === undefined ? undefined : duration(k.key, 0)])),
    // sni routes read the ClientHello under the handshake deadline (proxy/sni/session.ts).
    { mode, tls: tls !== undefined || sniRoutes !== undefined, acceptProxy: acceptProxy.length > 0 },
    (k) => f.at(k.key),
  );

  const binds = f.tables("bind", "[[service.bind]]");
  if (!binds || binds.length === 0) throw f.missing("bind", "add a [[service.bind]] table with prefixes and ports");
  const bindings = binds.map((b, i) => parseBind(b, `${f.where}: bind[${i + 1}]`, transport));

  // pool stays a key even when undefined, as on the command line, so both configs compare equal.
  const accessLog = completeAccessLog(accessLogSettings(f), logDefaults, instance);
  const engineText = f.string("engine");
  if (engineText !== undefined && !ENGINE_SETTINGS.includes(engineText as EngineSetting)) throw new ConfigError(f.at("engine"), `"${engineText}" is not one of ${ENGINE_SETTINGS.join(", ")}`);
  const engine = completeEngine(engineText as EngineSetting | undefined, { mode, pool, tls, sniRoutes, http }, f.at("engine"));
  const service: ServiceConfig = { name, mode, bindings, pool, connectTimeoutMs, idleTimeoutMs, proxyProtocol, access, acceptProxy, tls, http, deadlines, ...(sniRoutes ? { sniRoutes } : {}), ...(sourceLimits ? { sourceLimits } : {}), ...(accessLog ? { accessLog } : {}), ...(engine ? { engine } : {}) };
  const tlsKey = ORIGIN_TLS_FIELDS.find((k) => f.has(k));
  if (tlsKey && poolsOf(service).length === 0) throw new ConfigError(f.at(tlsKey), "applies to origins: set origin or origins (or routes with origins)");
  checkService(service, (key) => f.at(key));
  return service;
}

/** tls_cert/tls_key (one certificate, listed first), then each [[service.certificate]]; tls_min_version, tls_ciphers. */
function tlsSettings(f: Fields) {
  const pairs: CertificateFiles[] = [];
  if (f.has("tls_cert") || f.has("tls_key")) pairs.push({ cert: f.string("tls_cert"), key: f.string("tls_key"), certWhere: f.at("tls_cert"), keyWhere: f.at("tls_key") });
  (f.tables("certificate", "[[service.certificate]]") ?? []).forEach((t, i) => {
    const c = Fields.of(t, `${f.where}: certificate[${i + 1}]`, ".", CERTIFICATE_FIELDS);
    const cert = c.string("cert");
    const key = c.string("key");
    if (cert === undefined) throw c.missing("cert");
    if (key === undefined) throw c.missing("key");
    pairs.push({ cert, key, certWhere: c.at("cert"), keyWhere: c.at("key") });
  });
  // tls_min_version = 1.3 (a TOML float) and "1.3" alike.
  const minVersion = f.has("tls_min_version") ? { value: f.text("tls_min_version")!, where: f.at("tls_min_version") } : undefined;
  const ciphers = f.has("tls_ciphers") ? { value: f.string("tls_ciphers")!, where: f.at("tls_ciphers") } : undefined;
  return { pairs, ...(minVersion ? { minVersion } : {}), ...(ciphers ? { ciphers } : {}) };
}

function parseBind(raw: unknown, where: string, transport: "tcp" | "udp"): BindingConfig {
  const f = Fields.of(raw, where, ".", BIND_FIELDS);
  const protocol = f.string("protocol") ?? transport;
  if (protocol !== "tcp" && protocol !== "udp") throw new ConfigError(f.at("protocol"), `"${protocol}" is not one of tcp, udp`);
  // A binding of the other protocol would steer traffic to a socket the service does not have: the kernel would drop it all.
  if (protocol !== transport) {
    throw new ConfigError(f.at("protocol"), `a ${transport} service binds ${transport} only; make a second service (mode = "${protocol}") for the same ports`);
  }

  const prefixList = prefixes(f, "prefixes");
  if (!prefixList) throw f.missing("prefixes");
  if (prefixList.length === 0) throw new ConfigError(f.at("prefixes"), "must not be empty");

  const portItems = f.list("ports", true);
  if (!portItems) throw f.missing("ports");
  if (portItems.length === 0) throw new ConfigError(f.at("ports"), "must not be empty");
  const ports = portItems.flatMap((item) => parsePorts(item, f.at("ports")));
  return { protocol, prefixes: prefixList, ports };
}

function prefixes(f: Fields, key: string): Prefix[] | undefined {
  return f
    .list(key)
    ?.flatMap((item) => item.split(","))
    .map((text) => parsePrefix(text.trim(), f.at(key)));
}
