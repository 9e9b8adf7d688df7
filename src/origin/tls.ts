// TLS to a pool's origins (origin_tls): the options Bun.connect gets, and the
// verdict on a finished handshake. Bun (BoringSSL) checks the chain against
// `ca` (else its built-in Mozilla store) and the certificate's names against
// `serverName` (else the address dialled) itself, and reports both in the
// `handshake(socket, success, error)` handler; with rejectUnauthorized it
// also closes the connection on a failed check. We decide on that verdict
// ourselves as well (verdict()), so a refusal is counted by reason and never
// depends on the close alone. Measured with Bun 1.4.5 (see the tests in
// test/origin-tls.test.ts): a wrong CA gives UNABLE_TO_VERIFY_LEAF_SIGNATURE,
// a wrong name ERR_TLS_CERT_ALTNAME_INVALID, a plaintext origin EPROTO.
import { createSecureContext } from "node:tls";
import { parseAddress } from "../config/address";
import type { OriginTlsConfig } from "../config/pool";

/** Why a handshake with an origin failed: its certificate's chain, its names, the protocol (or the peer left), or the connect deadline. */
export type OriginTlsReason = "verify" | "name" | "protocol" | "timeout";
export const ORIGIN_TLS_REASONS: readonly OriginTlsReason[] = ["verify", "name", "protocol", "timeout"];

/** What Bun.connect's `tls` takes (the fields we use). */
export interface ConnectTls {
  /** Bun's native context of node:tls createSecureContext: the CAs (and client certificate) parsed once per pool. */
  readonly secureContext?: unknown;
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  /** "" sends no SNI (an IP literal origin); the certificate is then checked against the address. */
  readonly serverName: string;
  readonly rejectUnauthorized: boolean;
}

/** A refused origin handshake, as the data plane passes it to its failure paths (code ORIGIN_TLS). */
export class OriginTlsError extends Error {
  readonly code = "ORIGIN_TLS";
  constructor(
    readonly reason: OriginTlsReason,
    /** OpenSSL's or Bun's code: UNABLE_TO_VERIFY_LEAF_SIGNATURE, ERR_TLS_CERT_ALTNAME_INVALID, EPROTO... */
    readonly detail: string,
  ) {
    super(`TLS handshake failed (${reason}: ${detail})`);
  }
}

// The name check's code (node's checkServerIdentity, which Bun follows).
const NAME_CODES = new Set(["ERR_TLS_CERT_ALTNAME_INVALID"]);
// X.509 path validation results (OpenSSL's X509_V_ERR_* names, as node spells them).
const VERIFY_CODES = /^(UNABLE_TO_|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|INVALID_CA|PATH_LENGTH_EXCEEDED|INVALID_PURPOSE|CERT_UNTRUSTED|CERT_REJECTED|HOSTNAME_MISMATCH|ERR_TLS_CERT)/;

/** What names a TLS error best: BoringSSL's reason (TLSV1_ALERT_CERTIFICATE_REQUIRED, WRONG_VERSION_NUMBER) for EPROTO, else the code. */
export function detailOf(error: unknown): string {
  const e = error as { code?: string; message?: string } | undefined;
  const reason = e?.code === "EPROTO" ? /:([A-Z0-9_]+)$/.exec(e.message ?? "")?.[1] : undefined;
  return reason ?? e?.code ?? e?.message ?? "handshake failed";
}

/**
 * An error on an origin TLS connection after our side of the handshake but
 * before the origin's first byte that is the origin refusing it: a TLS
 * alert (EPROTO). With TLS 1.3 the server checks a client certificate after
 * the client has finished (RFC 8446 §4.4.2, §6.2: certificate_required), so a
 * refused client certificate arrives as such an alert, not in the handshake.
 */
export function lateRefusal(error: unknown): OriginTlsError | undefined {
  return (error as { code?: string } | undefined)?.code === "EPROTO" ? new OriginTlsError("protocol", detailOf(error)) : undefined;
}

/** The reason a handshake error is counted under. */
export function reasonOf(error: unknown): OriginTlsReason {
  const code = (error as { code?: string } | undefined)?.code ?? "";
  if (NAME_CODES.has(code)) return "name";
  if (VERIFY_CODES.test(code)) return "verify";
  return "protocol";
}

/**
 * One pool's TLS to its origins. Options are made once per origin host
 * name (the SNI follows it) and handed to every connect as the same object.
 */
export class OriginTls {
  private readonly byHost = new Map<string, ConnectTls>();
  /** Distinguishes this pool's TLS settings in connection-reuse keys (http keep-alive). */
  readonly id: number;
  private static next = 0;

  // With origin_ca, the CAs (and client certificate) go to Bun as one native context made here: given as PEM
  // text, Bun parses them at every connect (measured with Bun 1.4.5: a 220 KB bundle cost 0.2 ms per
  // handshake, 1,330 against 1,770 handshakes/s); the context keeps the chain and name checks (tested).
  // Without origin_ca no context is made, so Bun's built-in store stays the one used.
  private readonly context: unknown;

  constructor(readonly config: OriginTlsConfig) {
    this.id = ++OriginTls.next;
    this.context = config.ca === undefined ? undefined : (createSecureContext({ ca: config.ca, ...(config.cert !== undefined ? { cert: config.cert, key: config.key } : {}) }) as unknown as { context: unknown }).context;
  }

  get verify(): boolean {
    return this.config.mode === "verify";
  }

  /** The options for a connect to an endpoint of the origin configured as `originHost` (a name or an IP literal). */
  options(originHost: string): ConnectTls {
    let o = this.byHost.get(originHost);
    if (o) return o;
    const c = this.config;
    o = {
      ...(this.context !== undefined ? { secureContext: this.context } : c.cert !== undefined ? { cert: c.cert, key: c.key } : {}),
      serverName: this.serverName(originHost),
      rejectUnauthorized: this.verify,
    };
    this.byHost.set(originHost, o);
    return o;
  }

  /** origin_sni; else the origin's name (without a trailing dot); else none for an IP literal (RFC 6066 §3). */
  serverName(originHost: string): string {
    if (this.config.sni !== undefined) return this.config.sni;
    return parseAddress(originHost) ? "" : originHost.replace(/\.$/, "");
  }

  /**
   * The verdict on a finished handshake (Bun's `handshake` handler): undefined
   * to go on, or why not. insecure accepts any certificate (chain and name),
   * never a broken protocol.
   */
  verdict(success: boolean, error: unknown): OriginTlsError | undefined {
    if (success && !error) return undefined;
    const reason = error ? reasonOf(error) : "protocol";
    if (!this.verify && reason !== "protocol") return undefined;
    if (success && !this.verify) return undefined;
    return new OriginTlsError(reason, detailOf(error));
  }
}
