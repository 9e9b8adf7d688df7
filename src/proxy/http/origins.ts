import type { Socket } from "bun";

/*
 * Connections to origins, kept alive between requests (RFC 9112 §9.3) and
 * shared by every client connection of a service, per origin address:port.
 * An idle connection the origin closes is dropped as soon as its FIN or RST
 * arrives; one that dies unnoticed in between is what the caller's single
 * retry covers.
 */

/** Idle connections kept per origin address:port; more are closed when released. */
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

export class OriginConn {
  socket: Socket<OriginConn> | undefined;
  user: OriginUser | undefined;
  /** Connected (the socket is usable). */
  open = false;
  /** Closed, failed or given up: never handed out again. */
  dead = false;
  /** Requests sent over it so far, the current one included. */
  uses = 1;
  idleSince = 0;

  constructor(
    readonly pool: OriginConnections,
    readonly key: string,
    readonly host: string,
    readonly port: number,
  ) {}

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
    const c = s.data;
    c.socket = s;
    c.open = true;
    if (c.dead || !c.user) return void s.end();
    c.user.originOpen(c);
  },
  connectError(s: Socket<OriginConn>, error: Error) {
    failed(s.data, error);
  },
  data(s: Socket<OriginConn>, chunk: Uint8Array) {
    const c = s.data;
    if (c.user) return c.user.originData(c, chunk);
    // Bytes on an idle connection answer no request: it can no longer be trusted.
    c.destroy(false);
  },
  drain(s: Socket<OriginConn>) {
    s.data.user?.originDrain(s.data);
  },
  end(s: Socket<OriginConn>) {
    const c = s.data;
    if (c.user) return c.user.originEnd(c);
    c.destroy(true);
  },
  close(s: Socket<OriginConn>, error?: Error) {
    closed(s.data, error);
  },
  error(s: Socket<OriginConn>, error: Error) {
    closed(s.data, error);
  },
};

function failed(c: OriginConn, error: unknown): void {
  const user = c.user;
  c.user = undefined;
  c.dead = true;
  user?.originFailed(c, error);
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

/** The keep-alive connections of one service, by origin address:port. */
export class OriginConnections {
  private readonly idle = new Map<string, OriginConn[]>();
  opened = 0;
  reused = 0;

  /** A connection to host:port for `user`: an idle one, unless `fresh`, else a new one (not yet open). */
  get(host: string, port: number, user: OriginUser, fresh = false): OriginConn {
    const key = `${host}|${port}`;
    const list = fresh ? undefined : this.idle.get(key);
    while (list?.length) {
      const c = list.pop()!;
      if (c.dead) continue;
      c.user = user;
      c.uses++;
      this.reused++;
      return c;
    }
    const c = new OriginConn(this, key, host, port);
    c.user = user;
    this.opened++;
    Bun.connect<OriginConn>({ hostname: host, port, data: c, socket: { ...handlers, binaryType: "uint8array" } }).catch((e) => {
      if (!c.dead) failed(c, e);
    });
    return c;
  }

  /** Done with `c` after a complete exchange: keep it for the next request to its origin, or close it. */
  release(c: OriginConn, now: number): void {
    c.user = undefined;
    if (c.dead || !c.socket) return;
    let list = this.idle.get(c.key);
    if (!list) this.idle.set(c.key, (list = []));
    if (list.length >= MAX_IDLE_PER_ORIGIN) return c.destroy(true);
    c.idleSince = now;
    list.push(c);
  }

  /** Drop `c` from the idle lists (it closed). */
  forget(c: OriginConn): void {
    const list = this.idle.get(c.key);
    const i = list ? list.indexOf(c) : -1;
    if (i >= 0) list!.splice(i, 1);
  }

  /** Close idle connections older than ORIGIN_IDLE_MS. */
  sweep(now: number): void {
    for (const list of this.idle.values()) {
      while (list.length && now - list[0]!.idleSince >= ORIGIN_IDLE_MS) list[0]!.destroy(true);
    }
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
