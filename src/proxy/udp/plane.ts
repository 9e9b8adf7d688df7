import { EdgeError } from "../../errors";
import type { EndpointSpec } from "../../origin/pool";
import { EventFd } from "../../system/epoll";
import type { Fd } from "../../system/fd";
import type { Family } from "../../config/address";
import type { UdpServiceSpec } from "./flow";
import type { FromWorker, ToWorker } from "./messages";
import type { PanicCounts } from "./origins";
import { ROW, SLOTS } from "./stats";
import { attachRing, nudgeRing } from "../../log/access";
import type { TcpEngineSpec } from "../../engine/engine";
import type { OriginFailure } from "../../origin/pool";
import type { ClientsSnapshot } from "../clients";
import type { HttpEngineReport, HttpEngineSpec } from "../../engine/http";

/** What an http service on the engine hears from the data plane's thread. */
export interface HttpEngineEvents {
  /** Origin port `port` of endpoint `key` failed a connect (failure), or connected after failing. */
  report(key: string, port: number, failure: OriginFailure | undefined): void;
  /** Its counters and its endpoints' open connections, when they changed. */
  counters(report: HttpEngineReport): void;
}

/** What a tcp service on the engine hears from the data plane's thread. */
export interface TcpOriginEvents {
  /** Origin port `port` of endpoint `key` failed a connect (failure), or connected after failing. */
  report(key: string, port: number, failure: OriginFailure | undefined): void;
  /** Open connections per endpoint key, and connections sent in panic, as the engine counts them. */
  counts(active: [key: string, n: number][], panics: PanicCounts): void;
}

// In the compiled binary every module is bundled into one, and the worker is
// a second entry point that `bun build --compile` (build/build.ts) stores
// under its path relative to src/, the entry points' common directory.
const WORKER_ENTRY = import.meta.path.startsWith("/$bunfs/") ? "./proxy/udp/worker.ts" : new URL("./worker.ts", import.meta.url).href;

/** What the worker tells a service's pool. */
export interface OriginEvents {
  /** Origin port `port` of endpoint `key` refused a flow (ok false), or answered after that (ok true). */
  report(key: string, port: number, ok: boolean): void;
  /** Flows opened in panic, per endpoint key. */
  panics(counts: PanicCounts): void;
}

/**
 * The UDP data plane of the process: one worker thread running an epoll
 * loop over every UDP service's sockets, and the counters it shares. The
 * owner of the worker and of its wake-up eventfd; close() is idempotent.
 */
export class UdpPlane {
  private readonly worker: Worker;
  private readonly wake = new EventFd();
  private readonly counters = new Float64Array(new SharedArrayBuffer(SLOTS * ROW * 8));
  /** Messages posted to the thread so far: it blocks in epoll_wait without a timeout only when it has handled as many (worker.ts). */
  private readonly posted = new Int32Array(new SharedArrayBuffer(4));
  // Lowest slot first, so rows stay near the start of the shared buffer.
  private readonly free = Array.from({ length: SLOTS }, (_, i) => SLOTS - 1 - i);
  private closed = false;
  private readonly originEvents = new Map<number, OriginEvents>();
  private readonly tcpEvents = new Map<number, TcpOriginEvents>();
  private nextTcpSlot = 0;
  private readonly httpEvents = new Map<number, HttpEngineEvents>();
  private nextHttpSlot = 0;
  private readonly syncs = new Map<number, () => void>();
  private nextSync = 0;
  /** The engine's busiest clients as it last sent them (undefined: no tcp service on the engine has had one). */
  engineClients: ClientsSnapshot | undefined;
  /** The same for http services on the engine. */
  engineHttpClients: ClientsSnapshot | undefined;
  /** Called when the engine's connections cross an admission mark (the process's Admission.recheck). */
  onAdmission: () => void = () => {};
  /** Settles when the worker has its epoll loop running, or failed to start. */
  readonly started: Promise<void>;

  constructor(readonly maxFlows: number) {
    this.worker = new Worker(WORKER_ENTRY);
    let running = false;
    let started = () => {};
    let failed = (_: Error) => {};
    this.started = new Promise<void>((resolve, reject) => {
      started = resolve;
      failed = reject;
    });
    // A data plane that stopped after it started leaves sockets the kernel still steers to with nobody
    // reading them: one line, and the process goes (EX_SOFTWARE), so its supervisor restarts it.
    const fatal = (line: string) => {
      process.stderr.write(`edgeproxy: ${line.replace(/\s*\n\s*/g, " ")}\n`);
      process.exit(70);
    };
    this.worker.onerror = (e) => {
      const err = new EdgeError("udp data plane", `worker failed: ${e.message}`, "internal");
      if (running) return fatal(`${err.message} (an internal error; exiting so this process is restarted)`);
      failed(err);
      process.stderr.write(`edgeproxy: ${err.message}\n`);
    };
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const m = event.data;
      if (m.op === "started") {
        running = true;
        started();
      } else if (m.op === "log") process.stderr.write(`edgeproxy: ${m.line}\n`);
      else if (m.op === "fatal") fatal(m.line);
      else if (m.op === "retired") this.free.push(m.slot);
      else if (m.op === "origin") this.originEvents.get(m.slot)?.report(m.key, m.port, m.ok);
      else if (m.op === "panics") this.originEvents.get(m.slot)?.panics(m.counts);
      else if (m.op === "access-ring") attachRing(m.config, m.memory);
      else if (m.op === "access-nudge") nudgeRing(m.path);
      else if (m.op === "tcp-origin") this.tcpEvents.get(m.slot)?.report(m.key, m.port, m.failure);
      else if (m.op === "admission") this.onAdmission();
      else if (m.op === "tcp-active") this.tcpEvents.get(m.slot)?.counts(m.active, m.panics);
      else if (m.op === "tcp-clients") this.engineClients = m.clients;
      else if (m.op === "http-origin") this.httpEvents.get(m.slot)?.report(m.key, m.port, m.failure);
      else if (m.op === "http-report") {
        const report = JSON.parse(m.report) as HttpEngineReport;
        this.httpEvents.get(m.slot)?.counters(report);
        if (report.gone) this.httpEvents.delete(m.slot);
      } else if (m.op === "http-clients") this.engineHttpClients = m.clients;
      else if (m.op === "synced") {
        this.syncs.get(m.id)?.();
        this.syncs.delete(m.id);
      } else if (m.op === "stopped") {
        running = false;
        this.wake.close();
        void this.worker.terminate();
      }
    };
    // The process ends when its servers do; the worker never holds it open.
    this.worker.unref();
    this.post({ op: "init", wakeFd: this.wake.fd, counters: this.counters.buffer as SharedArrayBuffer, maxFlows, posted: this.posted.buffer as SharedArrayBuffer });
  }

  /**
   * Hand a service's listening sockets to the worker, which owns them from
   * now on (released here, adopted there). Returns its counter slot. When it
   * throws, the sockets are still the caller's.
   */
  add(spec: Omit<UdpServiceSpec, "slot" | "listeners"> & { readonly listeners: readonly { readonly fd: Fd; readonly family: Family }[] }): number {
    if (this.closed) throw new EdgeError("udp data plane", "closed", "internal");
    const slot = this.free.pop();
    if (slot === undefined) throw new Error(`more than ${SLOTS} UDP services`);
    this.counters.fill(0, slot * ROW, (slot + 1) * ROW);
    this.post({ op: "add", spec: { ...spec, slot, listeners: spec.listeners.map(({ fd, family }) => ({ fd: fd.release(), family })) } });
    return slot;
  }

  /**
   * Hand a tcp service's listening sockets to the engine on this plane's
   * thread (released here, owned there). Returns its slot.
   */
  addTcp(spec: Omit<TcpEngineSpec, "slot" | "listeners"> & { readonly listeners: readonly { readonly fd: Fd; readonly family: Family }[] }, events: TcpOriginEvents): number {
    if (this.closed) throw new EdgeError("data plane", "closed", "internal");
    const slot = this.nextTcpSlot++;
    this.tcpEvents.set(slot, events);
    this.post({ op: "tcp-add", spec: { ...spec, slot, listeners: spec.listeners.map(({ fd, family }) => ({ fd: fd.release(), family })) } });
    return slot;
  }

  setTcpOrigins(slot: number, endpoints: readonly EndpointSpec[]): void {
    this.post({ op: "tcp-origins", slot, endpoints });
  }

  /** Close a tcp service's listeners; with `abort` reset its connections, else they run until done or idle. */
  retireTcp(slot: number, abort: boolean): void {
    this.tcpEvents.delete(slot);
    this.post({ op: "tcp-retire", slot, abort });
  }

  /**
   * Hand an http service's listening sockets to the engine on this plane's
   * thread (released here, owned there). Returns its slot.
   */
  addHttp(spec: Omit<HttpEngineSpec, "slot" | "listeners"> & { readonly listeners: readonly { readonly fd: Fd; readonly family: Family }[] }, events: HttpEngineEvents): number {
    if (this.closed) throw new EdgeError("data plane", "closed", "internal");
    const slot = this.nextHttpSlot++;
    this.httpEvents.set(slot, events);
    this.post({ op: "http-add", spec: { ...spec, slot, listeners: spec.listeners.map(({ fd, family }) => ({ fd: fd.release(), family })) } });
    return slot;
  }

  setHttpOrigins(slot: number, pool: number, endpoints: readonly EndpointSpec[]): void {
    this.post({ op: "http-origins", slot, pool, endpoints });
  }

  /** Close an http service's listeners; with `abort` reset its connections, else they close between requests. */
  retireHttp(slot: number, abort: boolean): void {
    this.post({ op: "http-retire", slot, abort });
  }

  /**
   * Resolves once the thread has posted the counters the main thread may not
   * have yet (http services on the engine post theirs at most REPORT_MS
   * late), or after `ms`: what a final summary waits for.
   */
  sync(ms = 200): Promise<void> {
    if (this.closed) return Promise.resolve();
    const id = this.nextSync++;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.syncs.delete(id);
        resolve();
      }, ms);
      this.syncs.set(id, () => {
        clearTimeout(timer);
        resolve();
      });
      this.post({ op: "sync", id });
    });
  }

  /** Hear a service's origin refusals and first answers (its pool's passive ejection), and its panic flows. */
  onOrigin(slot: number, fn: OriginEvents | undefined): void {
    if (fn) this.originEvents.set(slot, fn);
    else this.originEvents.delete(slot);
  }

  /** A service's eligible origin endpoints changed: new flows go to these. */
  setOrigins(slot: number, endpoints: readonly EndpointSpec[]): void {
    this.post({ op: "origins", slot, endpoints });
  }

  /** Close a service's listeners; with `abort` its flows too, else they run until idle. */
  retire(slot: number, abort: boolean): void {
    this.post({ op: "retire", slot, abort });
  }

  /** A service's counters (struct layout in stats.ts), live. */
  row(slot: number): Float64Array {
    return this.counters.subarray(slot * ROW, (slot + 1) * ROW);
  }

  private post(m: ToWorker): void {
    if (this.closed) return;
    // Counted before it is sent: the thread never sees a message it was not told of.
    Atomics.add(this.posted, 0, 1);
    this.worker.postMessage(m);
    this.wake.signal();
  }

  /** Close every flow and listener and stop the worker. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.post({ op: "stop" });
    this.closed = true;
  }
}
