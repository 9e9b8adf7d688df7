import type { ConnectionStats } from "../admin/backend";
import type { DeadlineStage } from "../config/deadlines";
import type { LocalResource } from "../system/lack";

/** Upper bounds in seconds of the connection-duration histogram's buckets (+Inf is implicit). */
export const DURATION_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600,
];

// A typed copy so observe() scans flat doubles.
const BOUNDS = Float64Array.from(DURATION_BUCKETS);

/** Per-service data-plane counters, read by status and metrics. */
export class ServiceStats {
  connectionsActive = 0;
  connectionsTotal = 0;
  bytesFromClients = 0;
  bytesFromOrigins = 0;
  /** Origin failures by class: refused, timeout, reset, unreachable, other. */
  readonly originErrors = new Map<string, number>();
  clientResets = 0;
  idleTimeouts = 0;
  /** Inbound PROXY headers refused, by reason: signature, malformed, too_long, truncated, timeout. */
  readonly proxyHeaderErrors = new Map<string, number>();
  /** TLS handshakes that failed or did not finish in time (tls services): failed, timeout. */
  readonly tlsHandshakeErrors = new Map<string, number>();
  /** TLS handshakes with origins (origin_tls) that failed, by reason: verify, name, protocol, timeout. */
  readonly originTlsErrors = new Map<string, number>();
  /** Connections reset because this process lacked a resource for them (LOCAL_RESOURCES). */
  readonly localResourceResets = new Map<LocalResource, number>();
  /** TLS handshakes completed, by how the client's SNI matched a certificate: exact, wildcard, default (unknown name), none (no SNI). */
  readonly tlsHandshakes = new Map<string, number>();
  /** Certificate reloads (files changed, or `reload`), by result: ok, failed (the previous certificate kept). */
  readonly tlsCertificateReloads = new Map<string, number>();
  /** The certificates served now (tls/certstore.ts sets it): first name, notAfter in Unix seconds. */
  tlsCertificates: readonly { readonly name: string; readonly file: string; readonly notAfter: number }[] = [];
  /** Connections closed because a client stage's deadline passed (see config/deadlines.ts), by stage. */
  readonly deadlinesExpired = new Map<DeadlineStage, number>();
  /** Connection durations: per-bucket (not cumulative) counts; the last slot is +Inf. */
  readonly durationCounts = new Float64Array(BOUNDS.length + 1);
  durationSum = 0;
  durationCount = 0;

  originError(kind: string): void {
    this.originErrors.set(kind, (this.originErrors.get(kind) ?? 0) + 1);
  }

  tlsHandshakeError(reason: "failed" | "timeout"): void {
    this.tlsHandshakeErrors.set(reason, (this.tlsHandshakeErrors.get(reason) ?? 0) + 1);
  }

  localResourceReset(reason: LocalResource): void {
    this.localResourceResets.set(reason, (this.localResourceResets.get(reason) ?? 0) + 1);
  }

  originTlsError(reason: string): void {
    this.originTlsErrors.set(reason, (this.originTlsErrors.get(reason) ?? 0) + 1);
  }

  tlsHandshake(match: string): void {
    this.tlsHandshakes.set(match, (this.tlsHandshakes.get(match) ?? 0) + 1);
  }

  tlsCertificateReload(result: "ok" | "failed"): void {
    this.tlsCertificateReloads.set(result, (this.tlsCertificateReloads.get(result) ?? 0) + 1);
  }

  deadlineExpired(stage: DeadlineStage): void {
    this.deadlinesExpired.set(stage, (this.deadlinesExpired.get(stage) ?? 0) + 1);
  }

  proxyHeaderError(reason: string): void {
    this.proxyHeaderErrors.set(reason, (this.proxyHeaderErrors.get(reason) ?? 0) + 1);
  }

  /** Record one connection's duration; allocates nothing (runs once per connection). */
  observe(seconds: number): void {
    // Buckets are "less than or equal" (Prometheus `le`); a linear scan beats
    // bisection on 16 bounds and most connections end in the first few.
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]!) i++;
    this.durationCounts[i]!++;
    this.durationSum += seconds;
    this.durationCount++;
  }

  /** A copy in the admin API's shape, with cumulative buckets. */
  snapshot(): ConnectionStats {
    const buckets: { le: number; count: number }[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.durationCounts.length; i++) {
      cumulative += this.durationCounts[i]!;
      buckets.push({ le: i < BOUNDS.length ? BOUNDS[i]! : Infinity, count: cumulative });
    }
    return {
      active: this.connectionsActive,
      total: this.connectionsTotal,
      bytesFromClients: this.bytesFromClients,
      bytesFromOrigins: this.bytesFromOrigins,
      originErrors: Object.fromEntries(this.originErrors),
      clientResets: this.clientResets,
      idleTimeouts: this.idleTimeouts,
      proxyHeaderErrors: Object.fromEntries(this.proxyHeaderErrors),
      tlsHandshakeErrors: Object.fromEntries(this.tlsHandshakeErrors),
      originTlsErrors: Object.fromEntries(this.originTlsErrors),
      localResourceResets: Object.fromEntries(this.localResourceResets),
      tlsHandshakes: Object.fromEntries(this.tlsHandshakes),
      tlsCertificateReloads: Object.fromEntries(this.tlsCertificateReloads),
      tlsCertificates: this.tlsCertificates.map((c) => ({ ...c })),
      deadlinesExpired: Object.fromEntries(this.deadlinesExpired),
      duration: { buckets, sum: this.durationSum, count: this.durationCount },
    };
  }
}


/** Map a socket error code to a coarse class for metrics. */
export function errorClass(code: string | undefined): "refused" | "reset" | "timeout" | "unreachable" | "other" {
  switch (code) {
    case "ECONNREFUSED":
      return "refused";
    case "ECONNRESET":
    case "EPIPE":
      return "reset";
    case "ETIMEDOUT":
      return "timeout";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "unreachable";
    default:
      return "other";
  }
}
