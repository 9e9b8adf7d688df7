// An http service on the engine's thread (src/engine/http.ts): what the main
// thread tells it (HttpEngineSpec), what it posts back (HttpEngineReport),
// and what the engine keeps for it: the HTTP context Bun's path builds in
// HttpService (router over the engine's copies of the pools, keep-alive
// origin connections over the engine's descriptors, counters, log), its
// listeners, connections and per-client counter.
import type { ConnectionStats } from "../admin/backend";
import type { Family } from "../config/address";
import { POOL_DEFAULTS, type PoolConfig } from "../config/pool";
import type { ServiceConfig } from "../config/service";
import type { SourceKey } from "../dispatcher/sourceabi";
import { SourceCounter } from "../dispatcher/sources";
import { ServiceLog } from "../log/access";
import type { OriginFailure } from "../origin/member";
import type { HttpConnection } from "../proxy/http/conn";
import type { HttpContext, RoutePool } from "../proxy/http/context";
import { OriginConnections, type OriginConn } from "../proxy/http/origins";
import { HttpRouter } from "../proxy/http/router";
import { HttpStats, type HttpStatsSnapshot } from "../proxy/http/stats";
import type { EndNames, HeaderReader, Ends } from "../proxy/inbound";
import type { SourceCounting } from "../proxy/sourcelimit";
import { ServiceStats } from "../proxy/stats";
import type { PanicCounts, UdpOrigins } from "../proxy/udp/origins";
import type { AdmissionShare } from "./admission";
import { Fd } from "../system/fd";
import type { Endpoint } from "../system/sockaddr";
import type { HttpEngine } from "./http";
import { connectOrigin } from "./httpconnect";
import { EnginePool } from "./httppool";
import { workerLogLines } from "./httplog";
import type { EngineSocket } from "./httpsocket";

/** What the main thread tells the engine about an http service (one structured clone: the pools in `pools` are the ones `config` names). */
export interface HttpEngineSpec {
  readonly slot: number;
  readonly name: string;
  readonly listeners: readonly { readonly fd: number; readonly family: Family }[];
  readonly config: ServiceConfig;
  /** The service's distinct pools, with their endpoints now; `setOrigins` names them by index. */
  readonly pools: readonly { readonly config: PoolConfig; readonly origins: UdpOrigins; readonly followsEdgePort: boolean }[];
  readonly admission: AdmissionShare;
  /** The access log is on (its file is the main thread's: lines go through the sink). */
  readonly log: boolean;
  /** source_connections, counted with every process's in the program's map (absent: not counted here). */
  readonly sourceLimit?: SourceCounting;
}

/** What the engine posts about an http service: its counters, and its endpoints' open connections and panics per pool. */
export interface HttpEngineReport {
  readonly connections: ConnectionStats;
  readonly http: HttpStatsSnapshot;
  readonly pools: readonly { readonly active: [string, number][]; readonly panics: PanicCounts }[];
  /** Connections refused here by a per-client limit (the program refuses the rest in the kernel). */
  readonly sourceRefused: { readonly connections: number; readonly rate: number };
  /** Retired and every connection closed: the last report. */
  readonly gone: boolean;
}

/** A connection in the PROXY-header stage: its reader, deadline, and what its access log line says if it ends there. */
export interface HeaderStage {
  readonly reader: HeaderReader;
  /** The socket's own ends (the balancer's), then the ones its header named. */
  ends: Ends;
  readonly deadline: number;
  readonly startedAt: number;
  /** Why it ended in the stage (the first cause wins); absent: the peer closed. */
  event?: string;
  why?: string;
}

/** One http service on the engine's thread. */
export class EngineHttp {
  readonly ctx: HttpContext;
  readonly pools: EnginePool[];
  readonly listeners: Fd[];
  readonly conns = new Set<HttpConnection>();
  /** Connections of a trusted balancer whose PROXY header is not complete yet (accept_proxy), with their deadline. */
  readonly headers = new Map<EngineSocket, HeaderStage>();
  /** Origin sockets still connecting: one given up (a connect deadline) is closed by the sweep. */
  readonly connecting = new Map<EngineSocket, OriginConn>();
  retired = false;
  /** This thread's own per-client counter (its buffers are per thread; the owner slot and program are the process's). */
  readonly counter: SourceCounter | undefined;
  readonly sourceRefused = { connections: 0, rate: 0 };
  /** Accept decodes the peer's sockaddr (else its address text is enough). */
  readonly needPeer: boolean;
  /** Something of it changed since its last report (an event, a sweep with connections). */
  touched = false;

  constructor(
    readonly spec: HttpEngineSpec,
    engine: HttpEngine,
    report: (slot: number, key: string, port: number, failure: OriginFailure | undefined) => void,
  ) {
    const config = spec.config;
    const http = config.http ?? { ...POOL_DEFAULTS.http, routes: [] };
    this.pools = spec.pools.map((p) => new EnginePool(p.origins, p.followsEdgePort, p.config.eject, (key, port, failure) => report(spec.slot, key, port, failure)));
    const byConfig = new Map(spec.pools.map((p, i) => [p.config, this.pools[i]!]));
    const router = new HttpRouter<RoutePool>(http.routes, config.pool, (p) => byConfig.get(p)!);
    const log = spec.log && config.accessLog ? new ServiceLog(config.name, config.accessLog, workerLogLines(engine.sink, config.accessLog), engine.clock) : undefined;
    this.ctx = {
      config,
      http,
      router,
      origins: new OriginConnections((c) => connectOrigin(engine, this, c)),
      clock: engine.clock,
      stats: new ServiceStats(),
      httpStats: new HttpStats(),
      proto: "http",
      admission: engine.admission!,
      active: new Set(),
      draining: false,
      ...(log ? { log } : {}),
    };
    this.listeners = spec.listeners.map((l) => new Fd(l.fd, `service ${spec.name}: ipv${l.family} listener`));
    this.counter = spec.sourceLimit && new SourceCounter(spec.sourceLimit.progFd, spec.sourceLimit.owner);
    // Not for the log: it names the ends from the sockaddr bytes (http.ts), and the engine serves no built-in
    // responder (the one reader of a client's port, local.ts, runs on Bun's sockets: config/service.ts).
    this.needPeer = config.acceptProxy.length > 0 || this.counter !== undefined;
  }

  /**
   * Count a connection of `client` against source_connections (as the tcp
   * engine's admitSource): its key, undefined when not counted, null when
   * it is over the limit (refused, counted). `named`: a PROXY header's
   * client, rate-charged here (the program charged its balancer, exempt).
   * A count the kernel refuses lets the connection in uncounted.
   */
  admitSource(client: Endpoint, named: boolean): SourceKey | undefined | null {
    const limit = this.spec.sourceLimit;
    if (!limit || !this.counter) return undefined;
    const key: SourceKey = { service: limit.service, addr: client.addr, prefixLen: client.family === 4 ? 32 : limit.prefixV6 };
    try {
      if (named && this.counter.rateExceeded(key)) {
        this.sourceRefused.rate++;
        return null;
      }
      if (this.counter.add(key, 1) <= limit.connections) return key;
      this.counter.add(key, -1);
    } catch {
      return undefined;
    }
    this.sourceRefused.connections++;
    return null;
  }

  /**
   * The access log line of a connection that ended before its HTTP started
   * (a per-client limit, a bad or late PROXY header, a balancer's health
   * check), as Bun's pipeline writes it (proxy/pipeline.ts logEnded).
   */
  logEnded(names: EndNames | undefined, startedAt: number, event: string, why: string): void {
    const log = this.ctx.log;
    if (!log || !log.sampled()) return;
    log.emit({ protocol: "tcp", event, ...(names ? { client: names.client, edge: names.edge } : {}), bytes_in: 0, bytes_out: 0, duration_ms: Math.round(performance.now() - startedAt), reason: why });
  }

  releaseSource(key: SourceKey | undefined): void {
    if (!key) return;
    try {
      this.counter!.add(key, -1);
    } catch {
      // The program's map is gone (shutdown): nothing left to give back to.
    }
  }

  /** Its counters now. */
  report(): HttpEngineReport {
    const gone = this.retired && this.conns.size === 0 && this.headers.size === 0;
    const r: HttpEngineReport = {
      connections: this.ctx.stats.snapshot(),
      http: this.ctx.httpStats.snapshot(this.ctx.origins.opened, this.ctx.origins.reused),
      pools: this.pools.map((p) => ({ active: p.endpoints.activeCounts(), panics: p.endpoints.takePanics() })),
      sourceRefused: { ...this.sourceRefused },
      gone,
    };
    this.touched = false;
    return r;
  }
}
