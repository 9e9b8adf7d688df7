/*
 * The live view's data: GET /dashboard.json. A sampler reads the counters a
 * status snapshot already has once a second into a bounded ring (600 samples,
 * 10 minutes) and answers with per-second rates: nothing is counted twice.
 * The busiest clients are the status's too (a bounded tracker updated at
 * accept, src/proxy/clients.ts), shown as the latest reading has them. It runs only while someone looks: the first
 * request starts it, and it stops after DASHBOARD_IDLE_MS without one, so an
 * instance nobody watches pays nothing.
 */
import type { StatusSnapshot } from "./backend";
import { CLIENT_ROWS, mergeClients, type ClientCount, type ClientsSnapshot } from "../proxy/clients";

/** One sample a second, ten minutes of them. */
export const DASHBOARD_INTERVAL_MS = 1_000;
export const DASHBOARD_SAMPLES = 600;
/** The sampler stops this long after the last request (a closed browser tab). */
export const DASHBOARD_IDLE_MS = 600_000;

/**
 * Errors by reason, summed from the status counters (a fixed set, so the
 * ring's size does not depend on what clients send):
 * origin: failures talking to an origin (any class); denied, limited, full,
 * no_socket: the kernel refused at lookup (access rules, per-client limits,
 * every worker at its cap, no listening socket or assign error); cap: the
 * process's cap reset an admitted connection; tls, proxy_header, deadline: a
 * client stage failed or timed out; client_reset; http_refused: strict
 * framing refused a request; udp_drop: datagrams dropped.
 */
export const ERROR_REASONS = ["origin", "denied", "limited", "full", "no_socket", "cap", "tls", "proxy_header", "deadline", "client_reset", "http_refused", "udp_drop"] as const;
export type ErrorReason = (typeof ERROR_REASONS)[number];

/** Cumulative counts: connections (tcp, http) and flows (udp), bytes both ways, errors by reason. */
export interface Totals {
  connections: number;
  bytes: number;
  errors: Record<ErrorReason, number>;
}

/** A service as the dashboard shows it, with its cumulative totals at the reading. */
export interface ServiceReading {
  readonly name: string;
  readonly mode?: string;
  /** tcp and http services: "epoll" or "bun", the data plane serving them. */
  readonly engine?: string;
  readonly origin?: string;
  readonly bindings: readonly string[];
  readonly origins: readonly { origin: string; healthy: boolean; up: number; endpoints: number; active: number }[];
  /** Connections (udp: flows) open now. */
  active: number;
  readonly totals: Totals;
}

/** What the sampler reads once a second: from one process's status, or a supervisor's workers summed. */
export interface Reading {
  readonly version: string;
  readonly pid: number;
  /** Workers the figures are summed over (1 without workers). */
  readonly workers: number;
  readonly services: readonly ServiceReading[];
  /** Instance-wide: every service, and the cap's refusals. */
  readonly totals: Totals;
  /** The busiest client addresses (summed over workers); absent from a process without the tracker. */
  readonly clients?: ClientsSnapshot;
}

// A counter as the status has it: a number, a kernel bigint, or (status JSON, a worker's answer) its decimal string.
type Count = number | bigint | string | undefined;
const n = (v: Count): number => (v === undefined ? 0 : Number(v)) || 0;
const sum = (o: Readonly<Record<string, Count>> | undefined): number => (o ? Object.values(o).reduce<number>((a, v) => a + n(v), 0) : 0);

export const zeroTotals = (): Totals => ({ connections: 0, bytes: 0, errors: Object.fromEntries(ERROR_REASONS.map((r) => [r, 0])) as Record<ErrorReason, number> });

export function addTotals(into: Totals, t: Totals): void {
  into.connections += t.connections;
  into.bytes += t.bytes;
  for (const r of ERROR_REASONS) into.errors[r] += t.errors[r];
}

/** A status snapshot, or its JSON (kernel counters as strings), as the fields read here. */
type StatusLike = Omit<StatusSnapshot, "services" | "unmatchedLookups"> & { services: readonly ServiceLike[] };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ServiceLike = Record<string, any> & { name: string; bindings: readonly { protocol: string; prefix: string; ports: string }[] };

/**
 * A reading of one process's status. `kernel` false leaves the kernel
 * counters out: every worker reads the same dispatcher, so a supervisor
 * takes them from one worker only.
 */
export function readStatus(s: StatusLike, kernel = true): Reading {
  const totals = zeroTotals();
  const services = s.services.map((svc): ServiceReading => {
    const t = zeroTotals();
    const c = svc.connections;
    const d = svc.datagrams;
    t.connections = n(c?.total) + n(d?.flowsTotal);
    t.bytes = n(c?.bytesFromClients) + n(c?.bytesFromOrigins) + n(d?.bytesFromClients) + n(d?.bytesFromOrigins);
    const e = t.errors;
    e.origin = sum(c?.originErrors);
    e.limited = n(svc.sourceLimited?.connections) + n(svc.sourceLimited?.rate);
    if (kernel) {
      const k = svc.kernel ?? {};
      e.denied = n(k.denied);
      e.limited += n(k.limited?.connections) + n(k.limited?.rate);
      e.full = n(k.full);
      e.no_socket = n(k.missingSocket) + n(k.assignError);
    }
    e.tls = sum(c?.tlsHandshakeErrors);
    e.proxy_header = sum(c?.proxyHeaderErrors);
    e.deadline = sum(c?.deadlinesExpired);
    e.client_reset = n(c?.clientResets);
    e.http_refused = sum(svc.http?.refused);
    e.udp_drop = sum(d?.drops);
    addTotals(totals, t);
    const origins = ((svc.origins ?? []) as { origin: string; healthy: boolean; active: number; endpoints: { up: boolean }[] }[]).map((o) => ({
      origin: o.origin,
      healthy: !!o.healthy,
      up: o.endpoints.filter((x) => x.up).length,
      endpoints: o.endpoints.length,
      active: n(o.active),
    }));
    return {
      name: svc.name,
      ...(svc.mode ? { mode: String(svc.mode) } : {}),
      ...(svc.engine ? { engine: String(svc.engine) } : {}),
      ...(svc.origin ? { origin: String(svc.origin) } : {}),
      bindings: svc.bindings.map((b) => `${b.protocol} ${b.prefix} ${b.ports}`),
      origins,
      active: n(c?.active) + n(d?.flowsActive),
      totals: t,
    };
  });
  totals.errors.cap = n(s.capacity?.refused);
  return { version: s.version, pid: s.pid, workers: 1, services, totals, ...(s.clients ? { clients: s.clients } : {}) };
}

/**
 * Workers' readings as one: totals and open connections summed per service;
 * bindings, modes and origin health from the first (health is checked by
 * each worker; the first stands for all), endpoint loads summed.
 */
export function mergeReadings(readings: readonly Reading[], pid: number): Reading | undefined {
  const [first] = readings;
  if (!first) return undefined;
  const totals = zeroTotals();
  const byName = new Map<string, ServiceReading>();
  for (const r of readings) {
    addTotals(totals, r.totals);
    for (const svc of r.services) {
      const have = byName.get(svc.name);
      if (!have) {
        byName.set(svc.name, { ...svc, origins: svc.origins.map((o) => ({ ...o })), totals: { ...svc.totals, errors: { ...svc.totals.errors } } });
        continue;
      }
      have.active += svc.active;
      addTotals(have.totals, svc.totals);
      svc.origins.forEach((o, i) => {
        const mine = have.origins[i];
        if (mine && mine.origin === o.origin) (mine as { active: number }).active += o.active;
      });
    }
  }
  const clients = mergeClients(
    readings.map((r) => r.clients),
    Math.max(0, ...readings.map((r) => r.clients?.top.length ?? 0)),
  );
  return { version: first.version, pid, workers: readings.length, services: [...byName.values()], totals, ...(clients ? { clients } : {}) };
}

/** Per-second rates over one interval. */
export interface Rates {
  connections: number;
  bytes: number;
  errors: Record<ErrorReason, number>;
}

/** One point of the charts: the interval ending at t (Unix seconds), dt seconds long. */
export interface RatePoint extends Rates {
  readonly t: number;
  readonly dt: number;
}

/** GET /dashboard.json. */
export interface DashboardView {
  readonly version: string;
  readonly pid: number;
  readonly workers: number;
  /** Unix seconds of the latest reading (0 before the first). */
  readonly now: number;
  readonly intervalSeconds: number;
  readonly windowSeconds: number;
  readonly reasons: readonly ErrorReason[];
  /** Oldest first; at most DASHBOARD_SAMPLES - 1 (those after ?since= when given). */
  readonly samples: readonly RatePoint[];
  readonly services: readonly (Omit<ServiceReading, "totals"> & { totals: Totals; rates: Rates })[];
  /** The busiest client addresses by new connections (at most CLIENT_ROWS), and what the figures mean. */
  readonly clients: {
    readonly available: boolean;
    readonly note: string;
    /** How long the counts cover, seconds. */
    readonly windowSeconds?: number;
    readonly top?: readonly ClientCount[];
  };
}

/** What the busiest-clients figures are, and are not (the page and `top` show it). */
export function clientsNote(c: ClientsSnapshot | undefined, workers: number): string {
  if (!c) return "this edgeproxy does not track client addresses";
  return (
    `new tcp and http connections per client address over the last ${c.windowSeconds} s, counted at accept by ${workers > 1 ? `each of ${workers} workers` : "the process"} ` +
    `(the ${c.counters} busiest addresses each; "±" is how much a count may be over: a newcomer inherits the count of the address it displaced; bytes, both ways, of its connections that closed in the window). ` +
    "Clients the kernel refused never reach accept and are counted per service, not per address: see errors by reason."
  );
}

// Counters only grow, but a worker that restarted counts from zero again: a drop is no traffic, not negative traffic.
function rates(a: Totals, b: Totals, dt: number): Rates {
  const r = (x: number, y: number) => (dt > 0 ? Math.max(0, y - x) / dt : 0);
  return { connections: r(a.connections, b.connections), bytes: r(a.bytes, b.bytes), errors: Object.fromEntries(ERROR_REASONS.map((k) => [k, r(a.errors[k], b.errors[k])])) as Record<ErrorReason, number> };
}

interface Entry {
  readonly at: number;
  readonly totals: Totals;
}

/**
 * The ring of readings. Only instance totals are kept per sample (a fixed
 * size: 2 + ERROR_REASONS numbers); per-service figures only for the last two
 * readings, for the table's current rates.
 */
export class DashboardSampler {
  private readonly ring: Entry[] = [];
  private last?: { at: number; reading: Reading };
  private previous?: { at: number; reading: Reading };
  private timer?: Timer;
  private busy = false;
  private lastAsked = 0;

  constructor(
    private readonly read: () => Reading | undefined | Promise<Reading | undefined>,
    private readonly options: { intervalMs?: number; samples?: number; idleMs?: number; now?: () => number } = {},
  ) {}

  private get now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** Take one reading now (the timer's tick; tests call it directly). Never throws: a failed read is a missed sample. */
  async sample(): Promise<void> {
    if (this.busy) return; // A slow read (a worker restarting) is not stacked up.
    this.busy = true;
    try {
      const reading = await this.read();
      if (!reading) return;
      const at = this.now;
      this.previous = this.last;
      this.last = { at, reading };
      this.ring.push({ at, totals: reading.totals });
      if (this.ring.length > (this.options.samples ?? DASHBOARD_SAMPLES)) this.ring.shift();
    } catch {
      // No figures this second.
    } finally {
      this.busy = false;
    }
    if (this.now - this.lastAsked > (this.options.idleMs ?? DASHBOARD_IDLE_MS)) this.stop();
  }

  /** A request came: start sampling if stopped (the first reading at once). */
  async touch(): Promise<void> {
    this.lastAsked = this.now;
    if (this.timer) return;
    this.timer = setInterval(() => void this.sample(), this.options.intervalMs ?? DASHBOARD_INTERVAL_MS);
    this.timer.unref?.();
    await this.sample();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  /** The view; `since` (Unix seconds) keeps only the samples after it (a page polling for what is new: 190 KB for a full ring, measured, versus one sample). */
  view(since = -Infinity): DashboardView {
    const samples: RatePoint[] = [];
    for (let i = 1; i < this.ring.length; i++) {
      const a = this.ring[i - 1]!;
      const b = this.ring[i]!;
      if (b.at / 1000 <= since) continue;
      const dt = (b.at - a.at) / 1000;
      samples.push({ t: b.at / 1000, dt, ...rates(a.totals, b.totals, dt) });
    }
    const last = this.last?.reading;
    const prev = this.previous;
    const services = (last?.services ?? []).map((svc) => {
      const before = prev?.reading.services.find((p) => p.name === svc.name);
      const dt = prev ? (this.last!.at - prev.at) / 1000 : 0;
      return { ...svc, rates: before ? rates(before.totals, svc.totals, dt) : rates(svc.totals, svc.totals, 0) };
    });
    return {
      version: last?.version ?? "",
      pid: last?.pid ?? process.pid,
      workers: last?.workers ?? 0,
      now: (this.last?.at ?? 0) / 1000,
      intervalSeconds: (this.options.intervalMs ?? DASHBOARD_INTERVAL_MS) / 1000,
      windowSeconds: ((this.options.intervalMs ?? DASHBOARD_INTERVAL_MS) * (this.options.samples ?? DASHBOARD_SAMPLES)) / 1000,
      reasons: ERROR_REASONS,
      samples,
      services,
      clients: last?.clients
        ? { available: true, note: clientsNote(last.clients, last.workers), windowSeconds: last.clients.windowSeconds, top: last.clients.top.slice(0, CLIENT_ROWS) }
        : { available: false, note: clientsNote(undefined, 0) },
    };
  }
}
