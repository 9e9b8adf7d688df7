// A UDP service as the data plane's thread holds it, and one flow of it:
// the objects the engine (engine.ts) forwards between.
import type { Endpoint } from "../../system/sockaddr";
import { Fd } from "../../system/fd";
import type { Family } from "../../config/address";
import type { ProxyProtocol, AccessLogConfig } from "../../config/service";
import { EndpointSet, type UdpOrigins, type WorkerEndpoint } from "./origins";
import { SourceCounter } from "../../dispatcher/sources";
import type { SourceKey } from "../../dispatcher/sourceabi";
import type { SourceCounting } from "../sourcelimit";
import { FlowLog, type FlowLogSink, type FlowRecord } from "./flowlog";

/** What the worker is told about a service. */
export interface UdpServiceSpec {
  readonly slot: number;
  readonly name: string;
  /** Handed over (released by the main thread): the service's Service here owns them. */
  readonly listeners: readonly { readonly fd: number; readonly family: Family }[];
  /** Absent: echo every datagram back (the built-in responder). */
  readonly origins?: UdpOrigins;
  readonly proxyProtocol: ProxyProtocol;
  readonly idleMs: number;
  /** source_connections: flows per client, counted with every process's (absent: no limit). */
  readonly sourceLimit?: SourceCounting;
  /** The service's access log; absent: off. */
  readonly accessLog?: AccessLogConfig;
}

/** A UDP service on this thread: its listening sockets (owned), origins, per-client counter and access log. */
export class Service {
  readonly kind = "listener";
  retired = false;
  readonly endpoints: EndpointSet | undefined;
  /** This thread's own counter (its buffers are per thread; the slot and program are the process's). */
  readonly counter: SourceCounter | undefined;
  /** Its listening sockets, owned from the hand-over until retired. */
  readonly listeners: readonly Fd[];
  readonly log: FlowLog | undefined;
  constructor(
    readonly spec: UdpServiceSpec,
    readonly row: Float64Array,
    sink: FlowLogSink | undefined,
  ) {
    this.listeners = spec.listeners.map((l) => new Fd(l.fd, `service ${spec.name}: ipv${l.family} listener`));
    this.log = spec.accessLog && sink ? new FlowLog(sink, spec.name, spec.accessLog) : undefined;
    const o = spec.origins;
    this.endpoints = o && new EndpointSet(o.balance, o.edgeRange, o.endpoints);
    this.counter = spec.sourceLimit && new SourceCounter(spec.sourceLimit.progFd, spec.sourceLimit.owner);
  }

  /** Add to the client's count (SourceCounter.addOrZero: 0 when the kernel refuses). */
  count(key: SourceKey, delta: 1 | -1): number {
    return this.counter!.addOrZero(key, delta);
  }

  /** The client as source_connections counts it. */
  sourceKey(src: Endpoint): SourceKey {
    const l = this.spec.sourceLimit!;
    return { service: l.service, addr: src.addr, prefixLen: src.family === 4 ? 32 : l.prefixV6 };
  }
}

/** One client's flow: the two sockets it owns and what it holds (an endpoint's count, a client's count). */
export class Flow {
  readonly kind = "flow";
  /** From the client; a second one confirms the flow. */
  datagrams = 0;
  constructor(
    readonly key: string,
    readonly service: Service,
    /** Owned: the socket connected to the client, bound to the address it sent to. */
    readonly client: Fd,
    /** Owned: the socket connected to the origin; absent for the echo responder. */
    readonly upstream: Fd | undefined,
    /** Sent before the first datagram only (PROXY v2) or before each (SPP). */
    public header: Uint8Array | undefined,
    readonly everyDatagram: boolean,
    public last: number,
    /** The pool endpoint whose flow count this flow holds. */
    readonly endpoint: WorkerEndpoint | undefined,
    /** The origin port it talks to: ejection counts per endpoint port. */
    readonly originPort: number,
    /** The client's count this flow holds (source_connections), given back at close. */
    readonly source: SourceKey | undefined,
  ) {}
  /** Closed (Engine.close, endFlow in flowlife.ts): its sockets are gone, their numbers free for the next socket. */
  ended = false;
  // The flow's bytes each way (the access log's).
  bytesIn = 0;
  bytesOut = 0;
  record: FlowRecord | undefined;
}

export const keyOf = (src: Endpoint, dst: Endpoint) => `${src.addr.join(".")}:${src.port}>${dst.addr.join(".")}:${dst.port}`;
