import type { EndpointSpec } from "../../origin/pool";
import type { UdpServiceSpec } from "./flow";
import type { PanicCounts } from "./origins";
import type { AccessLogConfig } from "../../config/service";
import type { TcpEngineSpec } from "../../engine/engine";
import type { OriginFailure } from "../../origin/pool";
import type { ClientsSnapshot } from "../clients";
import type { HttpEngineSpec } from "../../engine/http";

/** Main thread → UDP worker. */
export type ToWorker =
  | { readonly op: "init"; readonly wakeFd: number; readonly counters: SharedArrayBuffer; readonly maxFlows: number; readonly posted: SharedArrayBuffer }
  | { readonly op: "add"; readonly spec: UdpServiceSpec }
  | { readonly op: "retire"; readonly slot: number; readonly abort: boolean }
  | { readonly op: "origins"; readonly slot: number; readonly endpoints: readonly EndpointSpec[] }
  /** tcp services on the engine (src/engine/), on the same loop. */
  | { readonly op: "tcp-add"; readonly spec: TcpEngineSpec }
  | { readonly op: "tcp-retire"; readonly slot: number; readonly abort: boolean }
  | { readonly op: "tcp-origins"; readonly slot: number; readonly endpoints: readonly EndpointSpec[] }
  /** http services on the engine (src/engine/http.ts), on the same loop; origins per pool index. */
  | { readonly op: "http-add"; readonly spec: HttpEngineSpec }
  | { readonly op: "http-retire"; readonly slot: number; readonly abort: boolean }
  | { readonly op: "http-origins"; readonly slot: number; readonly pool: number; readonly endpoints: readonly EndpointSpec[] }
  /** Post every counter the main thread may not have yet (the http engine's), then "synced". */
  | { readonly op: "sync"; readonly id: number }
  | { readonly op: "stop" };

/** UDP worker → main thread. */
export type FromWorker =
  | { readonly op: "started" }
  | { readonly op: "log"; readonly line: string }
  /** The data-plane loop threw: nothing serves this process's engine and UDP sockets any more. */
  | { readonly op: "fatal"; readonly line: string }
  | { readonly op: "retired"; readonly slot: number }
  /** An origin endpoint's port refused a flow (ICMP port unreachable), or answered again after that: passive ejection's input. */
  | { readonly op: "origin"; readonly slot: number; readonly key: string; readonly port: number; readonly ok: boolean }
  /** Flows opened in panic (no endpoint eligible) per endpoint key, since the last such message. */
  | { readonly op: "panics"; readonly slot: number; readonly counts: PanicCounts }
  /** The ring of a log path's lines on this thread (src/log/ring.ts), for the main thread's writer of that file (src/log/access.ts); once per path. */
  | { readonly op: "access-ring"; readonly config: AccessLogConfig; readonly memory: SharedArrayBuffer }
  /** A ring is half full: read it now, not at the writer's next timer. */
  | { readonly op: "access-nudge"; readonly path: string }
  /** A tcp origin port failed a connect (failure), or connected again after failing (no failure). */
  | { readonly op: "tcp-origin"; readonly slot: number; readonly key: string; readonly port: number; readonly failure?: OriginFailure }
  /** A tcp service's open connections per endpoint key (when they changed), and connections sent in panic since the last. */
  | { readonly op: "tcp-active"; readonly slot: number; readonly active: [key: string, n: number][]; readonly panics: PanicCounts }
  /** The engine's busiest clients (every tracked address), for the process's live view. */
  | { readonly op: "tcp-clients"; readonly clients: ClientsSnapshot }
  /** The engine's connections crossed an admission mark: re-steer (Admission.recheck). */
  | { readonly op: "admission" }
  /** An http service's origin port failed a connect (failure), or connected again after failing. */
  | { readonly op: "http-origin"; readonly slot: number; readonly key: string; readonly port: number; readonly failure?: OriginFailure }
  /** An http service's counters (an HttpEngineReport as JSON: a string posts at a fraction of an object's structured clone). */
  | { readonly op: "http-report"; readonly slot: number; readonly report: string }
  /** The busiest clients of the http engine's connections. */
  | { readonly op: "http-clients"; readonly clients: ClientsSnapshot }
  | { readonly op: "synced"; readonly id: number }
  | { readonly op: "stopped" };
