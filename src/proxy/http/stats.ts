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

/**
 * Why an HTTP/2 session was ended by us or its codec (h2.ts): rapid_reset (more
 * client resets than the budget, GOAWAY ENHANCE_YOUR_CALM), flood (node:http2's
 * own flood detection: control frames, CONTINUATION, empty frames), protocol
 * (malformed frames, HPACK errors, header lists over the limit),
 * settings_timeout (no preface and SETTINGS in time), idle (idle_timeout).
 */
export const H2_CLOSE_REASONS = ["rapid_reset", "flood", "protocol", "settings_timeout", "idle"] as const;
export type H2CloseReason = (typeof H2_CLOSE_REASONS)[number];

/** HTTP/2 counters of a service. */
export interface H2StatsSnapshot {
  readonly sessions: number;
  readonly streams: number;
  /** Streams the client reset before their response was complete. */
  readonly streamResets: number;
  readonly closed: Readonly<Record<H2CloseReason, number>>;
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
  readonly h2: H2StatsSnapshot;
}

/** Per-service HTTP counters (connection and origin-error counts are in ServiceStats). */
export class HttpStats {
  requests = 0;
  retries = 0;
  // Index = status / 100; typed so counting allocates nothing.
  readonly byClass = new Float64Array(6);
  readonly refused: Record<RefusalReason, number> = { malformed: 0, too_large: 0, version: 0, unsupported: 0, http2: 0 };

  readonly h2 = { sessions: 0, streams: 0, streamResets: 0, closed: { rapid_reset: 0, flood: 0, protocol: 0, settings_timeout: 0, idle: 0 } as Record<H2CloseReason, number> };

  response(status: number): void {
    this.byClass[Math.min(5, Math.floor(status / 100))]!++;
  }

  snapshot(opened: number, reused: number): HttpStatsSnapshot {
    const responses: Record<string, number> = {};
    for (let c = 1; c <= 5; c++) responses[`${c}xx`] = this.byClass[c]!;
    return { responses, requests: this.requests, originConnectionsOpened: opened, originConnectionsReused: reused, retries: this.retries, refused: { ...this.refused }, h2: { ...this.h2, closed: { ...this.h2.closed } } };
  }
}
