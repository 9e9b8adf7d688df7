import { chmodSync, existsSync, lstatSync, mkdirSync, renameSync, rmSync, unlinkSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { dirname, join } from "node:path";
import { MAX_SOCKET_PATH, type AdminConfig } from "../config/service";
import { ConfigError } from "../errors";
import { checkSocketDirectory } from "../system/environment";
import type { AdminBackend } from "./backend";

/** A running admin server. */
export interface AdminServer {
  /** "unix:/run/edgeproxy/admin.sock", "http://127.0.0.1:9100", or "off". */
  readonly address: string;
  /** Stop serving; for a unix socket, remove its file. Safe to call more than once. */
  close(): void;
  /** Stop taking requests, let the ones under way (an upgrade's answer) finish, then close. */
  closeGracefully?(): Promise<void>;
  /**
   * An upgrade's successor serves and has taken the socket path over: stop
   * answering here (requests under way, the upgrade's own answer, finish;
   * idle keep-alive connections close, so a client's next request reaches
   * the successor instead of this process's stale figures). The path is left
   * to the successor.
   */
  handOver?(): void;
}

// How long a connect to an existing socket file may take before we call its owner alive.
const PROBE_TIMEOUT_MS = 1_000;

/*
 * What Bun's server bounds for every admin connection, on top of the API's
 * own body limit (readBody, ADMIN_MAX_BODY_BYTES, answered with a JSON 413):
 * - idleTimeout: a connection that sends nothing for this long is closed; a
 *   request head trickled a line at a time is closed too (measured with 10 s:
 *   a header line every 5 s, closed at 15 s; Bun's timer is coarse);
 * - maxRequestBodySize: Bun's own cap, kept at its default of 128 MiB and
 *   given here so it is ours: a larger declared Content-Length gets Bun's
 *   bare 413 before any route runs; anything below it meets readBody's 4 MiB.
 * Request heads are capped by Bun at 16 KiB (431), its --max-http-header-size.
 */
const ADMIN_SERVE_LIMITS = { idleTimeout: 10, maxRequestBodySize: 128 << 20 } as const;

/**
 * The admin API's app (Hono, /metrics, the dashboard), evaluated when a
 * server starts, not at process start: serve starts its admin server after
 * its services are steered, so the API's modules are not on the way to the
 * first steered connection ($EDGEPROXY_START_TRACE).
 */
async function adminApp(backend: AdminBackend, options: { token?: string } = {}): Promise<{ fetch(req: Request): Response | Promise<Response> }> {
  const { createAdminApp } = await import("./api");
  return createAdminApp(backend, options);
}

/** Serve the admin API as `config` says. Throws ConfigError for an unusable address. */
export async function startAdminServer(backend: AdminBackend, config: AdminConfig, options: { replace?: boolean; app?: { fetch(req: Request): Response | Promise<Response> } } = {}): Promise<AdminServer> {
  switch (config.kind) {
    case "off":
      return { address: "off", close() {} };
    case "unix":
      return startUnix(backend, config.path, options);
    case "tcp":
      return startTcp(backend, config.host, config.port, config.token, options);
  }
}

/*
 * options.replace: the process an upgrade starts (or a --take-over start)
 * takes the socket path over from the running one (which keeps its listener, now unreachable, until it
 * exits, and never removes a socket file it did not make).
 * options.app: serve this instead of the API over `backend` (a supervisor's).
 */
async function startUnix(backend: AdminBackend, path: string, options: { replace?: boolean; app?: { fetch(req: Request): Response | Promise<Response> } }): Promise<AdminServer> {
  const where = `admin socket ${path}`;
  socketDir(path, where);
  if (options.replace) rmSync(path, { force: true });
  else await removeStale(path, where);

  const app = options.app ?? (await adminApp(backend));
  // The umask makes the socket 0600 from bind() on, so no one can connect in between; chmod is a backstop.
  const umask = process.umask(0o177);
  // Bound under a name of our own, then renamed onto `path` (atomic: the path
  // never names a socket without a listener): Bun's stop() unlinks the name
  // it bound, so stopping this server never removes a successor's socket.
  const own = join(dirname(path), `.edgeproxy-${process.pid}.sock`);
  const bindAt = Buffer.byteLength(own) <= MAX_SOCKET_PATH ? own : path;
  if (bindAt !== path) rmSync(bindAt, { force: true });
  let server: ReturnType<typeof Bun.serve>;
  try {
    // Bun applies idleTimeout to unix sockets too (measured); its types only list it for TCP.
    server = Bun.serve({ unix: bindAt, fetch: app.fetch, ...(ADMIN_SERVE_LIMITS as { maxRequestBodySize: number }) });
  } catch (e) {
    throw new ConfigError(where, `cannot listen: ${(e as Error).message}`);
  } finally {
    process.umask(umask);
  }
  chmodSync(bindAt, 0o600);
  if (bindAt !== path) renameSync(bindAt, path);
  const inode = lstatSync(path).ino;
  // Stopped under its own name (not the path): safe whoever's socket the path names now.
  const stopSafely = bindAt !== path;

  let closed = false;
  let handedOver: Promise<void> | undefined;
  const unlink = () => {
    // Bun removes the file on stop; make sure, but never remove a socket another process made since.
    try {
      if (lstatSync(path).ino === inode) unlinkSync(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  };
  // Bun's stop() unlinks the path, whoever's socket is there now: after an
  // upgrade took the path over, ours is left to close with the process.
  const replaced = () => {
    try {
      return lstatSync(path).ino !== inode;
    } catch {
      return true;
    }
  };
  return {
    address: `unix:${path}`,
    close() {
      if (closed) return;
      closed = true;
      if (replaced()) {
        if (stopSafely) server.stop(true);
        return;
      }
      server.stop(true);
      unlink();
    },
    async closeGracefully() {
      if (handedOver) return handedOver;
      if (closed) return;
      closed = true;
      if (replaced()) {
        if (stopSafely) return server.stop(false);
        // Let the answers under way (the upgrade's own) go out first.
        for (let i = 0; i < 100 && server.pendingRequests > 0; i++) await Bun.sleep(10);
        return;
      }
      await server.stop(false);
      unlink();
    },
    handOver() {
      if (closed || !stopSafely || !replaced()) return;
      closed = true;
      // The upgrade's own answer is under way (its handler awaits this hand-over's caller): stop(false)
      // lets the answers go out, and closes the idle kept-alive connections. closeGracefully waits for it.
      handedOver = server.stop(false);
    },
  };
}

/**
 * Checked before a serve changes anything: its unix admin socket is not
 * another live server's (a stale file of a dead one is removed). Throws the
 * ConfigError startAdminServer would, so a second start is refused first.
 * With --take-over (`takeOver`) the socket is taken over with the instance
 * it belongs to (startAdminServer's `replace`), so only its directory is checked.
 */
export async function checkAdminFree(config: AdminConfig, options: { takeOver?: boolean } = {}): Promise<void> {
  if (config.kind !== "unix") return;
  const where = `admin socket ${config.path}`;
  // Writable for this user (one line naming the directory and the fix), then made if missing.
  checkSocketDirectory(config.path);
  socketDir(config.path, where);
  if (!options.takeOver) await removeStale(config.path, where);
  else if (existsSync(config.path) && !lstatSync(config.path).isSocket()) throw new ConfigError(where, "exists and is not a socket; refusing to replace it");
}

const DIR_FIX = "run as root or the directory's owner, give --admin PATH (or [admin] socket) in a writable directory, or --no-admin";

// The socket's directory; only directories we create get 0700, an existing one (/run) is the operator's.
function socketDir(path: string, where: string): void {
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new ConfigError(where, `cannot create ${dirname(path)} (${(e as NodeJS.ErrnoException).code}): ${DIR_FIX}`);
  }
}

// Remove a socket file left by a process that died; refuse if something still listens on it.
async function removeStale(path: string, where: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  if (!st.isSocket()) throw new ConfigError(where, "exists and is not a socket; refusing to replace it");
  if (await answers(path)) throw new ConfigError(where, "another server is listening on it (is edgeproxy already running?)");
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

async function answers(path: string): Promise<boolean> {
  let timer: Timer | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), PROBE_TIMEOUT_MS)));
  const connect = Bun.connect({ unix: path, socket: { data() {} } }).then(
    (s) => {
      s.end();
      return true;
    },
    (e) => {
      const code = (e as NodeJS.ErrnoException).code;
      // ECONNREFUSED: nobody listens; ENOENT: removed meanwhile. Anything else (EACCES...) is a real problem.
      if (code === "ECONNREFUSED" || code === "ENOENT") return false;
      throw new ConfigError(`admin socket ${path}`, `cannot probe the existing socket: ${(e as Error).message}`);
    },
  );
  try {
    return await Promise.race([connect, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function startTcp(backend: AdminBackend, host: string, port: number, token: string, options: { replace?: boolean; app?: { fetch(req: Request): Response | Promise<Response> } }): Promise<AdminServer> {
  const where = `admin address ${host}:${port}`;
  const hostname = loopback(host);
  if (!hostname) throw new ConfigError(where, "the TCP admin API listens on loopback only (127.0.0.0/8 or ::1)");
  if (!token) throw new ConfigError(where, "the TCP admin API needs a token");

  const app = options.app ?? (await adminApp(backend, { token }));
  let server: ReturnType<typeof Bun.serve>;
  try {
    // An upgrade's new process listens beside the old one until the old one exits.
    server = Bun.serve({ hostname, port, fetch: app.fetch, reusePort: true, ...ADMIN_SERVE_LIMITS });
  } catch (e) {
    throw new ConfigError(where, `cannot listen: ${(e as Error).message}`);
  }
  let closed = false;
  const shown = hostname.includes(":") ? `[${hostname}]` : hostname;
  return {
    address: `http://${shown}:${server.port}`,
    close() {
      if (closed) return;
      closed = true;
      server.stop(true);
    },
    async closeGracefully() {
      if (closed) return;
      closed = true;
      await server.stop(false);
    },
  };
}

/** The host as an address to bind when it is a loopback literal, else undefined. Names are refused: they may resolve elsewhere. */
export function loopback(host: string): string | undefined {
  const h = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (isIPv4(h)) return h.split(".")[0] === "127" ? h : undefined;
  // The URL parser canonicalises IPv6 (0:0::1 -> ::1).
  if (isIPv6(h) && URL.canParse(`http://[${h}]/`)) return new URL(`http://[${h}]/`).hostname === "[::1]" ? "::1" : undefined;
  return undefined;
}
