import { createPrivateKey, X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import { ConfigError } from "../errors";
import type { Mode } from "./service";

/*
 * TLS termination settings of a tcp or http service: its certificates
 * (`tls_cert`/`tls_key`, `[[service.certificate]]`, --tls-cert/--tls-key in
 * pairs) and its policy (`tls_min_version`, `tls_ciphers`). Parsed and
 * checked once here, for the file and the command line alike; the running
 * side (src/proxy/tls/) builds secure contexts from what this returns.
 */

/** One certificate chain and its key, as read when the config was parsed. */
export interface CertificateConfig {
  readonly certFile: string;
  readonly keyFile: string;
  /** PEM: the leaf first, then its chain. */
  readonly cert: string;
  readonly key: string;
  /** The DNS names it is chosen by for SNI, lower case (SAN dNSNames; the subject CN only when there is no SAN). */
  readonly names: readonly string[];
  /** The leaf's notAfter, Unix seconds. */
  readonly notAfter: number;
  /** "rsa", "ec", "ed25519" ... */
  readonly keyType: string;
}

export type TlsVersion = "1.2" | "1.3";

export interface TlsConfig {
  /** At least one. The first is presented to clients without SNI or naming no certificate's name. */
  readonly certificates: readonly CertificateConfig[];
  readonly minVersion: TlsVersion;
  /** OpenSSL cipher list for TLS 1.2 (TLS 1.3's suites are BoringSSL's fixed set). */
  readonly ciphers: string;
}

/*
 * The default TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only. No
 * static RSA key exchange, no CBC (Lucky13, RFC 7457 §2.4), as RFC 9325 §4.2
 * recommends; the server's order decides (honorCipherOrder), AES-GCM first.
 */
export const TLS_DEFAULTS = {
  minVersion: "1.2" as TlsVersion,
  ciphers: [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
  ].join(":"),
} as const;

const VERSIONS: readonly TlsVersion[] = ["1.2", "1.3"];

/** node:tls's name of a version, for createSecureContext's minVersion. */
export const nodeVersion = (v: TlsVersion): "TLSv1.2" | "TLSv1.3" => (v === "1.2" ? "TLSv1.2" : "TLSv1.3");

/** A certificate and key file pair and where each was given, for messages. */
export interface CertificateFiles {
  readonly cert?: string;
  readonly key?: string;
  readonly certWhere: string;
  readonly keyWhere: string;
}

/** What a config may say about TLS; `warn` gets one line per certificate already expired. */
export interface TlsSettings {
  readonly pairs: readonly CertificateFiles[];
  readonly minVersion?: { readonly value: string; readonly where: string };
  readonly ciphers?: { readonly value: string; readonly where: string };
}

/** The TLS settings of a service, or undefined when it gives no certificate (then no policy key may be set either). */
export function parseTls(s: TlsSettings, mode: Mode, read: (path: string) => string, warn: (line: string) => void = () => {}): TlsConfig | undefined {
  const given = s.pairs.filter((p) => p.cert !== undefined || p.key !== undefined);
  if (given.length === 0) {
    const policy = s.minVersion ?? s.ciphers;
    if (policy) throw new ConfigError(policy.where, "applies to TLS-terminating services (give a certificate and key too)");
    return undefined;
  }
  if (mode === "udp") throw new ConfigError(given[0]!.cert !== undefined ? given[0]!.certWhere : given[0]!.keyWhere, "TLS terminates tcp and http services; udp has no TLS (DTLS is not supported)");
  const minVersion = s.minVersion === undefined ? TLS_DEFAULTS.minVersion : parseVersion(s.minVersion.value, s.minVersion.where);
  const ciphers = s.ciphers === undefined ? TLS_DEFAULTS.ciphers : parseCiphers(s.ciphers.value, s.ciphers.where);
  const certificates = given.map((p) => {
    if (p.cert === undefined) throw new ConfigError(p.certWhere, "is needed with the key");
    if (p.key === undefined) throw new ConfigError(p.keyWhere, "is needed with the certificate");
    return readCertificate(p.cert, p.key, read, { cert: p.certWhere, key: p.keyWhere }, warn);
  });
  return { certificates, minVersion, ciphers };
}

function parseVersion(v: string, where: string): TlsVersion {
  if (!VERSIONS.includes(v as TlsVersion)) throw new ConfigError(where, `"${v}" is not one of ${VERSIONS.join(", ")} (TLS 1.0 and 1.1 are deprecated, RFC 8996)`);
  return v as TlsVersion;
}

/** Each entry must select something on its own: BoringSSL silently skips unknown names in a list. */
function parseCiphers(list: string, where: string): string {
  const entries = list.split(":").map((c) => c.trim()).filter(Boolean);
  if (entries.length === 0) throw new ConfigError(where, "is empty");
  for (const c of entries) {
    try {
      createSecureContext({ ciphers: c });
    } catch {
      throw new ConfigError(where, `"${c}" is not a cipher suite or rule BoringSSL knows`);
    }
  }
  return entries.join(":");
}

/** PEM labels (RFC 7468 §5, §10, §11): a certificate; a private key (PKCS #8, or the traditional RSA/EC forms). */
const PEM_LABEL = { certificate: /-----BEGIN CERTIFICATE-----/, "private key": /-----BEGIN ([A-Z]+ )?PRIVATE KEY-----/ } as const;

/**
 * A PEM file's text, for the service's certificates and the origin TLS files
 * alike: unreadable, or holding no block of `what`, is a ConfigError at `at`
 * naming the file. (Whether the TLS library takes it is the caller's check.)
 */
export function readPem(read: (path: string) => string, file: string, at: string, what: keyof typeof PEM_LABEL): string {
  let text: string;
  try {
    text = read(file);
  } catch (e) {
    throw new ConfigError(at, `cannot read "${file}": ${(e as { code?: string }).code ?? (e as Error).message}`);
  }
  if (!PEM_LABEL[what].test(text)) throw new ConfigError(at, `"${file}" holds no PEM ${what}`);
  return text;
}

/**
 * Read and check one certificate and key pair: both files readable, PEM,
 * the key the certificate's, usable together by the TLS library. Throws a
 * ConfigError naming the file; used at config time and by the running
 * store's reload (src/proxy/tls/certstore.ts), so both refuse the same files.
 */
export function readCertificate(
  certFile: string,
  keyFile: string,
  read: (path: string) => string,
  where: { readonly cert: string; readonly key: string },
  warn: (line: string) => void = () => {},
  now = Date.now(),
): CertificateConfig {
  const cert = readPem(read, certFile, where.cert, "certificate");
  const key = readPem(read, keyFile, where.key, "private key");
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (e) {
    throw new ConfigError(where.cert, `"${certFile}": not a valid certificate (${(e as Error).message})`);
  }
  let matches: boolean;
  try {
    matches = x509.checkPrivateKey(createPrivateKey(key));
  } catch (e) {
    throw new ConfigError(where.key, `"${keyFile}": not a valid private key (${(e as Error).message})`);
  }
  if (!matches) throw new ConfigError(where.key, `"${keyFile}" is not the key of the certificate in "${certFile}"`);
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new ConfigError(where.cert, `"${certFile}" with "${keyFile}": refused by the TLS library (${(e as Error).message})`);
  }
  const notAfter = Math.floor(x509.validToDate.getTime() / 1000);
  const names = certificateNames(x509);
  if (notAfter * 1000 < now) warn(`${where.cert}: warning: "${certFile}" (${names[0] ?? x509.subject}) expired on ${x509.validToDate.toISOString()}; clients that check will refuse it`);
  return { certFile, keyFile, cert, key, names, notAfter, keyType: x509.publicKey.asymmetricKeyType ?? "unknown" };
}

/**
 * The DNS names a certificate is presented for: its subjectAltName dNSNames,
 * or, only when it has none, its subject's CN (RFC 6125 §6.4.4), lower case.
 */
export function certificateNames(x509: X509Certificate): string[] {
  const san = x509.subjectAltName;
  if (san) {
    const dns = san.split(/,\s*/).filter((e) => e.startsWith("DNS:")).map((e) => e.slice(4).toLowerCase());
    if (dns.length) return [...new Set(dns)];
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}
