import { constants } from "node:os";
// The UDP data plane: flows keyed by (client ip:port, original destination
// ip:port), each with a socket bound to the original destination and
// connected to the client (so replies leave from the address the client sent
// to, and the kernel delivers the client's later datagrams straight to it:
// connected UDP sockets win the lookup before sk_lookup runs,
// net/ipv4/udp.c:__udp4_lib_lookup) and, with an origin, a socket connected
// to the origin. Runs on one thread, driven by the epoll loop in worker.ts.
import { errno } from "../../system/libc";
import type { Endpoint } from "../../system/sockaddr";
import type { Epoll } from "../../system/epoll";
import { closeListeners } from "../../system/fd";
import { DatagramBatch, MAX_DATAGRAM } from "./batch";
import { hasSppHeader, SPP_HEADER_SIZE } from "../proxyheader/encode";
import type { PanicCounts, UdpOrigins } from "./origins";
import { bump, C, dropIndex, ROW, type UdpDropReason } from "./stats";
import { formatEndpoint } from "../../log/access";
import type { FlowLogSink } from "./flowlog";
import { Flow, keyOf, Service, type UdpServiceSpec } from "./flow";
import { endFlow, openFlow } from "./flowlife";
import { SendRing } from "./sendring";

const { EAGAIN, ECONNREFUSED, EMSGSIZE } = constants.errno;

/** Batches read from one socket per readiness event, so one busy socket cannot starve the rest. */
const ROUNDS = 8;
/** The send ring's staging area: a turn's datagrams are copied here until its flush. */
const STAGE_BYTES = 256 * 1024;

/** Flows, the sockets they own, and the forwarding between them. */
export class Engine {
  /**
   * The receive buffers (~1 MiB pinned), with the send ring's staging area when there is a ring: made at the
   * first UDP service (setUp), so a thread serving only tcp or http holds neither, nor says io_uring is missing.
   */
  private batch!: DatagramBatch;
  /** The turn's sends, submitted together at flush(); absent: each datagram is sent with send(2) at once. */
  private sendRing: SendRing<Flow> | undefined;
  private readonly byFd: (Service | Flow | undefined)[] = [];
  private readonly flows = new Map<string, Flow>();
  /** Flows the client has sent one datagram on, oldest first: evicted first when the cap is full. */
  private readonly unconfirmed = new Map<string, Flow>();
  private readonly services = new Map<number, Service>();
  private again: number[] = [];
  now = performance.now();

  constructor(
    private readonly epoll: Epoll,
    private readonly counters: Float64Array,
    private readonly maxFlows: number,
    private readonly log: (line: string) => void,
    /** A retired service's last flow ended: its slot is free. */
    private readonly onRetired: (slot: number) => void,
    /** An endpoint's origin port refused a flow, or answered again after a refusal. */
    private readonly onOrigin: (slot: number, key: string, port: number, ok: boolean) => void = () => {},
    /** Flows opened in panic (no endpoint eligible), per endpoint, since the last report. */
    private readonly onPanics: (slot: number, counts: PanicCounts) => void = () => {},
    /** Where services' access log lines go (absent: no service logs). */
    private readonly logSink?: FlowLogSink,
    /** Submit sends through io_uring, a turn at a time (false, or io_uring unavailable: send(2) per datagram). */
    private readonly useRing = true,
  ) {}

  /** Datagrams sent through the ring so far (undefined: no ring, yet or at all). */
  get ringSends(): number | undefined {
    return this.sendRing?.sends;
  }

  /** The buffers and, when wanted and available, the send ring: once, at the first UDP service. */
  private setUp(): void {
    if (this.useRing) {
      const batch = new DatagramBatch(16, STAGE_BYTES);
      try {
        this.sendRing = new SendRing<Flow>(batch.data, batch.dataPtr, batch.stageAt, STAGE_BYTES, (f, toClient, length, res) => this.sent(f, toClient, length, res));
        this.batch = batch;
        return;
      } catch (e) {
        this.log(`udp data plane: io_uring unavailable, sending datagram by datagram: ${(e as Error).message}`);
      }
    }
    this.batch = new DatagramBatch(16);
  }

  /** Submit the sends queued this turn (the worker calls it before it waits again). */
  flush(): void {
    const r = this.sendRing;
    if (!r) return;
    const failures = r.failures;
    r.flush();
    if (r.broken) {
      // Sends the kernel may still hold: the ring goes, and every later datagram is sent by send(2).
      this.log(`udp data plane: io_uring left sends uncompleted (${r.lastFailure}; counted as send_failed): sending datagram by datagram from now on`);
      r.close();
      this.sendRing = undefined;
      return;
    }
    // Counted per datagram (send_failed); said once, the first time.
    if (failures === 0 && r.failures > 0) this.log(`udp data plane: io_uring refused a batch of sends (counted as send_failed): ${r.lastFailure}`);
  }

  // ICMP port unreachable from the origin: the flow ends, and the pool hears of it.
  private refused(f: Flow): void {
    this.drop(f.service, "origin_refused");
    if (f.endpoint) {
      f.endpoint.refused(f.originPort);
      this.onOrigin(f.service.spec.slot, f.endpoint.key, f.originPort, false);
    }
    this.close(f, "origin_error", "origin_refused");
  }

  /** The shortest idle timeout of the services, for the sweep interval. */
  get minIdleMs(): number {
    let min = 30_000;
    for (const s of this.services.values()) min = Math.min(min, s.spec.idleMs);
    return min;
  }

  add(spec: UdpServiceSpec): void {
    if (!this.batch) this.setUp();
    // The main thread zeroed the row when it gave out the slot.
    const svc = new Service(spec, this.counters.subarray(spec.slot * ROW, (spec.slot + 1) * ROW), this.logSink);
    this.services.set(spec.slot, svc);
    for (const l of svc.listeners) {
      this.byFd[l.raw] = svc;
      this.epoll.add(l.raw);
    }
  }

  /** A service's eligible origin endpoints changed (main thread: health, ejection, DNS). Open flows keep theirs. */
  setOrigins(slot: number, endpoints: UdpOrigins["endpoints"]): void {
    this.services.get(slot)?.endpoints?.update(endpoints);
  }

  /** Close a service's listeners; with `abort` its flows too. Its remaining flows run until idle. */
  retire(slot: number, abort: boolean): void {
    const svc = this.services.get(slot);
    if (!svc) return;
    if (!svc.retired) {
      svc.retired = true;
      closeListeners(svc.listeners, this.byFd);
    }
    if (abort) for (const f of [...this.flows.values()]) if (f.service === svc) this.close(f, "close", "shutdown");
    this.settle(svc);
  }

  /** Handle readiness of fd. */
  ready(fd: number): void {
    const o = this.byFd[fd];
    if (o === undefined) return;
    if (o.kind === "listener") this.fromListener(o, fd);
    else if (fd === o.client.raw) this.fromClient(o);
    else this.fromOrigin(o);
  }

  /** Close flows idle for longer than their service allows; report panic flows (batched here, not a message per flow). */
  sweep(): void {
    for (const [slot, svc] of this.services) {
      const counts = svc.endpoints?.takePanics();
      if (counts?.length) this.onPanics(slot, counts);
    }
    for (const f of this.flows.values()) {
      if (this.now - f.last > f.service.spec.idleMs) {
        bump(f.service.row, C.flowsExpired);
        this.close(f, "timeout", "idle_timeout");
      }
    }
  }

  closeAll(): void {
    for (const f of [...this.flows.values()]) this.close(f, "close", "shutdown");
    for (const slot of [...this.services.keys()]) this.retire(slot, true);
    this.flush();
    this.sendRing?.close();
  }

  private drop(svc: Service, reason: UdpDropReason): void {
    bump(svc.row, dropIndex(reason));
  }

  // A datagram on the steered socket: the first of a flow (or one that raced
  // the flow's socket into being).
  private fromListener(svc: Service, fd: number): void {
    const b = this.batch;
    // Bounded per wake-up, so one busy listener cannot starve the flows.
    for (let round = 0; round < ROUNDS; round++) {
      const n = b.recv(fd);
      if (n <= 0) return;
      for (let i = 0; i < n; i++) {
        const len = b.length(i);
        if (b.truncated(i)) {
          this.drop(svc, "truncated");
          continue;
        }
        const src = b.source(i);
        const dst = b.originalDestination(i);
        if (!src || !dst) {
          this.drop(svc, "no_destination");
          continue;
        }
        const key = keyOf(src, dst);
        const flow = this.flows.get(key) ?? this.open(svc, key, src, dst);
        if (flow) this.fromClientAt(flow, b.dataAt(i), len);
      }
      if (n < b.size) return;
    }
  }

  // Flow sockets are edge-triggered: epoll reports each one once per burst
  // of arrivals instead of re-polling it on every epoll_wait, as level
  // triggering does (fs/eventpoll.c re-queues a level-triggered item after
  // reporting it). So each is drained here, up to ROUNDS batches per event;
  // one still full after that waits in `again` for the next loop turn.
  private fromClient(f: Flow): void {
    const b = this.batch;
    let errors = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const n = b.recvConnected(f.client.raw);
      if (n < 0) {
        const e = errno();
        // ICMP port unreachable from the client: it has gone; so has the flow.
        if (e === ECONNREFUSED) this.close(f, "close", "client_unreachable");
        // Another ICMP error (unreachable, prohibited): see fromOrigin.
        else if (e !== EAGAIN && errors++ === 0) continue;
        return;
      }
      for (let i = 0; i < n; i++) {
        // A send's refusal may have ended the flow (its sockets closed): the rest of the batch is dropped.
        if (f.ended) return this.dropRest(f, n - i);
        this.fromClientAt(f, b.dataAt(i), b.length(i));
      }
      if (n < b.size || f.ended) return;
    }
    this.again.push(f.client.raw);
  }

  // A datagram from the flow's client, at `at` in the batch (from the listener or the flow socket).
  private fromClientAt(f: Flow, at: number, len: number): void {
    f.last = this.now;
    // A second datagram confirms the flow: the client hears us (a spoofed source would not).
    if (++f.datagrams === 2) this.unconfirmed.delete(f.key);
    const svc = f.service;
    if (len > MAX_DATAGRAM) return this.drop(svc, "truncated");
    bump(svc.row, C.datagramsFromClients);
    bump(svc.row, C.bytesFromClients, len);
    f.bytesIn += len;
    if (!f.upstream) return this.send(f, f.client.raw, at, len, true);
    const h = f.header;
    if (!h) return this.send(f, f.upstream.raw, at, len, false);
    this.batch.data.set(h, at - h.length);
    // PROXY v2 rides on the flow's first datagram only; SPP on every one.
    if (!f.everyDatagram) f.header = undefined;
    this.send(f, f.upstream.raw, at - h.length, len + h.length, false);
  }

  private fromOrigin(f: Flow): void {
    const b = this.batch;
    let errors = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const n = b.recvConnected(f.upstream!.raw);
      if (n < 0) {
        const e = errno();
        if (e === ECONNREFUSED) this.refused(f);
        // Another ICMP error the path reported (host unreachable, a filter's "prohibited": udp(7)) comes
        // ahead of datagrams queued before it, and this read consumed it: read on (once: an error that
        // stays must not spin), or they would wait for a later arrival (edge-triggered: no other event tells of them).
        else if (e !== EAGAIN && errors++ === 0) continue;
        return;
      }
      f.last = this.now;
      // Only an answer after a refusal is news to the pool: a message per new flow would cost the main thread on every flow.
      if (f.endpoint?.failing.delete(f.originPort)) this.onOrigin(f.service.spec.slot, f.endpoint.key, f.originPort, true);
      for (let i = 0; i < n; i++) {
        if (f.ended) return this.dropRest(f, n - i);
        let len = b.length(i);
        if (len > MAX_DATAGRAM) {
          this.drop(f.service, "truncated");
          continue;
        }
        let at = b.dataAt(i);
        if (f.everyDatagram) {
          if (!hasSppHeader(b.data, at, len)) {
            this.drop(f.service, "bad_header");
            continue;
          }
          at += SPP_HEADER_SIZE;
          len -= SPP_HEADER_SIZE;
        }
        this.send(f, f.client.raw, at, len, true);
      }
      if (n < b.size || f.ended) return;
    }
    this.again.push(f.upstream!.raw);
  }

  /** No flow open: a sweep has nothing to expire (the worker then waits for events alone, worker.ts). */
  get idle(): boolean {
    return this.flows.size === 0;
  }

  /** Flow sockets left undrained by their last event (see fromClient); the worker waits without blocking while there are any. */
  get pending(): boolean {
    return this.again.length > 0;
  }

  /** Go on draining the sockets a busy burst left unfinished. */
  resume(): void {
    const fds = this.again;
    this.again = [];
    for (const fd of fds) this.ready(fd);
  }

  // Send `length` bytes at `at` in the batch to fd: queued for the turn's flush, or at once without the ring.
  private send(f: Flow, fd: number, at: number, length: number, toClient: boolean): void {
    const r = this.sendRing;
    if (r) {
      // A flush for room reports results, and a refusal among them ends its flow, this one too: then fd is
      // closed and its number free for the next socket (this thread's tcp and http engines accept too).
      if (!r.fits(length)) {
        this.flush();
        if (f.ended) return this.dropRest(f, 1);
      }
      return r.queue(fd, at, length, f, toClient);
    }
    const n = this.batch.sendAt(fd, at, length);
    this.sent(f, toClient, length, n >= 0 ? n : -errno());
  }

  // A send's result (bytes, or -errno): count it, or why the kernel refused it.
  private sent(f: Flow, toClient: boolean, length: number, res: number): void {
    if (res >= 0) {
      if (toClient) {
        bump(f.service.row, C.datagramsFromOrigins);
        bump(f.service.row, C.bytesFromOrigins, length);
        f.bytesOut += length;
      }
      return;
    }
    // The flow may have ended earlier in the same flush (a refusal): its later refused datagrams are counted only.
    if (-res === ECONNREFUSED && !toClient) {
      if (f.ended) this.drop(f.service, "origin_refused");
      else this.refused(f);
      return;
    }
    this.drop(f.service, -res === EMSGSIZE ? "too_big" : "send_failed");
  }

  private open(svc: Service, key: string, src: Endpoint, dst: Endpoint): Flow | undefined {
    if (svc.retired) return undefined;
    if (this.flows.size >= this.maxFlows) {
      const victim = this.unconfirmed.values().next().value as Flow | undefined;
      if (!victim) {
        this.drop(svc, "flow_limit");
        svc.log?.emit({ event: "limited", client: formatEndpoint(src), edge: formatEndpoint(dst), reason: "flow_limit" });
        return undefined;
      }
      bump(victim.service.row, C.flowsEvicted);
      this.close(victim, "limited", "evicted");
    }
    const f = openFlow(svc, key, src, dst, this.now, this.epoll, this.log);
    if (!f) return undefined;
    this.flows.set(key, f);
    this.unconfirmed.set(key, f);
    this.byFd[f.client.raw] = f;
    if (f.upstream) this.byFd[f.upstream.raw] = f;
    return f;
  }

  /** Close a flow; `event` and `why` say why, for its access log line. */
  private close(f: Flow, event: string, why: string): void {
    // Queued sends name descriptors by number: none may outlive its socket (the number would be reused).
    // The flush may itself end this flow (a refusal), hence the check after it.
    this.flush();
    if (f.ended) return;
    this.flows.delete(f.key);
    this.unconfirmed.delete(f.key);
    this.byFd[f.client.raw] = undefined;
    if (f.upstream) this.byFd[f.upstream.raw] = undefined;
    endFlow(f, event, why);
    this.settle(f.service);
  }

  // Datagrams of a flow that ended while they were being forwarded (its origin refused): not sent, counted.
  private dropRest(f: Flow, count: number): void {
    bump(f.service.row, dropIndex("origin_refused"), count);
  }

  private settle(svc: Service): void {
    if (!svc.retired || svc.row[C.flowsActive]! > 0 || !this.services.has(svc.spec.slot)) return;
    this.services.delete(svc.spec.slot);
    this.onRetired(svc.spec.slot);
  }
}

