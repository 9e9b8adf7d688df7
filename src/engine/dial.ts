// The origin side of a tcp engine connection (a Pair): pick the origin for
// its client, connect to it with a PROXY header first where the service
// sends one (proxy_protocol), and tell the pool how the connect went (passive
// ejection). The stage after the accept (engine.ts) or after a trusted
// balancer's PROXY header (header.ts); the relay itself is pair.ts's.
import type { OriginFailure } from "../origin/pool";
import { proxyV1Header, proxyV2Header } from "../proxy/proxyheader/encode";
import type { Endpoint } from "../system/sockaddr";
import { EPOLLET, EPOLLIN, EPOLLOUT, EPOLLRDHUP } from "../system/epoll";
import { errnoName } from "../system/libc";
import { noDelay, socketError, startConnect, tcpSocket } from "../system/tcp";
import { localResourceOf } from "../system/lack";
import type { TcpEngine } from "./engine";
import type { Pair } from "./pair";
import { failureOf, localResourceSlot, T } from "./stats";

/** A relayed connection's descriptors, client and origin: watched edge-triggered for input and output once (pair.ts). */
export const CONN_EVENTS = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
const EMPTY = new Uint8Array(0);

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Pick the origin for the client (the socket's peer or the PROXY header's)
 * and connect to it; `rest`: bytes that followed a PROXY header. The client
 * socket is watched already when `rest` is given (the header stage did it).
 */
export function dial(engine: TcpEngine, p: Pair, client: Endpoint | undefined, edge: Endpoint | undefined, rest: Uint8Array | undefined): void {
  const svc = p.svc;
  const c = p.c;
  p.connectDeadline = engine.now + svc.spec.connectTimeoutMs;
  const chosen = svc.endpoints.pick(client?.addr ?? EMPTY, edge?.port ?? 0);
  if (!chosen) {
    svc.originError("no_origin");
    p.cause("origin_error", "no_origin");
    return engine.finish(p, true);
  }
  const { endpoint, target } = chosen;
  // Panic (nothing eligible) is told at the end of this batch, not at the next sweep: the pool logs it and counts it.
  if (endpoint.panics > 0) engine.panicked.add(svc);
  endpoint.active++;
  p.endpoint = endpoint;
  p.originPort = target.port;
  const origin = engine.origins.get(target);
  if (p.record) p.record.origin = origin.text;
  const o = tcpSocket(target.family);
  if (o < 0) return originFailed(engine, p, "socket", -o);
  // What the client sends in two writes goes on in two without waiting for the origin's delayed ACK (listeners.ts).
  noDelay(o);
  p.o = o;
  engine.byFd[o] = p;
  if ((!rest && !engine.epoll.tryWatch(c, CONN_EVENTS)) || !engine.epoll.tryWatch(o, CONN_EVENTS)) {
    // The kernel is out of memory for epoll items: this connection cannot be served, the loop goes on.
    p.cause("close", "epoll_add_failed");
    svc.bump(localResourceSlot("epoll"));
    return engine.finish(p, true);
  }
  const header = client && edge && svc.spec.proxyProtocol !== "off" ? (svc.spec.proxyProtocol === "v1" ? proxyV1Header(client, edge) : proxyV2Header(client, edge, "stream")) : undefined;
  const first = header && rest?.length ? concat(header, rest) : (header ?? (rest?.length ? rest : undefined));
  if (first) {
    preamble(engine, p, first);
    // No buffer to hold it in: the pair is finished, and no connect may start for it.
    if (p.done) return;
  }
  // What followed the PROXY header is the client's, counted as its other bytes are (Bun's path: relay.clientData).
  if (rest?.length) {
    p.bytesIn += rest.length;
    svc.bump(T.bytesIn, rest.length);
  }
  const rc = startConnect(o, origin.sockaddr);
  if (rc < 0) originFailed(engine, p, "connect", -rc);
}

/** Bytes the origin gets first (a PROXY header), held in the client direction's buffer until the connect completes. */
function preamble(engine: TcpEngine, p: Pair, bytes: Uint8Array): void {
  const b = engine.pool.acquire();
  if (b < 0) {
    p.cause("close", "buffers_exhausted");
    p.svc.bump(localResourceSlot("buffers"));
    return engine.finish(p, true);
  }
  engine.pool.view(b, 0, bytes.length).set(bytes);
  p.hold(p.up, b, 0, bytes.length);
}

export function originConnected(engine: TcpEngine, p: Pair): void {
  p.connecting = false;
  const e = p.endpoint;
  if (!e) return;
  e.connected(p.originPort);
  if (e.failing.size > 0 && e.failing.delete(p.originPort)) engine.onOrigin(p.svc.spec.slot, e.key, p.originPort, undefined);
}

/** The origin connect failed: `code` is errno when known, else read from the socket (SO_ERROR). */
export function originFailed(engine: TcpEngine, p: Pair, stage: "socket" | "connect" | "timeout", code = p.o >= 0 ? socketError(p.o) : 0): void {
  const kind = stage === "timeout" ? "timeout" : stage === "socket" ? "other" : failureOf(code);
  p.svc.originError(kind);
  // A descriptor, memory or local port this host lacked (EMFILE, ENOBUFS, EADDRNOTAVAIL: localResourceOf) says nothing about the origin.
  const local = stage === "timeout" ? undefined : localResourceOf(errnoName(code));
  if (local) p.svc.bump(localResourceSlot(local));
  p.cause("origin_error", local ? `local_${local}` : stage === "timeout" ? "origin_connect_timeout" : `origin_${kind}`, true);
  const e = p.endpoint;
  if (e && stage !== "socket" && !local) {
    e.refused(p.originPort);
    e.connectFailed(p.originPort, p.svc.spec.eject);
    engine.onOrigin(p.svc.spec.slot, e.key, p.originPort, kind === "no_origin" ? "other" : (kind as OriginFailure));
  }
  engine.finish(p, true);
}
