import type { Engine, Mode } from "../config/service";
import type { OriginStatus } from "../origin/pool";
import type { HttpStatsSnapshot } from "../proxy/http/stats";
import type { DatagramStats } from "../proxy/udp/stats";
import type { ClientsSnapshot } from "../proxy/clients";

/** Kernel-side counters of one service (struct ep_service_counters, summed over CPUs). */
export interface KernelCounters {
  readonly lookups: bigint;
  readonly steered: bigint;
  readonly missingSocket: bigint;
  readonly assignError: bigint;
  /** Refused by the service's access rules (SK_DROP at lookup). */
  readonly denied: bigint;
  /** SYNs refused at lookup by a per-client limit (source_connections, source_rate). */
  readonly limited?: { readonly connections: bigint; readonly rate: bigint };
  /*
   * The member selection of the service's TCP groups (ep_migrate, struct
   * ep_reuse_counters): the hashed worker was at its cap and another took
   * the connection; every worker was at its cap and the kernel refused it;
   * a closing listener's connection moved to a worker with room, or (none
   * had room) to the kernel's hash; no worker was below its soft mark and
   * one inside its headroom took it (struct ep_reuse_tier_counters).
   */
  readonly redirected: bigint;
  readonly full: bigint;
  readonly migrated: bigint;
  readonly migratedUnselected: bigint;
  readonly secondTier: bigint;
}

/** Data-plane figures of one service run by this process. */
export interface ConnectionStats {
  readonly active: number;
  readonly total: number;
  readonly bytesFromClients: number;
  readonly bytesFromOrigins: number;
  /** Origin failures by class: refused, timeout, reset, unreachable, other. */
  readonly originErrors: Readonly<Record<string, number>>;
  readonly clientResets: number;
  readonly idleTimeouts: number;
  /** Inbound PROXY headers refused (accept_proxy), by reason: signature, malformed, too_long, truncated, timeout. */
  readonly proxyHeaderErrors: Readonly<Record<string, number>>;
  /** TLS-terminating services: handshakes that failed or did not finish in time, by reason: failed, timeout. */
  readonly tlsHandshakeErrors: Readonly<Record<string, number>>;
  /**
   * Connections reset because this process lacked a resource for them, by reason: buffers (the tcp
   * engine's buffer pool was empty when a PROXY header had to be held), epoll (the kernel refused to
   * watch the socket: fs.epoll.max_user_watches, or memory). Absent in snapshots from older processes.
   */
  readonly localResourceResets?: Readonly<Record<string, number>>;
  /** origin_tls: handshakes with origins that failed, by reason: verify, name, protocol, timeout. Absent in snapshots from older processes. */
  readonly originTlsErrors?: Readonly<Record<string, number>>;
  /** TLS-terminating services: handshakes completed, by SNI match: exact, wildcard, default, none. */
  readonly tlsHandshakes?: Readonly<Record<string, number>>;
  /** Certificate reloads by result: ok, failed. */
  readonly tlsCertificateReloads?: Readonly<Record<string, number>>;
  /** The certificates served (name: the first of its names), notAfter in Unix seconds (not added up over workers). */
  readonly tlsCertificates?: readonly { readonly name: string; readonly file: string; readonly notAfter: number }[];
  /** Connections closed at a client stage's deadline, by stage: proxy_header, tls_handshake, request_head, keepalive, request_body. */
  readonly deadlinesExpired: Readonly<Record<string, number>>;
  /** Connection durations in seconds, cumulative Prometheus-style buckets (le ascending, last is +Inf). */
  readonly duration: { readonly buckets: readonly { le: number; count: number }[]; readonly sum: number; readonly count: number };
}

/** tcp services with sni routes: per route (and "default", the service's own origins), and why connections matched none or were refused. */
export interface SniSnapshot {
  readonly routes: readonly { readonly route: string; readonly sni: string; readonly connections: number; readonly bytesFromClients: number; readonly bytesFromOrigins: number }[];
  /** Connections sent to the service's own origins, by why: no_sni, unknown_name, not_tls. */
  readonly unmatched: Readonly<Record<string, number>>;
  /** ClientHellos refused (connection reset), by reason (proxy/sni/hello.ts HelloError). */
  readonly parseErrors: Readonly<Record<string, number>>;
  /** Unmatched connections reset because the service has no origins of its own. */
  readonly noRoute: number;
}

export interface BindingSnapshot {
  readonly protocol: "tcp" | "udp";
  /** "192.0.2.0/24" */
  readonly prefix: string;
  /** "80" or "8000-8999" */
  readonly ports: string;
}

export interface SocketSnapshot {
  readonly protocol: "tcp" | "udp";
  readonly family: 4 | 6;
  /** The process that registered it and its fd number there (0 when unknown), as seen in its own PID namespace. */
  readonly pid: number;
  readonly fd: number;
  /** The socket's cookie (SO_COOKIE): what identifies it across namespaces. In JSON a number (a string above 2^53: src/json.ts). */
  readonly cookie: bigint;
}

export interface ServiceSnapshot {
  readonly name: string;
  readonly id: number;
  /** Absent for services this process does not run (registered external sockets). */
  readonly mode?: Mode;
  /** tcp and http services this process runs: the data plane serving them ("epoll": src/engine/, "bun": Bun's sockets; config/service.ts completeEngine). */
  readonly engine?: Engine;
  /** "127.0.0.1:9000", "10.0.0.1 (port-preserving)", "built-in responder", or absent. */
  readonly origin?: string;
  readonly bindings: readonly BindingSnapshot[];
  readonly sockets: readonly SocketSnapshot[];
  readonly kernel: KernelCounters;
  /** TCP services this process runs. */
  readonly connections?: ConnectionStats;
  /** UDP services this process runs. */
  readonly datagrams?: DatagramStats;
  /** Services this process runs with an origin pool: each origin's endpoints, health and load. */
  readonly origins?: readonly OriginStatus[];
  /** tcp services with sni routes this process runs. */
  readonly sni?: SniSnapshot;
  /** HTTP services this process runs: responses by status class, origin connection reuse. */
  readonly http?: HttpStatsSnapshot;
  /** Services this process runs with per-client limits: connections (udp: flows) it refused at accept, by limit. */
  readonly sourceLimited?: { readonly connections: number; readonly rate: number };
}

export interface StatusSnapshot {
  readonly version: string;
  readonly pid: number;
  /** Unix seconds. */
  readonly startedAt: number;
  /** Where the dispatcher is pinned, e.g. /sys/fs/bpf/edgeproxy/4026532177. */
  readonly pinPath: string;
  /** "ok" while what steers this process's traffic is in place (server/watchdog.ts), else why not; absent where unchecked. */
  readonly steering?: string;
  readonly services: readonly ServiceSnapshot[];
  /** Lookups that matched no binding (service 0). */
  readonly unmatchedLookups: bigint;
  /**
   * This process's connection cap: its share of --max-connections with
   * workers; refused = admitted by the kernel over the cap and reset here;
   * accepting = offered in its groups' member selection (below the cap), and
   * how often it left it at the cap and rejoined below the resume mark.
   */
  readonly capacity: {
    readonly max: number;
    readonly active: number;
    readonly refused: number;
    readonly accepting: boolean;
    readonly left: number;
    readonly rejoined: number;
  };
  /** This process's access log counters (src/log/access.ts); absent from snapshots made elsewhere. */
  readonly accessLog?: { readonly lines: number; readonly dropped: number; readonly writeErrors: number; readonly sampledOut: number };
  /** This process's busiest client addresses (src/proxy/clients.ts); absent from snapshots made elsewhere. */
  readonly clients?: ClientsSnapshot;
}

/** GET /instance: who answers on this admin socket (what control commands find instances by). */
export interface InstanceIdentity {
  readonly instance: string;
  /** The serving process: the supervisor with workers. */
  readonly pid: number;
  /** The config file, absent for a flag-started serve. */
  readonly source?: string;
  readonly workers: number;
  readonly version?: string;
  /** Unix seconds. */
  readonly startedAt?: number;
}

/**
 * What the admin API needs from a running edgeproxy. Methods throw
 * ConfigError (src/errors.ts) for bad input, which the API maps to 4xx;
 * any other error is a 5xx.
 */
export interface AdminBackend {
  status(): StatusSnapshot;
  /**
   * Resolves once the counters status() reads are current: the data plane's
   * thread posts some a little late (http services on the engine), so a
   * read first asks it for them (bounded). Absent: always current.
   */
  fresh?(): Promise<void>;
  /** Add (protocol, prefix, ports) to a service; idempotent. Throws ConfigError on bad input or unknown service. */
  addBinding(service: string, protocol: string, prefix: string, ports: string): void | Promise<void>;
  /** Remove a binding; false when it was not there. */
  removeBinding(service: string, protocol: string, prefix: string, ports: string): boolean;
  /** Re-read the config file and apply the difference; resolves to a one-line summary. Throws ConfigError when the new config is bad (nothing changes). */
  reload(): Promise<string | void>;
  /**
   * Start a new edgeproxy process (this binary, or `binary`) with the same
   * arguments, wait until it serves, then drain this one. Resolves to a
   * one-line summary once the new process is ready; throws when it fails to
   * start (this one keeps serving). Absent where upgrades are not possible.
   */
  upgrade?(binary?: string): Promise<string>;
  /** GET /instance; absent in a worker (its supervisor answers). */
  identity?(): InstanceIdentity;
  /** POST /drain: stop taking connections, let open ones finish, exit; resolves to a one-line summary. Absent in a worker. */
  drain?(): string;
  /** Why /healthz must not say ok (the steering is gone, the process stops), or undefined. Absent: always ok. */
  health?(): string | undefined;
}
