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
}

/** Per-service HTTP counters (connection and origin-error counts are in ServiceStats). */
export class HttpStats {
  requests = 0;
  retries = 0;
  // Index = status / 100; typed so counting allocates nothing.
  readonly byClass = new Float64Array(6);

  response(status: number): void {
    this.byClass[Math.min(5, Math.floor(status / 100))]!++;
  }

  snapshot(opened: number, reused: number): HttpStatsSnapshot {
    const responses: Record<string, number> = {};
    for (let c = 1; c <= 5; c++) responses[`${c}xx`] = this.byClass[c]!;
    return { responses, requests: this.requests, originConnectionsOpened: opened, originConnectionsReused: reused, retries: this.retries };
  }
}
