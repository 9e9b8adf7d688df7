// A load generator that counts failures. Unlike wrk, which reports socket
// errors as four totals, every request here ends in exactly one outcome (ok
// or a named reason) with a timestamp, so a crash or an upgrade shows up as
// how many requests failed, why, and when service came back. The protocol
// and the origin that answers it are in load-protocol.ts.
import type { Socket } from "bun";
import { REPLY_SIZE, REQUEST_SIZE, replyFor, requestBytes } from "./load-protocol";

export { REPLY_SIZE, REQUEST_SIZE, replyFor, requestBytes, startOrigin, type OriginStats } from "./load-protocol";

export type Mode = "keep-alive" | "close";
export const MODES: readonly Mode[] = ["keep-alive", "close"];
/** Why a request failed. `short`: the peer closed before the whole reply; `connect`: a connect error other than a refusal or reset. */
export const REASONS = ["refused", "reset", "timeout", "short", "wrong", "connect"] as const;
export type Reason = (typeof REASONS)[number];

/** Wall-clock milliseconds with sub-millisecond precision: comparable across processes (the generator runs in a child). */
export const now = (): number => performance.timeOrigin + performance.now();

export interface LoadSpec {
  mode: Mode;
  hosts: string[];
  ports: number[];
  /** Concurrent connections (keep-alive) or requests in flight (close). */
  connections: number;
  durationMs: number;
  maxRequests: number;
  /** Per-request deadline, connect included. */
  timeoutMs: number;
  /** Pause after a failure, so a refusing target is probed, not hammered (this bounds the timestamps' precision). */
  retryDelayMs: number;
}

export const DEFAULT_SPEC: Omit<LoadSpec, "mode" | "hosts" | "ports"> = { connections: 8, durationMs: 5000, maxRequests: 1_000_000, timeoutMs: 2000, retryDelayMs: 5 };

/** A stretch of failures: from the first failure to the first success of a request begun after it (null: never recovered). */
export interface Outage {
  from: number;
  to: number | null;
  failures: number;
}

export interface LoadResult {
  mode: Mode;
  connections: number;
  targets: number;
  startedAt: number;
  endedAt: number;
  ok: number;
  failed: Record<Reason, number>;
  failedTotal: number;
  /** Keep-alive connections the peer closed while no request was outstanding (not a failure: the client reconnects). */
  reconnects: number;
  okBeforeFirstFailure: number;
  firstFailureAt: number | null;
  /** The first success of a request begun after the first failure. */
  recoveredAt: number | null;
  lastFailureAt: number | null;
  outages: Outage[];
  /** Latency of the successful requests (null when none succeeded). */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number;
  /** The first few failures, spelled out, for diagnosis. */
  samples: string[];
}

const MAX_OUTAGES = 50;
const MAX_SAMPLES = 10;
const BUCKET_MS = 0.1;

/** Tallies outcomes, outages and a latency histogram (0.1 ms buckets up to the deadline). */
class Recorder {
  ok = 0;
  failed = Object.fromEntries(REASONS.map((r) => [r, 0])) as Record<Reason, number>;
  reconnects = 0;
  okBeforeFirstFailure = 0;
  lastFailureAt: number | null = null;
  outages: Outage[] = [];
  samples: string[] = [];
  private open: Outage | undefined;
  private readonly hist: Uint32Array;
  private maxMs = 0;

  constructor(timeoutMs: number) {
    this.hist = new Uint32Array(Math.ceil(timeoutMs / BUCKET_MS) + 2);
  }

  success(start: number, end: number): void {
    this.ok++;
    if (!this.outages.length) this.okBeforeFirstFailure++;
    // A request begun before the outage started proves nothing about recovery.
    if (this.open && start >= this.open.from) {
      this.open.to = end;
      this.open = undefined;
    }
    const ms = end - start;
    this.maxMs = Math.max(this.maxMs, ms);
    this.hist[Math.min(this.hist.length - 1, Math.floor(ms / BUCKET_MS))]!++;
  }

  failure(reason: Reason, end: number, what: string): void {
    this.failed[reason]++;
    this.lastFailureAt = end;
    if (this.open) this.open.failures++;
    else if (this.outages.length < MAX_OUTAGES) this.outages.push((this.open = { from: end, to: null, failures: 1 }));
    if (this.samples.length < MAX_SAMPLES) this.samples.push(`${new Date(end).toISOString()} ${what}: ${reason}`);
  }

  percentile(p: number): number | null {
    const want = Math.ceil(this.ok * p);
    let seen = 0;
    for (let i = 0; i < this.hist.length; i++) if ((seen += this.hist[i]!) >= want && want > 0) return (i + 1) * BUCKET_MS;
    return null;
  }

  result(spec: LoadSpec, startedAt: number, endedAt: number): LoadResult {
    const first = this.outages[0];
    return {
      mode: spec.mode,
      connections: spec.connections,
      targets: spec.hosts.length * spec.ports.length,
      startedAt,
      endedAt,
      ok: this.ok,
      failed: this.failed,
      failedTotal: REASONS.reduce((a, r) => a + this.failed[r], 0),
      reconnects: this.reconnects,
      okBeforeFirstFailure: this.okBeforeFirstFailure,
      firstFailureAt: first?.from ?? null,
      recoveredAt: first?.to ?? null,
      lastFailureAt: this.lastFailureAt,
      outages: this.outages,
      p50Ms: this.percentile(0.5),
      p99Ms: this.percentile(0.99),
      maxMs: this.maxMs,
      samples: this.samples,
    };
  }
}

export type Outcome = "ok" | Reason;

function classify(err: unknown, connecting: boolean): Reason {
  const code = (err as { code?: string } | undefined)?.code;
  if (code === "ECONNREFUSED") return "refused";
  if (code === "ETIMEDOUT") return "timeout";
  if (code === "ECONNRESET" || code === "EPIPE" || !connecting) return "reset";
  return "connect";
}

/** One client connection: at most one request outstanding, its reply checked byte for byte. */
class Client {
  sock: Socket<Client> | undefined;
  /** Closed by either side; a keep-alive loop reconnects. */
  closed = false;
  error: unknown;
  /** Why connect() failed. */
  failure: Reason | undefined;
  /** Bytes arrived with no request outstanding. */
  stray = false;
  /** Given up on (timed out) before the connect completed: close it if it still does. */
  abandoned = false;
  private waiter: ((o: Outcome) => void) | undefined;
  private expected: Buffer | undefined;
  private got = Buffer.allocUnsafe(REPLY_SIZE);
  private have = 0;

  /** Connect, bounded by `deadline` (epoch ms); a failed client has `failure` set. */
  static connect(hostname: string, port: number, deadline: number): Promise<Client> {
    const c = new Client();
    return new Promise((resolve) => {
      const timer = setTimeout(() => c.finish("timeout"), Math.max(0, deadline - now()));
      c.waiter = (o) => {
        clearTimeout(timer);
        c.waiter = undefined;
        if (o !== "ok") {
          c.failure = o;
          c.abandoned = true;
          c.terminate();
        }
        resolve(c);
      };
      Bun.connect<Client>({ hostname, port, data: c, socket: HANDLERS }).catch((e) => {
        c.error ??= e;
        c.finish(classify(e, true));
      });
    });
  }

  /** Send request `seq` and wait for its whole reply. */
  request(seq: number, deadline: number): Promise<Outcome> {
    if (this.closed || !this.sock) return Promise.resolve(classify(this.error, false));
    const req = requestBytes(seq);
    this.expected = replyFor(req);
    this.have = 0;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.finish("timeout"), Math.max(0, deadline - now()));
      this.waiter = (o) => {
        clearTimeout(timer);
        this.waiter = undefined;
        this.expected = undefined;
        resolve(o);
      };
      // 32 bytes always fit an empty send buffer; a short write means the socket is gone.
      if (this.sock!.write(req) < REQUEST_SIZE) this.finish(classify(this.error, false));
    });
  }

  finish(o: Outcome): void {
    this.waiter?.(o);
  }

  onOpen(s: Socket<Client>): void {
    this.sock = s;
    if (this.abandoned) return void s.terminate();
    this.finish("ok");
  }

  onData(chunk: Buffer): void {
    if (!this.expected) {
      this.stray = true;
      return this.terminate();
    }
    if (this.have + chunk.length > REPLY_SIZE) return this.finish("wrong");
    this.got.set(chunk, this.have);
    this.have += chunk.length;
    if (this.have === REPLY_SIZE) this.finish(this.got.equals(this.expected) ? "ok" : "wrong");
  }

  onClosed(err: unknown): void {
    this.closed = true;
    this.error ??= err;
    // Waiting for a connect: refused/reset; waiting for a reply: reset, or short if the peer closed cleanly.
    this.finish(this.error ? classify(this.error, !this.sock) : "short");
  }

  /** Why the last request failed, for the samples. */
  get why(): string {
    return this.error ? ` (${(this.error as Error).message ?? this.error})` : "";
  }

  close(): void {
    this.sock?.end();
  }

  terminate(): void {
    this.sock?.terminate();
  }
}

const HANDLERS = {
  open(s: Socket<Client>) {
    s.data.onOpen(s);
  },
  data(s: Socket<Client>, chunk: Buffer) {
    s.data.onData(chunk);
  },
  end(s: Socket<Client>) {
    s.data.onClosed(undefined);
  },
  error(s: Socket<Client>, err: Error) {
    s.data.error ??= err;
  },
  close(s: Socket<Client>, err?: Error) {
    s.data.onClosed(err);
  },
  connectError(s: Socket<Client>, err: Error) {
    s.data.error ??= err;
    s.data.onClosed(err);
  },
};

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Run the load until the duration ends, `maxRequests` have been started, or
 * `signal` aborts; then every worker finishes its current request (bounded
 * by the per-request deadline) and the tallies are returned.
 */
export async function runLoad(spec: LoadSpec, signal?: AbortSignal): Promise<LoadResult> {
  const targets = spec.hosts.flatMap((hostname) => spec.ports.map((port) => ({ hostname, port })));
  if (!targets.length || spec.connections < 1) throw new Error("load: needs at least one host, one port and one connection");
  const rec = new Recorder(spec.timeoutMs);
  const startedAt = now();
  const stopAt = startedAt + spec.durationMs;
  let seq = 0;
  const next = (): number | undefined => (signal?.aborted || now() >= stopAt || seq >= spec.maxRequests ? undefined : seq++);
  const label = (t: { hostname: string; port: number }) => (t.hostname.includes(":") ? `[${t.hostname}]:${t.port}` : `${t.hostname}:${t.port}`);

  const keepAlive = async (w: number) => {
    let client: Client | undefined;
    let round = 0;
    for (let n = next(); n !== undefined; n = next()) {
      const t = targets[(w + round * spec.connections) % targets.length]!;
      const start = now();
      const deadline = start + spec.timeoutMs;
      if (client?.closed) {
        // Closed between requests: a stray reply is a failure, a plain close is the peer's right.
        if (client.stray) rec.failure("wrong", now(), `bytes with no request outstanding on ${label(t)}`);
        else rec.reconnects++;
        client = undefined;
      }
      if (!client) {
        const c = await Client.connect(t.hostname, t.port, deadline);
        if (c.failure) {
          rec.failure(c.failure, now(), `connect ${label(t)}${c.why}`);
          round++;
          await sleep(spec.retryDelayMs);
          continue;
        }
        client = c;
      }
      const o = await client.request(n, deadline);
      if (o === "ok") rec.success(start, now());
      else {
        rec.failure(o, now(), `request ${n} on ${label(t)}${client.why}`);
        client.terminate();
        client = undefined;
        round++;
        await sleep(spec.retryDelayMs);
      }
    }
    client?.close();
  };

  const close = async () => {
    for (let n = next(); n !== undefined; n = next()) {
      const t = targets[n % targets.length]!;
      const start = now();
      const deadline = start + spec.timeoutMs;
      const c = await Client.connect(t.hostname, t.port, deadline);
      const o = c.failure ?? (await c.request(n, deadline));
      if (o === "ok") {
        c.close();
        rec.success(start, now());
      } else {
        c.terminate();
        rec.failure(o, now(), `request ${n} to ${label(t)}${c.why}`);
        await sleep(spec.retryDelayMs);
      }
    }
  };

  await Promise.all(Array.from({ length: spec.connections }, (_, w) => (spec.mode === "keep-alive" ? keepAlive(w) : close())));
  return rec.result(spec, startedAt, now());
}

/** One request on a connection of its own (a probe): "ok" or why not. */
export async function oneRequest(hostname: string, port: number, timeoutMs = DEFAULT_SPEC.timeoutMs): Promise<Outcome> {
  const deadline = now() + timeoutMs;
  const c = await Client.connect(hostname, port, deadline);
  const o = c.failure ?? (await c.request(0, deadline));
  o === "ok" ? c.close() : c.terminate();
  return o;
}
