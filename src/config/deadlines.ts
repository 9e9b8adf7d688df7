import { ConfigError } from "../errors";
import type { Mode } from "./service";

/*
 * The deadline of every stage a client can stall before (or between) the
 * requests it is served, per service. Each is on by default and counted when
 * it fires (edgeproxy_deadline_expired_total{stage}); the origin-side
 * timeouts (connect_timeout, first_byte_timeout) and idle_timeout are
 * separate.
 */
export interface Deadlines {
  /** accept_proxy: the PROXY header complete within this from accept. */
  readonly proxyHeaderMs: number;
  /** tls: the TLS handshake complete within this from accept (after a balancer's PROXY header: from its end). */
  readonly handshakeMs: number;
  /**
   * http: a request head complete within this from its first byte; a new
   * connection's first request from accept (a client connects to send one,
   * as nginx's client_header_timeout counts it).
   */
  readonly headerMs: number;
  /**
   * http: between requests, the next one must start within this. Together
   * with idle_timeout, which still applies: the shorter one wins.
   */
  readonly keepaliveMs: number;
  /** http: the longest gap without request body bytes while the client may send (not while we hold it back). */
  readonly bodyMs: number;
}

export type DeadlineStage = "proxy_header" | "tls_handshake" | "request_head" | "keepalive" | "request_body";

/** The stages each mode has, in pipeline order: the series /metrics shows for a service. */
export const DEADLINE_STAGES: Readonly<Record<"tcp" | "http", readonly DeadlineStage[]>> = {
  tcp: ["proxy_header", "tls_handshake"],
  http: ["proxy_header", "tls_handshake", "request_head", "keepalive", "request_body"],
};

export const DEADLINE_DEFAULTS: Deadlines = {
  // proxy-protocol.txt §2: "at least 3 seconds", to cover a TCP retransmit; 5 s was the old default (max(3 s, connect_timeout)).
  proxyHeaderMs: 5_000,
  // A ClientHello and our answer are a couple of round trips; 10 s covers slow mobile links (nginx: ssl_handshake_timeout 60 s).
  handshakeMs: 10_000,
  // nginx's client_header_timeout is 60 s; issue 15 wants at most 30 s.
  headerMs: 30_000,
  // nginx: keepalive_timeout 75 s; HAProxy: timeout http-keep-alive. 60 s keeps a browser's idle connection for a page's lifetime.
  keepaliveMs: 60_000,
  // nginx: client_body_timeout 60 s, a gap between two reads (see src/proxy/http/endings.ts sweep for why a gap, not a rate).
  bodyMs: 60_000,
};

/** Where each deadline is set: its TOML key in the service table and its flag. */
export const DEADLINE_KEYS: readonly { readonly field: keyof Deadlines; readonly key: string; readonly flag: string; readonly needs: "accept_proxy" | "tls" | "http" }[] = [
  { field: "proxyHeaderMs", key: "proxy_header_timeout", flag: "--proxy-header-timeout", needs: "accept_proxy" },
  { field: "handshakeMs", key: "handshake_timeout", flag: "--handshake-timeout", needs: "tls" },
  { field: "headerMs", key: "header_timeout", flag: "--header-timeout", needs: "http" },
  { field: "keepaliveMs", key: "keepalive_timeout", flag: "--keepalive-timeout", needs: "http" },
  { field: "bodyMs", key: "body_timeout", flag: "--body-timeout", needs: "http" },
];

/**
 * Complete the deadlines given (by key) with the defaults. A deadline for a
 * stage the service does not have is refused, so a typo'd mode or a missing
 * tls_cert is not silently ignored. `at(i)` names entry i of DEADLINE_KEYS in messages.
 */
export function completeDeadlines(
  given: Partial<Record<keyof Deadlines, number>>,
  s: { readonly mode: Mode; readonly tls: boolean; readonly acceptProxy: boolean },
  at: (k: (typeof DEADLINE_KEYS)[number]) => string,
): Deadlines {
  for (const k of DEADLINE_KEYS) {
    if (given[k.field] === undefined) continue;
    if (k.needs === "http" && s.mode !== "http") throw new ConfigError(at(k), `is for http services; this one is ${s.mode}`);
    if (k.needs === "tls" && (s.mode === "udp" || !s.tls)) throw new ConfigError(at(k), "applies to TLS-terminating services (give a certificate and key too)");
    if (k.needs === "accept_proxy" && (s.mode === "udp" || !s.acceptProxy)) throw new ConfigError(at(k), "applies to services that accept PROXY headers (give accept_proxy prefixes too)");
  }
  return { ...DEADLINE_DEFAULTS, ...Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) };
}
