/*
 * The busiest client addresses of one process, for the live view (GET /,
 * /dashboard.json, `edgeproxy top`, `status`): a bounded heavy-hitters
 * tracker, Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient
 * Computation of Frequent and Top-k Elements in Data Streams", ICDT 2005),
 * over new connections, updated at accept.
 *
 * Bounded whatever clients do: CLIENT_COUNTERS addresses per generation, two
 * generations. An address already tracked costs one Map lookup and an
 * increment (no allocation); an untracked one takes the slot of the least
 * counted (a scan of the 64 counts, no allocation but the Map entry) and
 * inherits its count as its possible overestimate (`error`), so an address
 * seen more than 1/64 of the window's connections is always listed, and a
 * listed count is at most `error` too high (the paper's guarantees).
 * Measured (bench/clients-micro.ts): see the numbers there and in the report.
 *
 * "The last window": counts go to the current generation; every
 * CLIENT_WINDOW_MS it becomes the previous one and a cleared one takes its
 * place. A snapshot adds both, so it covers between one and two windows
 * (its `windowSeconds` says how long).
 *
 * Clients the kernel refuses never reach accept: the dispatcher counts them
 * per service, not per source (src/log/kernel.ts says why), so they are not
 * here. Refusals by this process's own admission check (per-client limits
 * at accept) are counted for tracked addresses.
 *
 * Bytes (both ways) are added when a connection closes, to its address if
 * that is still tracked (in the current or the previous generation): the
 * bytes of its connections that ended in the window, while it was listed.
 * The ranking is by connections only (Space-Saving's guarantees are for
 * the count it ranks by).
 */

/** Addresses tracked per generation (per process: each worker has its own). */
export const CLIENT_COUNTERS = 64;
/** How long a generation counts. */
export const CLIENT_WINDOW_MS = 60_000;
/** Rows a snapshot lists. */
export const CLIENT_ROWS = 20;

/** One listed address. */
export interface ClientCount {
  readonly address: string;
  /** New connections (accepted, whether admitted or refused by a per-client limit) in the window. */
  readonly connections: number;
  /** Of them, refused by this process's per-client limits. */
  readonly refused: number;
  /** Bytes both ways of its connections that closed in the window while it was tracked. */
  readonly bytes: number;
  /** How much `connections` may be over the truth (Space-Saving's overestimate; 0: exact). */
  readonly error: number;
}

export interface ClientsSnapshot {
  /** How long the counts cover, seconds (one to two windows). */
  readonly windowSeconds: number;
  /** Addresses tracked per generation and process. */
  readonly counters: number;
  /** Busiest first. */
  readonly top: readonly ClientCount[];
}

class Generation {
  readonly keys: (string | undefined)[];
  readonly counts: Float64Array;
  readonly errors: Float64Array;
  readonly refused: Float64Array;
  readonly bytes: Float64Array;
  readonly index = new Map<string, number>();
  size = 0;

  constructor(
    readonly capacity: number,
    public start: number,
  ) {
    this.keys = new Array<string | undefined>(capacity).fill(undefined);
    this.counts = new Float64Array(capacity);
    this.errors = new Float64Array(capacity);
    this.refused = new Float64Array(capacity);
    this.bytes = new Float64Array(capacity);
  }

  clear(start: number): void {
    this.keys.fill(undefined);
    this.counts.fill(0);
    this.errors.fill(0);
    this.refused.fill(0);
    this.bytes.fill(0);
    this.index.clear();
    this.size = 0;
    this.start = start;
  }

  add(address: string): void {
    const i = this.index.get(address);
    if (i !== undefined) {
      this.counts[i]!++;
      return;
    }
    if (this.size < this.capacity) {
      const j = this.size++;
      this.keys[j] = address;
      this.counts[j] = 1;
      this.index.set(address, j);
      return;
    }
    // Space-Saving: the least counted address makes room; the newcomer's count starts from its count.
    const counts = this.counts;
    let m = 0;
    for (let j = 1; j < counts.length; j++) if (counts[j]! < counts[m]!) m = j;
    this.index.delete(this.keys[m]!);
    this.keys[m] = address;
    this.errors[m] = counts[m]!;
    counts[m]!++;
    this.refused[m] = 0;
    this.bytes[m] = 0;
    this.index.set(address, m);
  }

  refuse(address: string): void {
    const i = this.index.get(address);
    if (i !== undefined) this.refused[i]!++;
  }

  /** Add `n` bytes to `address` if tracked here; false if not. */
  addBytes(address: string, n: number): boolean {
    const i = this.index.get(address);
    if (i === undefined) return false;
    this.bytes[i]! += n;
    return true;
  }
}

/** An IPv4 client on a dual-stack socket is "::ffff:a.b.c.d" (RFC 4291 2.5.5.2): shown as a.b.c.d. */
const plain = (address: string): string => (address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address);

export class ClientTracker {
  private current: Generation;
  private previous: Generation;
  private rotateAt: number;

  constructor(
    /** A clock read at each update (the coarse clock: a field, not a call). */
    private readonly clock: { readonly now: number },
    private readonly windowMs = CLIENT_WINDOW_MS,
    readonly capacity = CLIENT_COUNTERS,
  ) {
    const now = clock.now;
    this.current = new Generation(capacity, now);
    this.previous = new Generation(capacity, now);
    this.rotateAt = now + windowMs;
  }

  private rotate(now: number): void {
    const old = this.previous;
    this.previous = this.current;
    // More than a window without a connection: the previous one is stale too.
    if (now - this.rotateAt >= this.windowMs) this.previous.clear(now);
    old.clear(now);
    this.current = old;
    this.rotateAt = now + this.windowMs;
  }

  /** A new connection from `address` (as Bun's remoteAddress gives it). */
  seen(address: string): void {
    if (this.clock.now >= this.rotateAt) this.rotate(this.clock.now);
    this.current.add(address);
  }

  /** The connection `seen` just counted was refused by a per-client limit. */
  refused(address: string): void {
    this.current.refuse(address);
  }

  /** A connection of `address` (as given to `seen`) closed after `n` bytes both ways. */
  closed(address: string, n: number): void {
    if (n > 0 && !this.current.addBytes(address, n)) this.previous.addBytes(address, n);
  }

  snapshot(rows = CLIENT_ROWS): ClientsSnapshot {
    const now = this.clock.now;
    if (now >= this.rotateAt) this.rotate(now);
    const all = new Map<string, Counts>();
    for (const g of [this.previous, this.current]) {
      for (let i = 0; i < g.size; i++) {
        const address = plain(g.keys[i]!);
        const have = all.get(address);
        if (have) {
          have.connections += g.counts[i]!;
          have.refused += g.refused[i]!;
          have.error += g.errors[i]!;
          have.bytes += g.bytes[i]!;
        } else all.set(address, { connections: g.counts[i]!, refused: g.refused[i]!, error: g.errors[i]!, bytes: g.bytes[i]! });
      }
    }
    return { windowSeconds: Math.max(0, Math.round((now - this.previous.start) / 1000)), counters: this.capacity, top: topOf(all, rows) };
  }
}

type Counts = { connections: number; refused: number; error: number; bytes: number };

function topOf(all: Map<string, Counts>, rows: number): ClientCount[] {
  return [...all]
    .map(([address, c]) => ({ address, ...c }))
    .sort((a, b) => b.connections - a.connections || a.address.localeCompare(b.address))
    .slice(0, rows);
}

/**
 * Several processes' snapshots as one (a supervisor's workers): counts of an
 * address added up (each worker saw its own connections), the longest
 * window. An address missing from a worker's list may still have had a few
 * connections there (fewer than that list's smallest count): the sum is a
 * lower bound for it, as each list's `error` bounds the other way.
 */
export function mergeClients(snapshots: readonly (ClientsSnapshot | undefined)[], rows = CLIENT_ROWS): ClientsSnapshot | undefined {
  const present = snapshots.filter((s): s is ClientsSnapshot => s !== undefined);
  if (!present.length) return undefined;
  const all = new Map<string, Counts>();
  for (const s of present) {
    for (const c of s.top) {
      const have = all.get(c.address);
      if (have) {
        have.connections += c.connections;
        have.refused += c.refused;
        have.error += c.error;
        have.bytes += c.bytes;
      } else all.set(c.address, { connections: c.connections, refused: c.refused, error: c.error, bytes: c.bytes });
    }
  }
  return { windowSeconds: Math.max(...present.map((s) => s.windowSeconds)), counters: present[0]!.counters, top: topOf(all, rows) };
}
