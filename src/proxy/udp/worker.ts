// Entry point of the UDP data plane's thread. Bun's event loop cannot watch
// sockets it did not create, so this thread blocks in epoll_wait(2) and
// returns to its own event loop (for control messages) only when the main
// thread signals the wake-up eventfd, when epoll_wait times out, or every
// YIELD_MS under load. Idle (no flow, no connection, nothing to report,
// every message handled) it waits without a timeout: an idle instance costs
// no wake-ups here.
import { CAP_NET_BIND_SERVICE, capBit, keepOnlyCapabilities } from "../../system/capabilities";
import { drainEventFd, Epoll } from "../../system/epoll";
import { Engine } from "./engine";
import type { ToWorker, FromWorker } from "./messages";
import { FlowLogSink } from "./flowlog";
import { TcpEngine } from "../../engine/engine";
import { HttpEngine } from "../../engine/http";

declare const self: Worker;

const YIELD_MS = 20;
const IDLE_WAIT_MS = 250;

let engine: Engine | undefined;
/** tcp services on the engine: made at the first one, on this loop. */
let tcp: TcpEngine | undefined;
/** http services on the engine: made at the first one, on this loop. */
let http: HttpEngine | undefined;
/** The engine's coarse clock: connect and idle deadlines are honoured to within this. */
const TCP_SWEEP_MS = 100;
let epoll: Epoll | undefined;
let wakeFd = -1;
let running = false;
/** How many messages the main thread has posted (UdpPlane.post counts each before sending it), and how many were handled here. */
let posted: Int32Array | undefined;
let handled = 0;
/**
 * The last sweep left no deadline for the next one: no flow or connection,
 * no http connection, header, connect or pooled origin connection
 * (HttpEngine.idle). Then the time the next sweep is due for all the same (the
 * busiest-clients copy of tcp and http services, EngineClients.dueAt; Infinity:
 * none, wait for events alone). undefined: sweep at the interval. An event
 * or a message ends it.
 */
let idleUntil: number | undefined;

const post = (m: FromWorker) => self.postMessage(m);
/** Access log lines of every service on this thread, in rings the main thread reads (src/log/ring.ts). */
const logSink = new FlowLogSink(
  (config, memory) => post({ op: "access-ring", config, memory }),
  (path) => post({ op: "access-nudge", path }),
);

function sweepEvery(): number {
  // A quarter of the shortest idle timeout, so flows end at most 25% late.
  const udp = Math.max(10, Math.min(1000, engine!.minIdleMs / 4));
  return tcp?.hasServices || http?.hasServices ? Math.min(udp, TCP_SWEEP_MS) : udp;
}

async function loop(): Promise<void> {
  const e = engine!;
  const ep = epoll!;
  let yielded = performance.now();
  let nextSweep = yielded + sweepEvery();
  while (running) {
    // A message posted but not yet delivered to this thread's loop: yield until it is (never block on it).
    const unheard = posted !== undefined && Atomics.load(posted, 0) !== handled;
    const until = idleUntil ?? nextSweep;
    const n = ep.wait(
      e.pending || http?.pending ? 0
      : unheard ? 1
      : until === Infinity ? -1
      : Math.max(0, idleUntil === undefined ? Math.min(IDLE_WAIT_MS, Math.ceil(until - e.now)) : Math.ceil(until - e.now)),
    );
    if (n > 0) idleUntil = undefined;
    e.now = performance.now();
    const t = tcp;
    if (t) t.now = e.now;
    const h = http;
    if (h) h.clock.now = e.now;
    let woken = false;
    for (let i = 0; i < n; i++) {
      const fd = ep.fdAt(i);
      if (fd === wakeFd) {
        drainEventFd(fd);
        woken = true;
      } else if (t?.owns(fd)) t.ready(fd, ep.eventsAt(i));
      else if (h?.owns(fd)) h.ready(fd, ep.eventsAt(i));
      else e.ready(fd);
    }
    t?.endBatch();
    h?.endBatch();
    if (e.pending) e.resume();
    // The turn's sends, in one io_uring_enter, before any wait.
    e.flush();
    if (e.now >= nextSweep && (idleUntil === undefined || e.now >= idleUntil)) {
      e.sweep();
      if (t) {
        t.sweep(e.now);
        const clients = t.clients.due(e.now);
        if (clients) post({ op: "tcp-clients", clients });
      }
      if (h) {
        h.sweep(e.now);
        const clients = h.clients.due(e.now);
        if (clients) post({ op: "http-clients", clients });
      }
      nextSweep = e.now + sweepEvery();
      idleUntil = e.idle && (t === undefined || t.idle) && (h === undefined || h.idle) ? Math.min(t?.clients.dueAt ?? Infinity, h?.clients.dueAt ?? Infinity) : undefined;
    }
    if (woken || n === 0 || e.now - yielded > YIELD_MS) {
      h?.flushReports();
      // setImmediate, not setTimeout(0): a timer is clamped to 1 ms, a stall every YIELD_MS under load.
      await new Promise((r) => setImmediate(r));
      yielded = performance.now();
    }
  }
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const m = event.data;
  handled++;
  // A message changes what a sweep has to do (a service, its origins, a retirement): the loop sweeps again before idling.
  idleUntil = undefined;
  try {
    switch (m.op) {
      case "init":
        posted = new Int32Array(m.posted);
        // This thread reads hostile datagrams; of capabilities (per thread, capset(2)) it uses only
        // CAP_NET_BIND_SERVICE, when held: a flow's socket binds to the original destination, port 53 too.
        keepOnlyCapabilities(capBit(CAP_NET_BIND_SERVICE));
        epoll = new Epoll(256);
        wakeFd = m.wakeFd;
        epoll.add(wakeFd);
        engine = new Engine(
          epoll,
          new Float64Array(m.counters),
          m.maxFlows,
          (line) => post({ op: "log", line }),
          (slot) => post({ op: "retired", slot }),
          (slot, key, port, ok) => post({ op: "origin", slot, key, port, ok }),
          (slot, counts) => post({ op: "panics", slot, counts }),
          logSink,
        );
        running = true;
        post({ op: "started" });
        // A loop that threw leaves sockets the kernel still steers to with nobody reading them: the process
        // must go (one line), so its supervisor or service manager restarts it and queued connections migrate.
        void loop().catch((err) => post({ op: "fatal", line: `data plane thread stopped: ${(err as Error).message ?? err} (an internal error; exiting so this process is restarted)` }));
        break;
      case "add":
        engine!.add(m.spec);
        break;
      case "origins":
        engine!.setOrigins(m.slot, m.endpoints);
        break;
      case "retire":
        engine!.retire(m.slot, m.abort);
        break;
      case "tcp-add":
        tcp ??= new TcpEngine(
          epoll!,
          logSink,
          (slot, key, port, failure) => post({ op: "tcp-origin", slot, key, port, ...(failure ? { failure } : {}) }),
          (slot, active, panics) => post({ op: "tcp-active", slot, active, panics }),
          () => post({ op: "admission" }),
          (line) => post({ op: "log", line }),
        );
        tcp.add(m.spec);
        break;
      case "tcp-origins":
        tcp?.setOrigins(m.slot, m.endpoints);
        break;
      case "tcp-retire":
        tcp?.retire(m.slot, m.abort);
        break;
      case "http-add":
        http ??= new HttpEngine(
          epoll!,
          logSink,
          (slot, key, port, failure) => post({ op: "http-origin", slot, key, port, ...(failure ? { failure } : {}) }),
          (slot, report) => post({ op: "http-report", slot, report }),
          () => post({ op: "admission" }),
          (line) => post({ op: "log", line }),
        );
        http.add(m.spec);
        break;
      case "http-origins":
        http?.setOrigins(m.slot, m.pool, m.endpoints);
        break;
      case "http-retire":
        http?.retire(m.slot, m.abort);
        break;
      case "sync":
        http?.flushReports(true);
        post({ op: "synced", id: m.id });
        break;
      case "stop":
        running = false;
        http?.closeAll();
        tcp?.closeAll();
        engine?.closeAll();
        epoll?.close();
        post({ op: "stopped" });
        break;
    }
  } catch (err) {
    post({ op: "log", line: `udp data plane: ${m.op}: ${(err as Error).message}` });
  }
};
