// A tcp service on the engine's thread: what the main thread tells it
// (TcpEngineSpec) and what the engine keeps for it (its listeners, endpoints,
// counters, log and per-client counter).
import type { Family, Prefix } from "../config/address";
import type { EjectConfig } from "../config/pool";
import type { AccessLogConfig, ProxyProtocol } from "../config/service";
import { SourceCounter } from "../dispatcher/sources";
import type { SourceKey } from "../dispatcher/sourceabi";
import type { SourceCounting } from "../proxy/sourcelimit";
import { FlowLog, type FlowLogSink } from "../proxy/udp/flowlog";
import { EndpointSet, type PanicCounts, type UdpOrigins } from "../proxy/udp/origins";
import { Fd } from "../system/fd";
import type { AdmissionShare } from "./admission";
import type { Pair } from "./pair";
import { ORIGIN_ERRORS, T, type OriginErrorKind } from "./stats";

export interface TcpEngineSpec {
  readonly slot: number;
  readonly name: string;
  /** Handed over (released by the main thread): owned here until retired. */
  readonly listeners: readonly { readonly fd: number; readonly family: Family }[];
  /** The service's counters (stats.ts layout). */
  readonly row: SharedArrayBuffer;
  readonly origins: UdpOrigins;
  /** Balancing hashes on the client address. */
  readonly needClient: boolean;
  /** Some origin takes the edge port (port-preserving or port-range origins). */
  readonly needEdge: boolean;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** The pool's passive ejection rule, applied here too at once (WorkerEndpoint.connectFailed). */
  readonly eject: EjectConfig;
  readonly proxyProtocol: ProxyProtocol;
  readonly accessLog?: AccessLogConfig;
  readonly admission: AdmissionShare;
  /** accept_proxy: peers whose connections start with a PROXY header (empty: none). */
  readonly acceptProxy: readonly Prefix[];
  /** The PROXY header complete within this from accept (proxy_header_timeout). */
  readonly proxyHeaderMs: number;
  /** source_connections, counted with every process's in the program's map (absent: not counted here). */
  readonly sourceLimit?: SourceCounting;
}

export class EngineService {
  retired = false;
  readonly row: Float64Array;
  readonly listeners: Fd[];
  readonly endpoints: EndpointSet;
  readonly log: FlowLog | undefined;
  /** The peer's address is decoded at accept (accept4 always fills it in, for the busiest-clients count; no extra call). */
  readonly needPeer: boolean;
  readonly needEdge: boolean;
  readonly acceptProxy: readonly Prefix[];
  readonly pairs = new Set<Pair>();
  /** This thread's own counter (its buffers are per thread; the owner slot and program are the process's). */
  readonly counter: SourceCounter | undefined;
  constructor(
    readonly spec: TcpEngineSpec,
    sink: FlowLogSink,
  ) {
    this.counter = spec.sourceLimit && new SourceCounter(spec.sourceLimit.progFd, spec.sourceLimit.owner);
    this.row = new Float64Array(spec.row);
    this.listeners = spec.listeners.map((l) => new Fd(l.fd, `service ${spec.name}: ipv${l.family} listener`));
    this.endpoints = new EndpointSet(spec.origins.balance, spec.origins.edgeRange, spec.origins.endpoints);
    this.log = spec.accessLog ? new FlowLog(sink, spec.name, spec.accessLog, "tcp") : undefined;
    this.acceptProxy = spec.acceptProxy;
    // Decoded Endpoints where something reads them; the access log takes its text from the sockaddr bytes (engine.ts).
    const proxied = spec.proxyProtocol !== "off" || spec.acceptProxy.length > 0;
    this.needPeer = spec.needClient || proxied || this.counter !== undefined;
    this.needEdge = spec.needEdge || proxied;
  }

  private lastActive = "";

  /** Tell the main thread the endpoints' open connections when they changed, and the panics since the last call. */
  report(to: (slot: number, active: [string, number][], panics: PanicCounts) => void): void {
    const active = this.endpoints.activeCounts();
    const key = active.map(([, n]) => n).join(",");
    const panics = this.endpoints.takePanics();
    if (key === this.lastActive && panics.length === 0) return;
    this.lastActive = key;
    to(this.spec.slot, active, panics);
  }

  /** Add to the client's count (SourceCounter.addOrZero: 0 when the kernel refuses). */
  count(key: SourceKey, delta: 1 | -1): number {
    return this.counter!.addOrZero(key, delta);
  }

  /** The named client is over source_rate (charged here); false when it cannot be checked. */
  rateExceeded(key: SourceKey): boolean {
    try {
      return this.counter !== undefined && this.counter.rateExceeded(key);
    } catch {
      return false;
    }
  }

  bump(i: number, n = 1): void {
    this.row[i] = this.row[i]! + n;
  }

  originError(kind: OriginErrorKind): void {
    this.bump(T.originErrors + ORIGIN_ERRORS.indexOf(kind));
  }
}

