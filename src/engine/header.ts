// The PROXY-header stage of the client pipeline (src/proxy/pipeline.ts) on
// the engine: a connection from a trusted load balancer (accept_proxy) must
// start with a PROXY v1 or v2 header naming the client, complete within
// proxy_header_timeout; only then is the client admitted (per-client limits,
// for the client it names) and the origin dialled. The parsing is the Bun
// path's (HeaderReader, src/proxy/inbound.ts).
import { endpointString } from "../log/line";
import { formatAddress } from "../config/address";
import { HeaderReader, type Ends } from "../proxy/inbound";
import { EAGAIN, EINTR, recvInto } from "../system/tcp";
import { EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLRDHUP } from "../system/epoll";
import { dial } from "./dial";
import type { Pair } from "./pair";
import { localResourceSlot, PROXY_DEADLINE_AT, PROXY_ERRORS_AT, PROXY_HEADER_ERRORS } from "./stats";

/** Bytes read per call while the header is incomplete: a v2 header is at most 16 + 65535 bytes, v1 at most 107. */
const HEADER_READ = 4096;

export function startHeader(p: Pair, own: Ends, deadline: number): void {
  p.header = new HeaderReader();
  p.headerDeadline = deadline;
  p.ends = own;
}

function refuse(p: Pair, reason: string): void {
  const i = PROXY_HEADER_ERRORS.indexOf(reason as (typeof PROXY_HEADER_ERRORS)[number]);
  p.svc.bump(PROXY_ERRORS_AT + (i < 0 ? 1 : i));
  p.cause("close", `proxy_header_${reason}`);
  p.header = undefined;
  // §2.1: "abort the connection as soon as possible so that the sender ... notice[s]".
  p.engine.finish(p, true);
}

/** The deadline passed with the header incomplete. */
export function expireHeader(p: Pair): void {
  p.svc.bump(PROXY_DEADLINE_AT);
  p.cause("timeout", "proxy_header_timeout");
  refuse(p, "timeout");
}

/** An event on the client socket while its header is read. */
export function headerEvent(p: Pair, ev: number): void {
  if (!(ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) return;
  const e = p.engine;
  const pool = e.pool;
  const b = pool.acquire();
  if (b < 0) {
    // No buffer to read the header into: reset, said in the log and counted (the pool is the engine's bound).
    p.cause("close", "buffers_exhausted");
    p.svc.bump(localResourceSlot("buffers"));
    return e.finish(p, true);
  }
  try {
    for (;;) {
      const n = recvInto(p.c, pool.address(b), HEADER_READ);
      if (n === -EAGAIN) return;
      if (n === -EINTR) continue;
      if (n < 0) return refuse(p, "truncated");
      if (n === 0) {
        // A balancer's TCP health check connects and closes without a byte: not an error.
        if (!p.header!.started) {
          p.header = undefined;
          p.cause("close", "client_fin");
          return e.finish(p, false);
        }
        return refuse(p, "truncated");
      }
      p.lastActive = e.now;
      const r = p.header!.feed(pool.view(b, 0, n), p.ends!);
      if (r === "more") continue;
      if ("error" in r) return refuse(p, r.error);
      p.header = undefined;
      // UNKNOWN and LOCAL hand back the socket's own ends: the balancer itself, no client to admit.
      if (r.ends !== p.ends) {
        const tracked = formatAddress(r.ends.client.addr);
        e.clients.seen(tracked);
        // The log names the client the header named, as Bun's path does (issue 17: "from an accepted PROXY header"),
        // its refusal by a per-client limit too (the connection's one line, at finish).
        if (p.record) {
          p.record.client = endpointString(r.ends.client);
          p.record.edge = endpointString(r.ends.edge);
        }
        const source = e.admitSource(p.svc, r.ends.client, true);
        if (source === null) {
          e.clients.refused(tracked);
          p.cause("limited", "source_limit");
          return e.finish(p, true);
        }
        if (source) p.source = source;
        p.tracked = tracked;
      }
      p.ends = r.ends;
      // More of the client's bytes may wait in the socket (edge-triggered: no new event for them): read on once connected.
      p.up.readable = true;
      if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) p.up.finSeen = true;
      // The rest is copied by dial (into the pool) before this buffer goes back.
      return dial(e, p, r.ends.client, r.ends.edge, r.rest.length ? r.rest.slice() : new Uint8Array(0));
    }
  } finally {
    pool.release(b);
  }
}
