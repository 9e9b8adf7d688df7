// A UDP flow's start and end: what it takes when the engine (engine.ts) has
// room for it (its origin endpoint, its client's count for source_connections,
// its two sockets, its PROXY/SPP header, its access log record) and gives all
// of it back at its end. Once per flow, never per datagram; the engine keeps
// the flow in its tables (by key, by descriptor) and takes it out of them.
import type { Endpoint } from "../../system/sockaddr";
import type { Epoll } from "../../system/epoll";
import type { Fd } from "../../system/fd";
import {
  bindTo,
  connectTo,
  IP_FREEBIND,
  IPV6_FREEBIND,
  openUdpSocket,
  setIntOption,
  SO_REUSEADDR,
  SOL_IP,
  SOL_IPV6,
  SOL_SOCKET,
} from "../../system/udp";
import { proxyV2Header, sppHeader } from "../proxyheader/encode";
import { bump, C, dropIndex } from "./stats";
import type { SourceKey } from "../../dispatcher/sourceabi";
import { formatEndpoint } from "../../log/access";
import { Flow, type Service } from "./flow";

/**
 * The flow from src to dst on svc, opened (sockets in `epoll`, edge-triggered) and counted as active; or
 * undefined when there is no origin, the client is at its limit or a socket could not be made (each counted
 * as a drop; a socket failure said on `log` the first time).
 */
export function openFlow(svc: Service, key: string, src: Endpoint, dst: Endpoint, now: number, epoll: Epoll, log: (line: string) => void): Flow | undefined {
  const spec = svc.spec;
  const chosen = svc.endpoints?.pick(src.addr, dst.port);
  if (svc.endpoints && !chosen) {
    bump(svc.row, dropIndex("no_origin"));
    svc.log?.emit({ event: "origin_error", client: formatEndpoint(src), edge: formatEndpoint(dst), reason: "no_origin" });
    return undefined;
  }
  // Per-client limits (source_connections): a new flow counts against the client's, every worker's together.
  let source: SourceKey | undefined;
  if (svc.counter) {
    source = svc.sourceKey(src);
    if (svc.count(source, 1) > spec.sourceLimit!.connections) {
      svc.count(source, -1);
      bump(svc.row, dropIndex("source_limit"));
      svc.log?.emit({ event: "limited", client: formatEndpoint(src), edge: formatEndpoint(dst), reason: "source_limit" });
      return undefined;
    }
  }
  let client: Fd | undefined;
  let upstream: Fd | undefined;
  try {
    client = openUdpSocket(dst.family, "flow socket");
    const c = client.raw;
    setIntOption(c, SOL_SOCKET, SO_REUSEADDR, 1, "flow socket");
    // The original destination is local (it was routed here), but may not be
    // on any interface (AnyIP routes): freebind makes bind() not care.
    if (dst.family === 4) setIntOption(c, SOL_IP, IP_FREEBIND, 1, "flow socket");
    else setIntOption(c, SOL_IPV6, IPV6_FREEBIND, 1, "flow socket");
    bindTo(c, dst, "flow socket");
    connectTo(c, src, "flow socket", "client");
    if (chosen) {
      upstream = openUdpSocket(chosen.target.family, "origin socket");
      connectTo(upstream.raw, chosen.target, "origin socket", "origin");
    }
    epoll.add(c, true);
    if (upstream) epoll.add(upstream.raw, true);
  } catch (e) {
    client?.close();
    upstream?.close();
    if (source) svc.count(source, -1);
    bump(svc.row, dropIndex("flow_setup"));
    if (svc.row[dropIndex("flow_setup")] === 1) log(`service ${spec.name}: ${(e as Error).message}`);
    return undefined;
  }
  const header = spec.proxyProtocol === "v2" ? proxyV2Header(src, dst, "dgram") : spec.proxyProtocol === "spp" ? sppHeader(src, dst) : undefined;
  const f = new Flow(key, svc, client, upstream, header, spec.proxyProtocol === "spp", now, chosen?.endpoint, chosen?.target.port ?? 0, source);
  if (chosen) chosen.endpoint.active++;
  bump(svc.row, C.flowsActive);
  bump(svc.row, C.flowsTotal);
  if (svc.log?.sampledIn()) {
    f.record = { client: formatEndpoint(src), edge: formatEndpoint(dst), origin: chosen ? formatEndpoint(chosen.target) : null, startedAt: now };
    if (svc.log.connect) svc.log.emit({ event: "connect", client: f.record.client, edge: f.record.edge, origin: f.record.origin }, true);
  }
  return f;
}

/**
 * End f: its access log line, its sockets closed (which takes them out of the epoll set: they are never
 * dup'ed), its endpoint's and its client's counts given back. The engine has taken it out of its tables.
 */
export function endFlow(f: Flow, event: string, why: string): void {
  f.ended = true;
  if (f.record) f.service.log!.closed(f.record, f.bytesIn, f.bytesOut, event, why);
  f.client.close();
  f.upstream?.close();
  if (f.endpoint) f.endpoint.active--;
  if (f.source) f.service.count(f.source, -1);
  bump(f.service.row, C.flowsActive, -1);
}
