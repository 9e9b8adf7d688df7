// TLS to origins (Cloudflare Spectrum's "Full (strict)" and "Full" modes):
// origin_tls, origin_ca, origin_sni, origin_cert, origin_key, completed once
// into a read-only OriginTlsConfig, for the file and the command line alike.
import { createSecureContext } from "node:tls";
import { ConfigError } from "../errors";
import { parseAddress } from "./address";
import type { OriginTlsConfig, OriginTlsMode } from "./pool";
import type { Mode } from "./service";
import { readPem } from "./tls";

export const ORIGIN_TLS_FIELDS = ["origin_tls", "origin_ca", "origin_sni", "origin_cert", "origin_key"];
const MODES: readonly (OriginTlsMode | "off")[] = ["off", "verify", "insecure"];
// RFC 6066 §3: a HostName is a DNS name (no IP literal, no trailing dot), 253 bytes at most.
const SNI = /^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

/** The origin TLS keys of one table (a service, a route, or the command line), as given. */
export interface OriginTlsSettings {
  readonly mode?: string;
  readonly caFile?: string;
  readonly sni?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
}

/** Where each key was given, for messages. */
export type OriginTlsWhere = (key: "origin_tls" | "origin_ca" | "origin_sni" | "origin_cert" | "origin_key") => string;

/** A route's keys over its service's: each key a route sets replaces the service's. */
export function mergeOriginTls(service: OriginTlsSettings, route: OriginTlsSettings): OriginTlsSettings {
  const out: Record<string, string> = {};
  for (const s of [service, route]) for (const [k, v] of Object.entries(s)) if (v !== undefined) out[k] = v;
  return out;
}

/**
 * The completed settings: undefined for off (the default). Files are read
 * now, and the key is matched against the certificate and the CA parsed, so
 * a bad file fails the config (one line), not every connection later.
 */
export function completeOriginTls(s: OriginTlsSettings, mode: Mode, at: OriginTlsWhere, read: (path: string) => string): OriginTlsConfig | undefined {
  const given = (["caFile", "sni", "certFile", "keyFile"] as const).filter((k) => s[k] !== undefined);
  const keyOf = { caFile: "origin_ca", sni: "origin_sni", certFile: "origin_cert", keyFile: "origin_key" } as const;
  if (s.mode !== undefined && !MODES.includes(s.mode as OriginTlsMode)) throw new ConfigError(at("origin_tls"), `"${s.mode}" is not one of ${MODES.join(", ")}`);
  if (s.mode === undefined || s.mode === "off") {
    // Set without origin_tls, a key would be silently ignored; after an explicit "off" (a route turning its service's TLS off) it is.
    if (s.mode === undefined && given.length) throw new ConfigError(at(keyOf[given[0]!]), `needs origin_tls = "verify" or "insecure"`);
    return undefined;
  }
  if (mode === "udp") throw new ConfigError(at("origin_tls"), "udp origins get datagrams; there is no TLS to them (DTLS is not supported)");
  if (s.sni !== undefined && (!SNI.test(s.sni) || parseAddress(s.sni) !== undefined)) {
    throw new ConfigError(at("origin_sni"), `"${s.sni}" is not a host name (RFC 6066 §3: SNI carries DNS names, not IP addresses)`);
  }
  if ((s.certFile === undefined) !== (s.keyFile === undefined)) {
    throw new ConfigError(at(s.certFile === undefined ? "origin_cert" : "origin_key"), s.certFile === undefined ? "is needed with origin_key" : "is needed with origin_cert");
  }
  const ca = s.caFile === undefined ? undefined : readPem(read, s.caFile, at("origin_ca"), "certificate");
  if (ca !== undefined) {
    try {
      createSecureContext({ ca });
    } catch (e) {
      throw new ConfigError(at("origin_ca"), `"${s.caFile}": not a usable CA bundle (${(e as Error).message})`);
    }
  }
  let client: { cert: string; key: string } | undefined;
  if (s.certFile !== undefined && s.keyFile !== undefined) {
    const cert = readPem(read, s.certFile, at("origin_cert"), "certificate");
    const key = readPem(read, s.keyFile, at("origin_key"), "private key");
    // Bun.connect throws at every connect on a mismatched pair: refuse it here, once.
    try {
      createSecureContext({ cert, key });
    } catch (e) {
      throw new ConfigError(at("origin_key"), `"${s.keyFile}" does not go with "${s.certFile}" (${(e as Error).message})`);
    }
    client = { cert, key };
  }
  return {
    mode: s.mode as OriginTlsMode,
    ...(ca !== undefined ? { caFile: s.caFile, ca } : {}),
    ...(s.sni !== undefined ? { sni: s.sni } : {}),
    ...(client ? { certFile: s.certFile, keyFile: s.keyFile, cert: client.cert, key: client.key } : {}),
  };
}
