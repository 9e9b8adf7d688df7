// The origin connections of http services on the engine: the
// OriginConnections' connector (src/proxy/http/origins.ts) as a non-blocking
// connect on a raw descriptor in the engine's epoll set, its events handed to
// the exchange's OriginConn (originEvents) as Bun's socket handlers hand them
// on Bun's path. The origins' sockaddrs are made once per host and port.
import { parseAddress } from "../config/address";
import { originEvents, type OriginConn } from "../proxy/http/origins";
import { encodeSockaddr, type Endpoint } from "../system/sockaddr";
import { EPOLLET, EPOLLIN, EPOLLOUT, EPOLLRDHUP } from "../system/epoll";
import { noDelay, startConnect, tcpSocket } from "../system/tcp";
import type { HttpEngine } from "./http";
import { EngineSocket, errnoError } from "./httpsocket";
import type { EngineHttp } from "./httpspec";

/** An engine socket's events, a client's or an origin's: edge-triggered input and output, watched once. */
export const CONN_EVENTS = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

/** Origin hosts and ports as connect(2)'s sockaddr and the socket's peer, made once each (at most this many, then emptied). */
const TARGETS = 4096;

export class OriginTargets {
  private readonly byKey = new Map<string, { sa: Uint8Array; target: Endpoint }>();

  get(host: string, port: number): { sa: Uint8Array; target: Endpoint } | undefined {
    const key = `${host}|${port}`;
    let t = this.byKey.get(key);
    if (!t) {
      const addr = parseAddress(host);
      if (!addr) return undefined;
      const target: Endpoint = { family: addr.length === 4 ? 4 : 6, addr, port };
      if (this.byKey.size >= TARGETS) this.byKey.clear();
      this.byKey.set(key, (t = { sa: encodeSockaddr(target), target }));
    }
    return t;
  }
}

/** The OriginConnections' connector: a non-blocking connect on a raw descriptor; its events go to `c` (originEvents). */
export function connectOrigin(engine: HttpEngine, svc: EngineHttp, c: OriginConn): void {
  const to = engine.targets.get(c.host, c.port);
  const fd = to ? tcpSocket(to.target.family) : -22;
  // Failures are told after this call returns (as Bun's are): the exchange has not attached `c` yet.
  if (fd < 0) return engine.defer(() => c.dead || originEvents.failed(c, errnoError(-fd, "socket")));
  // A request's body goes right after its head, unacknowledged yet: no Nagle wait (as Bun's connects).
  noDelay(fd);
  const s = new EngineSocket(engine, fd, to!.target, svc);
  s.connecting = true;
  s.readFirst = true;
  engine.byFd[fd] = s;
  svc.connecting.set(s, c);
  s.events = {
    connected: (error) => {
      svc.connecting.delete(s);
      if (error) return void (c.dead || originEvents.failed(c, error));
      originEvents.open(c, s);
    },
    data: (chunk) => originEvents.data(c, chunk),
    drain: () => originEvents.drain(c),
    end: () => originEvents.end(c),
    close: (error) => originEvents.closed(c, error),
  };
  if (!engine.epoll.tryWatch(fd, CONN_EVENTS)) {
    svc.ctx.stats.localResourceReset("epoll");
    s.terminate();
    svc.connecting.delete(s);
    return engine.defer(() => c.dead || originEvents.failed(c, errnoError(12, "epoll_ctl")));
  }
  const rc = startConnect(fd, to!.sa);
  if (rc < 0) {
    s.terminate();
    svc.connecting.delete(s);
    engine.defer(() => c.dead || originEvents.failed(c, errnoError(-rc, "connect")));
  }
}
