import type { HttpConfig, ServiceConfig } from "../../config/service";
import type { Member, OriginPool } from "../../origin/pool";
import type { Admission } from "../admission";
import type { CoarseClock } from "../clock";
import { localResourceOf, type LocalResource } from "../../system/lack";
import { errorClass, type ServiceStats } from "../stats";
import type { OriginConn, OriginConnections, OriginUser } from "./origins";
import type { HttpRouter } from "./router";
import type { HttpStats } from "./stats";
import type { ServiceLog } from "../../log/access";
import { OriginTlsError } from "../../origin/tls";
import { HeadError, type ResponseHead } from "./message";
import { headEnd, parseResponseHead } from "./parse";

/**
 * What a request needs of a route's pool: the main thread's OriginPool, or
 * the engine thread's copy of its endpoints (src/engine/httppool.ts).
 */
export type RoutePool = Pick<OriginPool, "pick" | "followsEdgePort" | "tls">;

/** What every client connection of one http service shares. */
export interface HttpContext {
  readonly config: ServiceConfig;
  readonly http: HttpConfig;
  /** Routes straight to the running pools. */
  readonly router: HttpRouter<RoutePool>;
  readonly origins: OriginConnections;
  /** The coarse clock (its `now`): the service's CoarseClock, or the engine loop's. */
  readonly clock: Pick<CoarseClock, "now">;
  readonly stats: ServiceStats;
  readonly httpStats: HttpStats;
  readonly proto: "http" | "https";
  /**
   * The process's connection cap (admission.ts), which budgets two descriptors
   * per client connection (it and one origin connection). An HTTP/2 session's
   * streams each hold an origin connection: those past its first take a slot
   * of their own (h2.ts holdOrigin), so accept() still never meets EMFILE.
   */
  readonly admission: Pick<Admission, "admit" | "leave">;
  /** Client connections past the pipeline's stages, for a drain (the pipeline sweeps and aborts them). */
  readonly active: Set<{ drainService(): void }>;
  /** The service's access log; absent: off (nothing is recorded per request). */
  readonly log?: ServiceLog;
  /** Stopping (an upgrade or SIGQUIT): every response says `Connection: close` and ends its connection. */
  draining: boolean;
}

/** Queued bytes above which the sending side is paused (as in relay.ts). */
export const HIGH_WATER = 256 * 1024;

/** An origin's response head may be at most this long. */
export const MAX_RESPONSE_HEAD = 64 * 1024;

const NO_BYTES = new Uint8Array(0);
/** Tails up to this size are copied, not viewed (readResponseHead). */
const COPY_TAIL = 1024;

/**
 * The origin's response head at the start of `buf`, for the HTTP/1.1 and HTTP/2 exchanges alike:
 * undefined while it is incomplete and within MAX_RESPONSE_HEAD; a HeadError when it is larger or
 * malformed; else the head, its length with the blank line, and the bytes after it. A small tail is
 * copied: a view (subarray) of a small socket chunk makes JSC give the chunk an ArrayBuffer of its
 * own first (measured: 2% of the CPU of a proxied h2 request, the tail being a 3-byte body).
 */
export function readResponseHead(buf: Uint8Array): undefined | HeadError | { head: ResponseHead; headLength: number } {
  const end = headEnd(buf);
  if (end < 0) return buf.length > MAX_RESPONSE_HEAD ? new HeadError(502, `response head larger than ${MAX_RESPONSE_HEAD} bytes`) : undefined;
  const head = parseResponseHead(buf, end);
  if (head instanceof HeadError) return head;
  return { head, headLength: end + 4 };
}

/**
 * The bytes of `buf` after its head (`headLength`), for the paths that keep
 * or forward them apart from the head; the verbatim path sends them with the
 * head from `buf` itself and makes no tail (a small one is a copy: a new
 * buffer per response).
 */
export function tailAfter(buf: Uint8Array, headLength: number): Uint8Array {
  return headLength === buf.length ? NO_BYTES : buf.length - headLength <= COPY_TAIL ? buf.slice(headLength) : buf.subarray(headLength);
}

/** After our own error response, how long a client may go on sending before the connection is closed (RFC 9112 §9.6 lingering close). */
export const LINGER_MS = 2_000;

// RFC 9110 §9.2.2.
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
export const idempotent = (method: string) => IDEMPOTENT.has(method);

/** Why an origin connection failed: its class (origin_errors_total), a phrase for the 502 body, and `local`: the resource this host lacked, when it is not the origin's doing (localResourceOf). */
export interface OriginCause {
  readonly kind: "refused" | "timeout" | "unreachable" | "reset" | "tls" | "other";
  readonly text: string;
  readonly local?: LocalResource;
}

/** Class of a socket error (errorClass, as the tcp relay's), for metrics and ejection, and a phrase for the 502 body. */
export function originCause(error: unknown): OriginCause {
  if (error instanceof OriginTlsError) return { kind: "tls", text: error.message };
  const code = (error as { code?: string } | undefined)?.code ?? "";
  const local = localResourceOf(code);
  if (local) return { kind: "other", text: `this proxy is out of ${local === "ports" ? "local ports to the origin" : "resources"} (${code})`, local };
  const kind = errorClass(code);
  switch (kind) {
    case "refused":
      return { kind, text: "connection refused" };
    case "reset":
      return { kind, text: "connection reset" };
    case "timeout":
      return { kind, text: "connect timed out" };
    case "unreachable":
      return { kind, text: `unreachable (${code})` };
    default:
      return { kind, text: code || (error as Error | undefined)?.message || "unknown error" };
  }
}

/**
 * An origin connection's failure, counted: origin_errors_total by class, the origin TLS handshake's
 * reason, and a local lack's resource (local_resource_resets_total). Its cause for the 502 and, unless
 * `local`, for the member's passive ejection.
 */
export function countOriginFailure(stats: ServiceStats, error: unknown): OriginCause {
  const cause = originCause(error);
  stats.originError(cause.kind);
  if (error instanceof OriginTlsError) stats.originTlsError(error.reason);
  if (cause.local) stats.localResourceReset(cause.local);
  return cause;
}

/** An origin connection that closed, with `error` or none (a close before the response ended: class reset), counted as countOriginFailure does. */
export function countOriginClose(stats: ServiceStats, error: unknown): OriginCause {
  if (error) return countOriginFailure(stats, error);
  stats.originError("reset");
  return CLOSED_EARLY;
}
const CLOSED_EARLY: OriginCause = { kind: "reset", text: "closed the connection before responding" };

/**
 * The origin of `pool` one request goes to, for HTTP/1.1 and HTTP/2 alike:
 * picked by the client (and the edge port for pools that follow it), counted
 * as acquired, and a connection to it for `user` (kept-alive or new, with the
 * pool's origin_tls). undefined: no healthy origin (counted; the caller
 * answers 503).
 */
export function requestOrigin(ctx: HttpContext, pool: RoutePool, clientIp: string, edgePort: () => number, user: OriginUser): { member: Member; conn: OriginConn } | undefined {
  const pick = pool.pick(clientIp, pool.followsEdgePort ? edgePort() : 0);
  if (!pick) {
    ctx.stats.originError("no_origin");
    return undefined;
  }
  pick.member.acquired();
  const tls = pool.tls;
  return { member: pick.member, conn: ctx.origins.get(pick.host, pick.port, user, false, tls && { tls, originHost: pick.member.origin.host }) };
}
