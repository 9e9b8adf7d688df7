/**
 * Why a request was refused before reaching an origin (strict framing, RFC 9112):
 * malformed (400), too_large (413, 431), version (505), unsupported (501: CONNECT,
 * an unknown method or transfer coding), http2 (an HTTP/2 preface, answered with GOAWAY).
 */
export const REFUSAL_REASONS = ["malformed", "too_large", "version", "unsupported", "http2"] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** The refusal reason of a status we answer a request with. */
export function refusalReason(status: number, h2Preface = false): RefusalReason {
  if (h2Preface) return "http2";
  switch (status) {
    case 413:
    case 431:
      return "too_large";
    case 505:
      return "version";
    case 501:
      return "unsupported";
    default:
      return "malformed";
  }
}

/** Requests answered, by status class, and how origin connections were got. */
export interface HttpStatsSnapshot {
  /** "1xx" (interim responses passed on) … "5xx"; our own error responses included. */
  readonly responses: Readonly<Record<string, number>>;
  readonly requests: number;
  readonly originConnectionsOpened: number;
  /** Requests sent on an idle kept-alive origin connection. */
  readonly originConnectionsReused: number;
  /** Requests sent again on a fresh connection after a reused one failed before answering. */
  readonly retries: number;
  /** Requests refused by the framing checks, by reason. */
  readonly refused: Readonly<Record<RefusalReason, number>>;
}

/** Per-service HTTP counters (connection and origin-error counts are in ServiceStats). */
export class HttpStats {
  requests = 0;
  retries = 0;
  // Index = status / 100; typed so counting allocates nothing.
  readonly byClass = new Float64Array(6);
  readonly refused: Record<RefusalReason, number> = { malformed: 0, too_large: 0, version: 0, unsupported: 0, http2: 0 };

  response(status: number): void {
    this.byClass[Math.min(5, Math.floor(status / 100))]!++;
  }

  snapshot(opened: number, reused: number): HttpStatsSnapshot {
    const responses: Record<string, number> = {};
    for (let c = 1; c <= 5; c++) responses[`${c}xx`] = this.byClass[c]!;
    return { responses, requests: this.requests, originConnectionsOpened: opened, originConnectionsReused: reused, retries: this.retries, refused: { ...this.refused } };
  }
}
