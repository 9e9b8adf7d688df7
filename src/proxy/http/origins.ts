import type { Socket } from "bun";
import { OriginTlsError, type OriginTls } from "../../origin/tls";
import type { HttpSocket } from "./socket";

/*
 * Connections to origins, kept alive between requests (RFC 9112 §9.3) and
 * shared by every client connection of a service, per origin address:port.
 * An idle connection the origin closes is dropped as soon as its FIN or RST
 * arrives; one that dies unnoticed in between is what the caller's single
 * retry covers.
 *
 * With origin_tls a connection is "open" only once its handshake passed the
 * pool's verdict (OriginTls.verdict): the exchange's connect deadline covers
 * the handshake, and a refused one is a failed connect. Kept-alive TLS
 * connections are reused like plain ones, keyed by the pool's TLS settings
 * and SNI too, so two routes to one address with different TLS never share.
 */

/**
 * Idle connections kept per origin address:port, at least; more while as
 * many of the pool's were in use lately (see release()).
 */
export const MAX_IDLE_PER_ORIGIN = 128;
/** Idle connections older than this are closed (below common origin keep-alive timeouts, nginx 75 s). */
export const ORIGIN_IDLE_MS = 30_000;

/** The exchange currently using an origin connection: it gets that connection's events. */
export interface OriginUser {
  originOpen(c: OriginConn): void;
  originFailed(c: OriginConn, error: unknown): void;
  originData(c: OriginConn, chunk: Uint8Array): void;
  originDrain(c: OriginConn): void;
  originEnd(c: OriginConn): void;
  originClosed(c: OriginConn, error?: Error): void;
}

/** The pool's origin TLS and the origin's configured host (its name is the SNI). */
export interface OriginTlsTarget {
  readonly tls: OriginTls;
  readonly originHost: string;
}

export class OriginConn {
  socket: HttpSocket | undefined;
  user: OriginUser | undefined;
  /** Connected (the socket is usable): over TLS, the handshake passed. */
  open = false;
  /** origin_tls: the TCP connect is done and the handshake under way (a connect timeout now is a TLS timeout). */
  handshaking = false;
  /** Closed, failed or given up: never handed out again. */
  dead = false;
  /** Requests sent over it so far, the current one included. */
  uses = 1;
  idleSince = 0;
  /** In its pool's idle list. */
  idle = false;

  constructor(
    readonly pool: OriginConnections,
    readonly key: string,
    readonly host: string,
    readonly port: number,
    /** origin_tls: what get() was given, for a retry on a fresh connection. */
    readonly tlsTarget?: OriginTlsTarget,
  ) {}

  get tls(): OriginTls | undefined {
    return this.tlsTarget?.tls;
  }

  /** Give the connection up: FIN (graceful) or RST. Its events stop reaching the user. */
  destroy(graceful: boolean): void {
    this.user = undefined;
    if (this.dead) return;
    this.dead = true;
    this.pool.forget(this);
    // Not connected yet: the open handler closes it when it comes.
    if (this.socket) graceful ? this.socket.end() : this.socket.terminate();
  }
}

const handlers = {
  open(s: Socket<OriginConn>) {
    originEvents.open(s.data, s);
  },
  connectError(s: Socket<OriginConn>, error: Error) {
    // Bun reports a connect that fails at once (EADDRNOTAVAIL, EMFILE) inside Bun.connect, before the caller
    // of OriginConnections.get holds the connection, which would then ignore it and wait for its connect
    // deadline: its user hears of it a microtask later, as from the engine's connector (engine.defer).
    failed(s.data, error, true);
  },
  data(s: Socket<OriginConn>, chunk: Uint8Array) {
    originEvents.data(s.data, chunk);
  },
  drain(s: Socket<OriginConn>) {
    originEvents.drain(s.data);
  },
  end(s: Socket<OriginConn>) {
    originEvents.end(s.data);
  },
  close(s: Socket<OriginConn>, error?: Error) {
    closed(s.data, error);
  },
  error(s: Socket<OriginConn>, error: Error) {
    closed(s.data, error);
  },
};

/** origin_tls: `open` is the TCP connect only; the connection is usable at a handshake the pool accepts. */
const tlsHandlers = {
  ...handlers,
  open(s: Socket<OriginConn>) {
    const c = s.data;
    c.socket = s;
    c.handshaking = true;
    if (c.dead || !c.user) return void s.end();
  },
  handshake(s: Socket<OriginConn>, success: boolean, error: Error | null) {
    const c = s.data;
    c.handshaking = false;
    if (c.dead) return void s.terminate();
    const refused = c.tls!.verdict(success, error);
    if (refused) {
      // failed() first: terminate() runs the close handler at once, which would report a plain close.
      failed(c, refused);
      return void s.terminate();
    }
    handlers.open(s);
  },
  close(s: Socket<OriginConn>, error?: Error) {
    const c = s.data;
    // Closed before the handshake passed: a failed connect, not a connection that ended.
    if (!c.open && !c.dead) return failed(c, new OriginTlsError("protocol", (error as { code?: string } | undefined)?.code ?? "closed during the handshake"));
    closed(c, error);
  },
  error(s: Socket<OriginConn>, error: Error) {
    tlsHandlers.close(s, error);
  },
};

/** `c` failed to connect: out of the pool now; its user told now or, `later`, a microtask later (once). */
function failed(c: OriginConn, error: unknown, later = false): void {
  const user = c.user;
  c.user = undefined;
  if (!c.dead) {
    c.dead = true;
    c.pool.forget(c);
  }
  if (user && later) queueMicrotask(() => user.originFailed(c, error));
  else user?.originFailed(c, error);
}

function closed(c: OriginConn, error?: Error): void {
  const user = c.user;
  c.user = undefined;
  if (!c.dead) {
    c.dead = true;
    c.pool.forget(c);
  }
  user?.originClosed(c, error);
}

/**
 * The transport's events for an origin connection (`c` is the socket's
 * OriginConn): what a connector calls. Bun's handlers below are these; the
 * engine's descriptors call them too (src/engine/httpsocket.ts).
 */
export const originEvents = {
  open(c: OriginConn, socket: HttpSocket): void {
    c.socket = socket;
    c.open = true;
    if (c.dead || !c.user) return void socket.end();
    c.user.originOpen(c);
  },
  failed,
  data(c: OriginConn, chunk: Uint8Array): void {
    if (c.user) return c.user.originData(c, chunk);
    // Bytes on an idle connection answer no request: it can no longer be trusted.
    c.destroy(false);
  },
  drain(c: OriginConn): void {
    c.user?.originDrain(c);
  },
  end(c: OriginConn): void {
    if (c.user) return c.user.originEnd(c);
    c.destroy(true);
  },
  closed,
};

/** Opens the connection `c` names (c.host, c.port; with `tls` over TLS) and reports through originEvents. */
export type OriginConnector = (c: OriginConn, tls: ReturnType<OriginTls["options"]> | undefined) => void;

/** Bun's sockets. */
const bunConnector: OriginConnector = (c, options) => {
  const socket = { ...(options ? tlsHandlers : handlers), binaryType: "uint8array" as const };
  try {
    Bun.connect<OriginConn>({ hostname: c.host, port: c.port, data: c, ...(options ? { tls: options } : {}), socket }).catch((e) => {
      if (!c.dead) failed(c, e);
    });
  } catch (e) {
    // Bun refuses some TLS options synchronously (a key not matching its certificate; the config checks that).
    queueMicrotask(() => {
      if (!c.dead) failed(c, e);
    });
  }
};

/** The keep-alive connections of one service, by origin address:port. */
export class OriginConnections {
  /** `connect`: the transport (Bun's sockets unless the engine's). */
  constructor(private readonly connect: OriginConnector = bunConnector) {}

  private readonly idle = new Map<string, OriginConn[]>();
  opened = 0;
  reused = 0;
  /** Connections not dead: idle, in use or connecting. */
  private live = 0;
  private idleTotal = 0;
  /** The most connections in use at once since `peakFrom` (a window of ORIGIN_IDLE_MS). */
  private busyPeak = 0;
  private peakFrom = 0;

  /**
   * A connection to host:port for `user`: an idle one, unless `fresh`, else a
   * new one (not yet open). `tls`: the pool's origin TLS and the origin's
   * configured host (its name is the SNI).
   */
  get(host: string, port: number, user: OriginUser, fresh = false, tls?: OriginTlsTarget): OriginConn {
    const options = tls?.tls.options(tls.originHost);
    const key = tls ? `${host}|${port}|tls${tls.tls.id}|${options!.serverName}` : this.plainKey(host, port);
    const list = fresh ? undefined : this.idle.get(key);
    while (list?.length) {
      const c = list.pop()!;
      c.idle = false;
      this.idleTotal--;
      if (c.dead) continue;
      c.user = user;
      c.uses++;
      this.reused++;
      this.inUse();
      return c;
    }
    const c = new OriginConn(this, key, host, port, tls);
    c.user = user;
    this.opened++;
    this.live++;
    this.inUse();
    this.connect(c, options);
    return c;
  }

  /**
   * The idle lists' key of a plain origin, the same string object while the
   * requests go to one origin: no new string to build and hash per request
   * (a Map lookup by a fresh template string cost ~2% of a keep-alive request).
   */
  private plainKey(host: string, port: number): string {
    if (host !== this.keyHost || port !== this.keyPort) {
      this.keyHost = host;
      this.keyPort = port;
      this.keyText = `${host}|${port}`;
    }
    return this.keyText;
  }
  private keyHost = "";
  private keyPort = -1;
  private keyText = "";

  private inUse(): void {
    const busy = this.live - this.idleTotal;
    if (busy > this.busyPeak) this.busyPeak = busy;
  }

  /** Done with `c` after a complete exchange: keep it for the next request to its origin, or close it. */
  release(c: OriginConn, now: number): void {
    c.user = undefined;
    if (c.dead || !c.socket) return;
    let list = this.idle.get(c.key);
    if (!list) this.idle.set(c.key, (list = []));
    // Closing it while the load lately needed as many only makes a later
    // request connect anew: with h2load's 160 streams in flight and a cap of
    // 128, one request in 20 connected (measured, with 3% of the CPU in
    // connect()). The idle ones stay bounded by what the connection cap let
    // be in use within ORIGIN_IDLE_MS, and close after ORIGIN_IDLE_MS.
    if (list.length >= MAX_IDLE_PER_ORIGIN && list.length >= this.busyPeak) return c.destroy(true);
    c.idleSince = now;
    c.idle = true;
    this.idleTotal++;
    list.push(c);
  }

  /** `c` is dead (closed, failed or given up): it no longer counts, and leaves the idle lists. */
  forget(c: OriginConn): void {
    this.live--;
    if (!c.idle) return;
    c.idle = false;
    this.idleTotal--;
    const list = this.idle.get(c.key);
    const i = list ? list.indexOf(c) : -1;
    if (i >= 0) list!.splice(i, 1);
  }

  /** Close idle connections older than ORIGIN_IDLE_MS. */
  sweep(now: number): void {
    if (now - this.peakFrom >= ORIGIN_IDLE_MS) {
      this.peakFrom = now;
      this.busyPeak = this.live - this.idleTotal;
    }
    for (const list of this.idle.values()) {
      while (list.length && now - list[0]!.idleSince >= ORIGIN_IDLE_MS) list[0]!.destroy(true);
    }
  }

  /** No connection (idle, in use or connecting): nothing for sweep() to expire. */
  get empty(): boolean {
    return this.live === 0;
  }

  get idleCount(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  close(): void {
    for (const list of [...this.idle.values()]) for (const c of [...list]) c.destroy(true);
    this.idle.clear();
  }
}
