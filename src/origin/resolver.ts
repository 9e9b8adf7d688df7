// Origin names kept resolved: every A and AAAA record is an endpoint, looked
// up again when the shortest TTL runs out (RFC 1035 section 3.2.1: TTL is how
// long a record may be cached).
import * as dns from "node:dns/promises";
import { POOL_DEFAULTS } from "../config/pool";

/** The DNS calls the resolver makes; tests pass fakes. */
export interface DnsApi {
  resolve4(name: string, options: { ttl: true }): Promise<{ address: string; ttl: number }[]>;
  resolve6(name: string, options: { ttl: true }): Promise<{ address: string; ttl: number }[]>;
  lookup(name: string, options: { all: true }): Promise<{ address: string; family: number }[]>;
}

/** One resolution: the addresses and how long they hold. */
export interface Answer {
  readonly addresses: string[];
  readonly ttlMs: number;
  /** "dns" (A/AAAA with a TTL) or "lookup" (getaddrinfo: /etc/hosts and the like, no TTL). */
  readonly source: "dns" | "lookup";
}

// A TTL of 0 (or 1) must not become a busy loop; a failed resolution is
// retried at most this long after.
const MIN_TTL_MS = 1_000;
const RETRY_MS = 5_000;

// c-ares codes that mean "the name has no such records", as opposed to "DNS did not answer".
const NO_RECORDS = new Set(["ENODATA", "ENOTFOUND"]);

/**
 * Resolve `name` to all its A and AAAA records with their TTL; a name DNS
 * has no records for but getaddrinfo knows (/etc/hosts, e.g. `localhost`)
 * holds for `fallbackMs`. Throws when neither yields an address.
 */
export async function resolveName(name: string, api: DnsApi = dns, fallbackMs: number = POOL_DEFAULTS.resolveMs): Promise<Answer> {
  const errors: string[] = [];
  const records = async (f: () => Promise<{ address: string; ttl: number }[]>) => {
    try {
      return await f();
    } catch (e) {
      const code = (e as { code?: string }).code ?? (e as Error).message;
      if (!NO_RECORDS.has(code)) errors.push(code);
      return [];
    }
  };
  const [a, aaaa] = await Promise.all([records(() => api.resolve4(name, { ttl: true })), records(() => api.resolve6(name, { ttl: true }))]);
  const all = [...a, ...aaaa];
  if (all.length) {
    const ttl = Math.min(...all.map((r) => r.ttl));
    return { addresses: all.map((r) => r.address), ttlMs: Math.max(MIN_TTL_MS, ttl * 1000), source: "dns" };
  }
  try {
    const found = await api.lookup(name, { all: true });
    if (found.length) return { addresses: [...new Set(found.map((r) => r.address))], ttlMs: fallbackMs, source: "lookup" };
  } catch (e) {
    errors.push((e as { code?: string }).code ?? (e as Error).message);
  }
  throw new Error(`cannot resolve ${name}: ${[...new Set(errors)].join(", ") || "no A or AAAA records"}`);
}

/**
 * Keeps one name resolved until closed: re-resolves when the answer's TTL
 * expires, and on failure keeps the last good addresses (reporting the
 * failure) and retries sooner.
 */
export class NameWatcher {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  /** Failed re-resolutions so far. */
  failures = 0;
  lastError: string | undefined;

  constructor(
    readonly name: string,
    /** The addresses as last resolved (seeded from the start's lookup). */
    public addresses: readonly string[],
    /** New addresses (changed or not). */
    private readonly onAnswer: (addresses: readonly string[]) => void,
    private readonly onFailure: (message: string) => void,
    private readonly api: DnsApi = dns,
    private readonly fallbackMs: number = POOL_DEFAULTS.resolveMs,
  ) {}

  /** Resolve now (the seed has no TTL), then whenever the answer expires. */
  start(): Promise<void> {
    return this.refresh();
  }

  private async refresh(): Promise<void> {
    if (this.closed) return;
    let next = Math.min(RETRY_MS, this.fallbackMs);
    try {
      const answer = await resolveName(this.name, this.api, this.fallbackMs);
      if (this.closed) return;
      this.addresses = answer.addresses;
      this.lastError = undefined;
      next = answer.ttlMs;
      this.onAnswer(answer.addresses);
    } catch (e) {
      if (this.closed) return;
      this.failures++;
      this.lastError = (e as Error).message;
      this.onFailure(`${this.lastError}; keeping ${this.addresses.join(", ") || "no addresses"}`);
    }
    this.timer = setTimeout(() => void this.refresh(), next);
    this.timer.unref?.();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }
}
