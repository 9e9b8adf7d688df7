import { readFileSync, statSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { nodeVersion, readCertificate, type CertificateConfig, type TlsConfig } from "../../config/tls";
import type { ServiceStats } from "../stats";
import { ServerNames } from "./names";

/*
 * The certificates of one TLS-terminating service, owned by the service
 * (one per worker): a secure context per certificate, chosen per handshake
 * by the client's SNI (RFC 6066 §3), by the names rule routing by SNI
 * follows too (tls/names.ts: exact names beat one-label wildcards, RFC 6125
 * §6.4.3); a client without SNI, or naming none of the names, gets the first
 * certificate. Certificates with the same names and different key types
 * (RSA and ECDSA) share one context: BoringSSL then picks the pair the
 * client's signature algorithms allow.
 *
 * Reloaded from the config (`reload`) and when the files change (their
 * inode, size and mtime, polled every POLL_MS: no cost per connection; one
 * timer per process and one stat per distinct file per poll, however many
 * services share a certificate file: pollAll);
 * only new handshakes see a change. A file that fails to load keeps the
 * previous certificate and is said once, in one line, until it changes again.
 */

export type SniMatch = "exact" | "wildcard" | "default" | "none";

/** How often certificate files are checked for changes. */
export const POLL_MS = 2_000;

interface Slot {
  readonly certs: readonly CertificateConfig[];
  /** Bun's native secure context (tls.createSecureContext(...).context). */
  readonly context: object;
}

/** The file's identity and version (dev, inode, size, mtime), or "missing". */
function stampOf(file: string): string {
  const st = statSync(file, { throwIfNoEntry: false });
  return st ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}` : "missing";
}

/** Every open store of this process, polled by one timer. */
const open = new Set<CertStore>();
let timer: ReturnType<typeof setInterval> | undefined;

/**
 * One poll of every open store: each distinct file is stat'ed once (a
 * thousand services on one wildcard certificate cost two stats per POLL_MS,
 * not two thousand). `stat` is for tests.
 */
export function pollAll(stat: (file: string) => string = stampOf): void {
  const seen = new Map<string, string>();
  const once = (file: string) => {
    let st = seen.get(file);
    if (st === undefined) seen.set(file, (st = stat(file)));
    return st;
  };
  for (const store of open) store.poll(once);
}

/** ALPN protocol names in the wire format (RFC 7301 §3.1: length-prefixed), as Bun's ALPNProtocols wants. */
export function alpnWire(protocols: readonly string[]): Buffer | undefined {
  if (protocols.length === 0) return undefined;
  return Buffer.concat(protocols.map((p) => Buffer.concat([Buffer.from([Buffer.byteLength(p)]), Buffer.from(p)])));
}

export class CertStore {
  private slots: Slot[] = [];
  /** Each certificate's names (tls/names.ts: exact, then one-label wildcards), to its slot; the first certificate keeps a name. */
  private names = new ServerNames<Slot>();
  private certs: CertificateConfig[];
  /** Per file: the stamp last loaded, and the stamp last said to be bad (said once). */
  private stamps = new Map<string, string>();
  private failed = new Map<string, string>();
  /** upgradeTLS's `tls` option for new connections: the first certificate's context and the ALPN list. */
  options: { secureContext: object; ALPNProtocols?: Buffer };

  constructor(
    private readonly config: TlsConfig,
    private readonly owner: string,
    private readonly stats: ServiceStats,
    private readonly alpn: readonly string[],
    private readonly say: (line: string) => void = (line) => process.stderr.write(`edgeproxy: ${line}\n`),
  ) {
    this.certs = [...config.certificates];
    this.options = this.build();
    for (const c of this.certs) this.stampNow(c);
    open.add(this);
    if (!timer) {
      timer = setInterval(() => pollAll(), POLL_MS);
      timer.unref();
    }
  }

  /** The context for a client's SNI name, and how it matched (serverName handler: once per handshake with SNI). */
  pick(name: string): { context: object | undefined; match: SniMatch } {
    const m = this.names.match(name);
    if (!m) return { context: undefined, match: "default" };
    return { context: m.value === this.slots[0] ? undefined : m.value.context, match: m.how };
  }

  /** New certificates from a reloaded config (already read and checked by the config parser). */
  replace(certs: readonly CertificateConfig[]): void {
    const same = certs.length === this.certs.length && certs.every((c, i) => c.cert === this.certs[i]!.cert && c.key === this.certs[i]!.key);
    if (same) return;
    this.certs = [...certs];
    this.stamps.clear();
    this.failed.clear();
    for (const c of this.certs) this.stampNow(c);
    this.options = this.build();
    this.stats.tlsCertificateReload("ok");
  }

  close(): void {
    open.delete(this);
    if (open.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
    }
  }

  /** Contexts from `this.certs`: same names, different key types → one context; otherwise one each. */
  private build(): { secureContext: object; ALPNProtocols?: Buffer } {
    const policy = { minVersion: nodeVersion(this.config.minVersion), ciphers: this.config.ciphers, honorCipherOrder: true };
    const groups: CertificateConfig[][] = [];
    for (const c of this.certs) {
      const key = c.names.join(",");
      const g = groups.find((g) => g[0]!.names.join(",") === key && !g.some((x) => x.keyType === c.keyType));
      if (g) g.push(c);
      else groups.push([c]);
    }
    const slots = groups.map((g) => ({ certs: g, context: (createSecureContext({ ...policy, cert: g.map((c) => c.cert), key: g.map((c) => c.key) }) as unknown as { context: object }).context }));
    const names = new ServerNames<Slot>();
    for (const s of slots) for (const n of s.certs[0]!.names) names.add(n, s);
    this.slots = slots;
    this.names = names;
    this.stats.tlsCertificates = this.certs.map((c) => ({ name: c.names[0] ?? "", file: c.certFile, notAfter: c.notAfter }));
    const ALPNProtocols = alpnWire(this.alpn);
    return { secureContext: slots[0]!.context, ...(ALPNProtocols ? { ALPNProtocols } : {}) };
  }

  private stampNow(c: CertificateConfig): void {
    this.stamps.set(c.certFile, stampOf(c.certFile));
    this.stamps.set(c.keyFile, stampOf(c.keyFile));
  }

  /** Reload the certificates whose files changed; a bad one keeps the old and is said once per change. (pollAll's) */
  poll(stat: (file: string) => string): void {
    let changed = false;
    const next = this.certs.map((c) => {
      const stamps = [stat(c.certFile), stat(c.keyFile)];
      if (stamps[0] === this.stamps.get(c.certFile) && stamps[1] === this.stamps.get(c.keyFile)) return c;
      const id = stamps.join("|");
      if (this.failed.get(c.certFile) === id) return c;
      try {
        const fresh = readCertificate(c.certFile, c.keyFile, (p) => readFileSync(p, "utf8"), { cert: c.certFile, key: c.keyFile });
        this.failed.delete(c.certFile);
        this.stamps.set(c.certFile, stamps[0]!);
        this.stamps.set(c.keyFile, stamps[1]!);
        changed = true;
        return fresh;
      } catch (e) {
        this.failed.set(c.certFile, id);
        this.stats.tlsCertificateReload("failed");
        this.say(`${this.owner}: certificate not reloaded, still serving the previous one: ${(e as Error).message}`);
        return c;
      }
    });
    if (!changed) return;
    const previous = this.certs;
    this.certs = next;
    try {
      this.options = this.build();
      this.stats.tlsCertificateReload("ok");
    } catch (e) {
      this.certs = previous;
      this.stats.tlsCertificateReload("failed");
      this.say(`${this.owner}: certificates not reloaded, still serving the previous ones: ${(e as Error).message}`);
    }
  }
}
