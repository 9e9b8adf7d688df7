// The TCP engine: tcp services' listeners and relayed connections as raw
// descriptors on the data plane's epoll loop (the same loop, Epoll and
// thread as the UDP plane: src/proxy/udp/worker.ts). Per connection it makes
// the calls nginx's stream proxy makes: accept4 (the peer's address comes
// with it, no getpeername), socket + connect to the origin, two epoll_ctl
// ADDs, then recv/send per chunk and close; getsockname only when the edge
// address is needed (origins that follow the edge port, the access log, a
// PROXY header to send). The origin side (pick, connect, its outcome) is
// dial.ts's; a trusted balancer's PROXY header, header.ts's; the relay, pair.ts's.
import { mustSendHeader } from "../proxy/inbound";
import { expireHeader, startHeader } from "./header";
import type { OriginFailure } from "../origin/pool";
import { CONN_EVENTS, dial, originFailed } from "./dial";
import { BufferPool } from "../system/buffers";
import { EPOLLIN, type Epoll } from "../system/epoll";
import { closeListeners, type Fd } from "../system/fd";
import { libc } from "../system/libc";
import { decodeSockaddr, type Endpoint } from "../system/sockaddr";
import { AcceptAddress, acceptBatch, localAddress, resetOnClose } from "../system/tcp";
import { formatEndpoint } from "../log/access";
import { sockaddrString, SockaddrTexts } from "../log/line";
import { capLine } from "./admission";
import type { FlowLogSink } from "../proxy/udp/flowlog";
import type { PanicCounts, UdpOrigins } from "../proxy/udp/origins";
import { EngineAdmission } from "./admission";
import { Pair } from "./pair";
import { BOUNDS, localResourceSlot, SOURCE_RATE_AT, T } from "./stats";
import { OriginAddresses } from "./origins";
import type { SourceKey } from "../dispatcher/sourceabi";
import { EngineService, type TcpEngineSpec } from "./spec";
import { EngineClients, peerText } from "./clients";

export type { TcpEngineSpec } from "./spec";

/**
 * Relay buffers: 256 KiB each, 64 of them in one 16 MiB slab. A recv asks
 * for a whole buffer: bulk transfers take a quarter of the recv/send calls
 * (and ~20% less CPU per byte) of 64 KiB ones, and a small read touches only
 * the pages it fills. Buffers stay out only while a send is partial (and only
 * while the pool has room: Pair.hold), so a few are resident in practice.
 */
export const BUFFER_SIZE = 256 * 1024;
export const BUFFER_COUNT = 64;

/** What the data plane's thread is told about a tcp service on the engine. */
class Listener {
  paused = false;
  constructor(
    readonly svc: EngineService,
    readonly fd: Fd,
  ) {}
}

export class TcpEngine {
  readonly pool = new BufferPool(BUFFER_COUNT, BUFFER_SIZE);
  /**
   * Pairs and listeners by descriptor, in two arrays: each holds one class,
   * so the per-event lookup stays monomorphic (one array of both made the
   * JIT's `instanceof` check fail and recompile under connection churn).
   */
  readonly byFd: (Pair | undefined)[] = [];
  private readonly listenerByFd: (Listener | undefined)[] = [];
  private readonly services = new Map<number, EngineService>();
  private readonly waiters: Pair[] = [];
  /** Descriptors of ended pairs, closed after the current batch of events (a later event of the batch may name them). */
  private toClose: number[] = [];
  private readonly peer = new AcceptAddress();
  /** Services that sent a connection in panic during this batch (dial.ts adds them). */
  readonly panicked = new Set<EngineService>();
  private admission: EngineAdmission | undefined;
  /** The busiest clients of this thread's connections, for the process's live view. */
  readonly clients = new EngineClients(this);
  /** Edge addresses as log text, by address and port (the access log). */
  private readonly edgeTexts = new SockaddrTexts();
  /** Origin sockaddrs and log texts, per endpoint and port (dial.ts). */
  readonly origins = new OriginAddresses();
  now = performance.now();

  constructor(
    readonly epoll: Epoll,
    private readonly sink: FlowLogSink,
    /** An origin port failed a connect (failure) or connected after failing (undefined): the pool's passive ejection. */
    readonly onOrigin: (slot: number, key: string, port: number, failure: OriginFailure | undefined) => void,
    /** A service's open connections per endpoint (when changed) and its panic connections, each sweep. */
    private readonly onCounts: (slot: number, active: [string, number][], panics: PanicCounts) => void,
    /** The connection count crossed one of the admission marks: the main thread re-steers. */
    private readonly onAdmission: () => void,
    private readonly log: (line: string) => void,
  ) {}

  get hasServices(): boolean {
    return this.services.size > 0;
  }

  /**
   * Right after a sweep: nothing for the next one to do until an event
   * comes but the busiest-clients copy (clients.dueAt). No connection open
   * (no deadline to watch), so every count changed by the last close went
   * in this sweep (EngineService.report); a listener paused on EMFILE was
   * resumed by the sweep itself. The worker then waits for events, or
   * until the copy is due (worker.ts).
   */
  get idle(): boolean {
    for (const svc of this.services.values()) if (svc.pairs.size) return false;
    return true;
  }

  owns(fd: number): boolean {
    return this.byFd[fd] !== undefined || this.listenerByFd[fd] !== undefined;
  }

  add(spec: TcpEngineSpec): void {
    this.admission ??= new EngineAdmission(spec.admission, this.onAdmission);
    const svc = new EngineService(spec, this.sink);
    this.services.set(spec.slot, svc);
    for (const fd of svc.listeners) {
      this.listenerByFd[fd.raw] = new Listener(svc, fd);
      // Level-triggered: a batch left unaccepted (system/tcp.ts ACCEPT_BATCH) is reported again.
      this.epoll.watch(fd.raw, EPOLLIN);
    }
  }

  setOrigins(slot: number, endpoints: UdpOrigins["endpoints"]): void {
    this.services.get(slot)?.endpoints.update(endpoints);
  }

  /** Close a service's listeners; with `abort` reset its connections too, else they run until done or idle. */
  retire(slot: number, abort: boolean): void {
    const svc = this.services.get(slot);
    if (!svc) return;
    if (!svc.retired) {
      svc.retired = true;
      closeListeners(svc.listeners, this.listenerByFd);
    }
    if (abort) for (const p of [...svc.pairs]) this.finish(p, true);
    this.flushCloses();
    if (svc.pairs.size === 0) this.services.delete(slot);
  }

  closeAll(): void {
    for (const slot of [...this.services.keys()]) this.retire(slot, true);
  }

  /** An event for a descriptor this engine owns. */
  ready(fd: number, ev: number): void {
    const p = this.byFd[fd];
    if (p !== undefined) return p.event_(fd, ev);
    const l = this.listenerByFd[fd];
    if (l !== undefined) this.accept(l);
  }

  /** After a batch of events: close what ended in it. */
  endBatch(): void {
    if (this.toClose.length) this.flushCloses();
    if (this.panicked.size) {
      for (const svc of this.panicked) svc.report(this.onCounts);
      this.panicked.clear();
    }
  }

  private flushCloses(): void {
    const fds = this.toClose;
    this.toClose = [];
    for (const fd of fds) {
      this.byFd[fd] = undefined;
      // The last descriptor of the socket: close(2) also takes it out of the epoll set.
      libc.close(fd);
    }
  }

  private accept(l: Listener): void {
    // The peer's address always: the busiest-clients count needs it (accept4 writes it, no extra call).
    const err = acceptBatch(l.fd.raw, this.peer, (c) => this.start(l.svc, c));
    if (err === 0) return;
    // EMFILE, ENFILE, ENOBUFS: the listener stays ready; stop watching it until the next sweep instead of spinning.
    this.log(`service ${l.svc.spec.name}: accept: errno ${err}; pausing the listener for a sweep interval`);
    l.paused = true;
    this.epoll.remove(l.fd.raw);
  }

  private start(svc: EngineService, c: number): void {
    if (!this.admission!.admit()) {
      // Queued in the kernel before steering stopped: refused with an RST.
      svc.bump(T.capRefused);
      if (svc.log) svc.log.emit(capLine(this.peer.bytes, c, this.edgeTexts));
      resetOnClose(c);
      libc.close(c);
      return;
    }
    const client = svc.needPeer ? decodeSockaddr(this.peer.bytes) : undefined;
    // A trusted load balancer's connection starts with a PROXY header naming the client (header.ts).
    const balancer = client !== undefined && svc.acceptProxy.length > 0 && mustSendHeader(svc.acceptProxy, client);
    // The peer is the client unless it is a trusted load balancer, whose header names the client (header.ts counts that one).
    const tracked = balancer ? undefined : this.clients.seenPeer(this.peer.bytes);
    // source_connections: the program refuses SYNs of a client at its limit; this counts the ones that got through
    // (+1 here, -1 at close) and refuses the few that raced each other's accept (proxy/sourcelimit.ts).
    let source: SourceKey | undefined | null;
    if (client && !balancer) {
      source = this.admitSource(svc, client);
      if (source === null) {
        this.clients.refused(tracked!);
        this.admission!.leave();
        resetOnClose(c);
        libc.close(c);
        return;
      }
    }
    svc.bump(T.active);
    svc.bump(T.total);
    const p = new Pair(this, svc, c, this.now);
    this.byFd[c] = p;
    svc.pairs.add(p);
    if (source) p.source = source;
    p.tracked = tracked;
    let edge: Endpoint | undefined;
    // A connection sampled out of the log (access_log_sample, drawn now) costs it nothing more: no getsockname.
    const logged = svc.log !== undefined && svc.log.sampledIn();
    if (svc.needEdge || logged) {
      const at = localAddress(c);
      if (at && svc.needEdge) edge = decodeSockaddr(at);
      // The log's texts straight from the sockaddr bytes (no Endpoint for it): the client's made for
      // its own connection (its address text the one the busiest-clients count remembers, plus the
      // port), the edge's remembered by address (SockaddrTexts).
      if (at && logged) {
        const clientText = tracked === undefined ? sockaddrString(this.peer.bytes) : peerText(tracked, this.peer.bytes);
        const edgeText = this.edgeTexts.text(at);
        // The pair's start (the loop's clock at this batch) is the line's too: no clock read per connection.
        if (clientText !== undefined && edgeText !== undefined) p.record = { client: clientText, edge: edgeText, origin: null, startedAt: p.startedAt };
      }
    }
    if (balancer && edge) {
      if (!this.epoll.tryWatch(c, CONN_EVENTS)) {
        p.cause("close", "epoll_add_failed");
        svc.bump(localResourceSlot("epoll"));
        return this.finish(p, true);
      }
      return startHeader(p, { client, edge }, this.now + svc.spec.proxyHeaderMs);
    }
    dial(this, p, client, edge, undefined);
  }

  /**
   * Count a client against source_connections: its key, undefined when not
   * counted, null when it is over the limit (refused: counted and logged).
   * `named`: the client a PROXY header named, rate-charged here (the program
   * charged its load balancer, which is exempt).
   */
  admitSource(svc: EngineService, client: Endpoint, named = false): SourceKey | undefined | null {
    const limit = svc.spec.sourceLimit;
    if (!limit) return undefined;
    const key: SourceKey = { service: limit.service, addr: client.addr, prefixLen: client.family === 4 ? 32 : limit.prefixV6 };
    if (named && svc.rateExceeded(key)) svc.bump(SOURCE_RATE_AT);
    else if (svc.count(key, 1) > limit.connections) {
      svc.count(key, -1);
      svc.bump(T.sourceRefused);
    } else return key;
    // A client a PROXY header named is refused on a Pair, whose line (finish) says so: one line per connection.
    if (svc.log && !named) svc.log.emit({ event: "limited", client: formatEndpoint(client), bytes_in: 0, bytes_out: 0, duration_ms: 0, reason: "source_limit" });
    return null;
  }

  /** Unsent bytes moved out of the pool (it ran low): counted, for the profile and metrics. */
  spilled(bytes: number): void {
    this.spills++;
    this.spilledBytes += bytes;
  }

  spills = 0;
  spilledBytes = 0;

  waitForBuffer(p: Pair): void {
    if (p.waiting) return;
    p.waiting = true;
    this.waiters.push(p);
  }

  /** A buffer came back: a pair waiting for one reads again. */
  bufferFreed(): void {
    while (this.waiters.length && this.pool.inUse < this.pool.count) {
      const p = this.waiters.shift()!;
      p.waiting = false;
      if (p.done) continue;
      if (p.up.readable) p.pump(p.up);
      if (!p.done && p.down.readable && !p.connecting) p.pump(p.down);
    }
  }

  /** End a pair: with `reset`, RST to both peers (SO_LINGER 0), else FIN. Its descriptors close after the batch. */
  finish(p: Pair, reset: boolean): void {
    if (p.done) return;
    p.done = true;
    if (reset) p.armReset();
    p.releaseBuffers();
    this.toClose.push(p.c);
    if (p.o >= 0) this.toClose.push(p.o);
    const svc = p.svc;
    svc.pairs.delete(p);
    this.admission!.leave();
    svc.bump(T.active, -1);
    const seconds = (this.now - p.startedAt) / 1000;
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]!) i++;
    svc.bump(T.duration + i);
    svc.bump(T.durationSum, seconds);
    svc.bump(T.durationCount);
    if (p.endpoint) p.endpoint.active--;
    if (p.source) svc.count(p.source, -1);
    if (p.tracked !== undefined) this.clients.closed(p.tracked, p.bytesIn + p.bytesOut);
    if (svc.log && p.record) svc.log.closed(p.record, p.bytesIn, p.bytesOut, p.event ?? "close", p.why ?? "shutdown", this.now);
    if (this.waiters.length) this.bufferFreed();
    if (svc.retired && svc.pairs.size === 0) this.services.delete(svc.spec.slot);
  }

  /** Deadlines: the origin connect and the idle timeout, on the loop's coarse clock. */
  sweep(now: number): void {
    this.now = now;
    for (const svc of this.services.values()) {
      for (const l of svc.listeners) {
        const x = l.closed ? undefined : this.listenerByFd[l.raw];
        if (x?.paused) {
          x.paused = false;
          this.epoll.watch(l.raw, EPOLLIN);
        }
      }
      svc.report(this.onCounts);
      const idle = svc.spec.idleTimeoutMs;
      for (const p of svc.pairs) {
        if (p.header) {
          if (now >= p.headerDeadline) expireHeader(p);
        } else if (p.connecting) {
          if (now >= p.connectDeadline) originFailed(this, p, "timeout");
        } else if (now - p.lastActive >= idle) {
          svc.bump(T.idleTimeouts);
          p.cause("timeout", "idle_timeout");
          this.finish(p, false);
        }
      }
    }
    this.flushCloses();
  }
}
