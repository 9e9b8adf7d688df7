// http services on the engine: their listeners, client connections and
// origin connections as raw descriptors on the data plane's epoll loop (the
// loop the UDP plane and the tcp engine share: src/proxy/udp/worker.ts), and
// the HTTP/1.1 code of Bun's path unchanged on top (HttpConnection, the
// keep-alive OriginConnections), over EngineSocket (httpsocket.ts). What the
// main thread keeps: the OriginPools (health checks, DNS, ejection), the
// access log's files, the metrics (this thread posts its counters). A trusted
// balancer's PROXY header is httpheader.ts's stage; origin connects, httpconnect.ts's.
import { ptr } from "bun:ffi";
import type { OriginFailure } from "../origin/member";
import { HttpConnection } from "../proxy/http/conn";
import { mustSendHeader, type EndNames, type EndNamesOrMaker, type Ends } from "../proxy/inbound";
import { SockaddrTexts } from "../log/line";
import type { FlowLogSink } from "../proxy/udp/flowlog";
import type { UdpOrigins } from "../proxy/udp/origins";
import { EPOLLIN, type Epoll } from "../system/epoll";
import { closeListeners, Fd } from "../system/fd";
import { libc } from "../system/libc";
import { AF_INET, decodeSockaddr } from "../system/sockaddr";
import { AcceptAddress, acceptBatch, AcceptPace, localAddress, resetOnClose } from "../system/tcp";
import { capLine, EngineAdmission } from "./admission";
import { EngineClients } from "./clients";
import type { SourceKey } from "../dispatcher/sourceabi";
import { CONN_EVENTS, OriginTargets } from "./httpconnect";
import { startHeader, expireHeader } from "./httpheader";
import { EngineSocket, type SocketLoop } from "./httpsocket";
import { EngineHttp, type HttpEngineReport, type HttpEngineSpec } from "./httpspec";

export type { HttpEngineReport, HttpEngineSpec } from "./httpspec";

/** One read's room: as Bun's sockets read (64 KiB). */
const READ_SIZE = 64 * 1024;
/** Shortest time between two counter posts under load (flushReports). */
const REPORT_MS = 250;
const EMPTY = new Uint8Array(0);

/** A listener of an http service; paused (out of the epoll set) for a sweep after accept failed with EMFILE and the like. */
class HttpListener {
  paused = false;
  /** How many connections a readiness takes (one, or a batch once it stays ready). */
  readonly pace = new AcceptPace();
  constructor(
    readonly svc: EngineHttp,
    readonly fd: Fd,
  ) {}
}

export class HttpEngine implements SocketLoop {
  readonly readBuf = new Uint8Array(new ArrayBuffer(READ_SIZE));
  readonly readAt = ptr(this.readBuf);
  readonly clock = { now: performance.now() };
  admission: EngineAdmission | undefined;
  /** The busiest clients of this thread's http connections, for the process's live view (as the tcp engine's). */
  readonly clients = new EngineClients(this.clock);
  readonly byFd: (EngineSocket | HttpListener | undefined)[] = [];
  private readonly services = new Map<number, EngineHttp>();
  private readonly peer = new AcceptAddress();
  /** Edge addresses as log text, by address and port (the access log). */
  private readonly edgeTexts = new SockaddrTexts();
  private laters: EngineSocket[] = [];
  /** Batches of events ended (endBatch): the listeners' AcceptPace counts them. */
  private turn = 0;
  private deferred: (() => void)[] = [];
  private toClose: EngineSocket[] = [];
  /** Origins' sockaddrs, by host and port (httpconnect.ts). */
  readonly targets = new OriginTargets();

  constructor(
    readonly epoll: Epoll,
    readonly sink: FlowLogSink,
    private readonly onOrigin: (slot: number, key: string, port: number, failure: OriginFailure | undefined) => void,
    /** `report`: an HttpEngineReport as JSON. */
    private readonly onReport: (slot: number, report: string) => void,
    private readonly onAdmission: () => void,
    private readonly log: (line: string) => void,
  ) {}

  get hasServices(): boolean {
    return this.services.size > 0;
  }

  /** Work left for after this batch (a resumed read, a deferred event): the loop must not block. */
  get pending(): boolean {
    return this.laters.length > 0 || this.deferred.length > 0;
  }

  /**
   * Nothing for a sweep to do: no connection, PROXY header, connect or
   * pooled origin connection with a deadline, no paused listener to resume,
   * no counts unsent (flushReports may hold them back REPORT_MS). The data
   * plane thread then waits for events alone (src/proxy/udp/worker.ts).
   */
  get idle(): boolean {
    if (this.dirty || this.pending || this.toClose.length) return false;
    for (const svc of this.services.values()) {
      if (svc.conns.size || svc.headers.size || svc.connecting.size || !svc.ctx.origins.empty) return false;
      for (const l of svc.listeners) {
        const x = l.closed ? undefined : this.byFd[l.raw];
        if (x instanceof HttpListener && x.paused) return false;
      }
    }
    return true;
  }

  owns(fd: number): boolean {
    return this.byFd[fd] !== undefined;
  }

  add(spec: HttpEngineSpec): void {
    this.admission ??= new EngineAdmission(spec.admission, this.onAdmission);
    const svc = new EngineHttp(spec, this, this.onOrigin);
    this.services.set(spec.slot, svc);
    for (const fd of svc.listeners) {
      this.byFd[fd.raw] = new HttpListener(svc, fd);
      this.epoll.watch(fd.raw, EPOLLIN);
    }
  }

  setOrigins(slot: number, pool: number, origins: UdpOrigins["endpoints"]): void {
    this.services.get(slot)?.pools[pool]?.update(origins);
  }

  /** Close a service's listeners; with `abort` reset its connections, else they close between requests (a drain). */
  retire(slot: number, abort: boolean): void {
    const svc = this.services.get(slot);
    if (!svc) return;
    if (!svc.retired) {
      svc.retired = true;
      closeListeners(svc.listeners, this.byFd);
    }
    svc.touched = this.dirty = this.urgent = true;
    if (abort) {
      for (const c of [...svc.conns]) c.abort();
      for (const s of [...svc.headers.keys()]) s.terminate();
    }
    else {
      svc.ctx.draining = true;
      for (const c of [...svc.ctx.active]) c.drainService();
    }
    this.endBatch();
    this.gone(svc);
  }

  closeAll(): void {
    for (const slot of [...this.services.keys()]) this.retire(slot, true);
  }

  /**
   * Events came since the counters were last posted. They are posted when
   * the loop yields (every YIELD_MS under load; idle, at its next wait's
   * end, within a sweep interval: worker.ts) at most every REPORT_MS, and
   * whenever the main thread asks (UdpPlane.sync: every admin read and the
   * shutdown summary), so reads are exact (a JSON text: a structured clone
   * of the object took 45 µs against ~10, measured).
   */
  private dirty = false;
  /** A service retired or went: its report goes at the next yield, not after REPORT_MS. */
  private urgent = false;
  private reportedAt = -Infinity;

  ready(fd: number, ev: number): void {
    this.dirty = true;
    const x = this.byFd[fd];
    if (x instanceof EngineSocket) {
      x.svc.touched = true;
      x.event(ev);
    } else if (x) {
      x.svc.touched = true;
      this.accept(x);
    }
  }

  later(s: EngineSocket): void {
    this.laters.push(s);
  }

  defer(fn: () => void): void {
    this.deferred.push(fn);
  }

  closed(s: EngineSocket): void {
    this.toClose.push(s);
  }

  /** After a batch of events: resumed reads and deferred events (bounded rounds: the rest after the next wait), then the closes. */
  endBatch(): void {
    this.turn++;
    for (let round = 0; round < 16 && (this.laters.length || this.deferred.length); round++) {
      const fns = this.deferred;
      this.deferred = [];
      for (const fn of fns) fn();
      const ls = this.laters;
      this.laters = [];
      for (const s of ls) if (!s.done) s.read();
    }
    if (this.toClose.length) {
      const list = this.toClose;
      this.toClose = [];
      for (const s of list) {
        if (this.byFd[s.fd] === s) this.byFd[s.fd] = undefined;
        libc.close(s.fd);
      }
    }
  }

  private accept(l: HttpListener): void {
    // The peer's address always: the busiest-clients count needs it (accept4 writes it, no extra call).
    const err = acceptBatch(l.fd.raw, this.peer, (c) => this.start(l.svc, c), l.pace.batch(this.turn));
    if (err === 0) return;
    // EMFILE, ENFILE, ENOBUFS: the listener stays ready; stop watching it until the next sweep instead of spinning.
    this.log(`service ${l.svc.spec.name}: accept: errno ${err}; pausing the listener for a sweep interval`);
    l.paused = true;
    this.epoll.remove(l.fd.raw);
  }

  private start(svc: EngineHttp, c: number): void {
    if (!this.admission!.admit()) {
      // Queued in the kernel before steering stopped: refused with an RST.
      const log = svc.ctx.log;
      if (log && log.sampled()) log.emit({ protocol: "tcp", ...capLine(this.peer.bytes, c, this.edgeTexts) });
      resetOnClose(c);
      libc.close(c);
      return;
    }
    // The peer as an Endpoint only where something needs more than its address text (a balancer's
    // check, the per-client count): an allocation fewer per connection.
    const peer = svc.needPeer ? decodeSockaddr(this.peer.bytes) : undefined;
    const s = new EngineSocket(this, c, peer, svc);
    this.byFd[c] = s;
    if (!this.epoll.tryWatch(c, CONN_EVENTS)) {
      // The kernel would not watch it (fs.epoll.max_user_watches, or memory): reset, counted.
      svc.ctx.stats.localResourceReset("epoll");
      this.byFd[c] = undefined;
      this.admission!.leave();
      resetOnClose(c);
      libc.close(c);
      return;
    }
    // A trusted load balancer's connection starts with a PROXY header naming the client (the pipeline's header stage: httpheader.ts);
    // the balancer is not a client of the busiest-clients count, the client its header names is.
    const balancer = peer !== undefined && svc.ctx.config.acceptProxy.length > 0 && mustSendHeader(svc.ctx.config.acceptProxy, peer);
    if (balancer) {
      const at = localAddress(c);
      const edge = at && decodeSockaddr(at);
      if (edge) return startHeader(this, svc, s, { client: peer, edge });
    }
    const tracked = this.clients.seenPeer(this.peer.bytes);
    // The client's address as text once: the count's, and the exchange's clientIp (unmapped there).
    s.remoteText = tracked;
    // The log alone needs the ends as text, and only for a line sampled in (RequestLog.begin): made then, the
    // client's from its address text and port (no Endpoint, no string per connection before), the edge's from a
    // getsockname(2) remembered per address (the shared accept buffer holds the next peer by then).
    let names: (() => EndNames | undefined) | undefined;
    if (svc.ctx.log) {
      const b = this.peer.bytes;
      const v6 = b[0]! + (b[1]! << 8) !== AF_INET;
      const port = (b[2]! << 8) | b[3]!;
      names = () => {
        if (s.done) return undefined;
        const at = localAddress(c);
        const edge = at && this.edgeTexts.text(at);
        return edge === undefined ? undefined : { client: v6 ? `[${tracked}]:${port}` : `${tracked}:${port}`, edge };
      };
    }
    const source = peer && svc.counter ? svc.admitSource(peer, false) : undefined;
    if (source === null) {
      // No events are set yet: the close reports nothing, so the cap's slot is given back here.
      this.admission!.leave();
      svc.logEnded(names?.(), performance.now(), "limited", "source_limit");
      return this.limited(s, tracked);
    }
    this.serve(svc, s, undefined, tracked, EMPTY, source, names);
  }

  /** The client's HTTP connection over `s` (after its PROXY header, if any: `ends` then are the header's, `rest` what followed it: httpheader.ts). */
  serve(svc: EngineHttp, s: EngineSocket, ends: Ends | undefined, tracked: string | undefined, rest: Uint8Array, source: SourceKey | undefined, names?: EndNamesOrMaker): void {
    const conn = new HttpConnection(s, svc.ctx, ends, names);
    svc.conns.add(conn);
    s.events = {
      data: (chunk) => conn.clientData(chunk),
      drain: () => conn.clientDrain(),
      end: () => conn.clientEnd(),
      close: (error) => {
        conn.clientClosed(error);
        if (tracked !== undefined) this.clients.closed(tracked, conn.bytes());
        svc.releaseSource(source);
        svc.conns.delete(conn);
        this.admission!.leave();
        if (svc.retired) this.gone(svc);
      },
    };
    conn.started(rest);
  }

  /** A client over a per-client limit: reset (as Bun's pipeline and the tcp engine do), counted (admitSource). */
  limited(s: EngineSocket, tracked: string): void {
    this.clients.refused(tracked);
    s.terminate();
  }

  /** A retired service with no connection left: its origin connections close, its last report goes. */
  gone(svc: EngineHttp): void {
    if (!svc.retired || svc.conns.size > 0 || svc.headers.size > 0 || !this.services.has(svc.spec.slot)) return;
    svc.ctx.origins.close();
    this.services.delete(svc.spec.slot);
    this.onReport(svc.spec.slot, JSON.stringify(svc.report()));
  }

  /** Counters that changed since the last post (the loop calls this when it yields); `force`: now, unthrottled (a sync). */
  flushReports(force = false): void {
    if (!this.dirty && !force) return;
    // Under load at most every REPORT_MS: each post wakes the main thread, which on a shared core runs
    // before this loop does again (~100–300 µs a post measured in situ, not the ~10 µs of the post itself).
    const t = performance.now();
    if (!force && !this.urgent && t - this.reportedAt < REPORT_MS) return;
    this.reportedAt = t;
    this.urgent = false;
    this.dirty = false;
    for (const svc of this.services.values()) {
      if (svc.touched) this.onReport(svc.spec.slot, JSON.stringify(svc.report()));
    }
  }

  /** Every deadline of every connection (HttpConnection.sweep), idle origin connections, listeners paused on EMFILE. */
  sweep(now: number): void {
    this.clock.now = now;
    for (const svc of this.services.values()) {
      for (const l of svc.listeners) {
        const x = l.closed ? undefined : this.byFd[l.raw];
        if (x instanceof HttpListener && x.paused) {
          x.paused = false;
          this.epoll.watch(l.raw, EPOLLIN);
        }
      }
      for (const [s, h] of svc.headers) {
        if (now < h.deadline) continue;
        svc.touched = this.dirty = true;
        expireHeader(svc, s, h);
      }
      if (svc.conns.size) {
        // A deadline may expire in this sweep: counted, so reported.
        svc.touched = this.dirty = true;
        for (const c of svc.conns) c.sweep(now);
      }
      // A connect the exchange gave up (its deadline): the descriptor goes now, not when the kernel gives up.
      for (const [s, c] of svc.connecting) {
        if (!c.dead) continue;
        svc.connecting.delete(s);
        s.terminate();
      }
      svc.ctx.origins.sweep(now);
    }
    this.endBatch();
  }
}
