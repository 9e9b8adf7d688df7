// Passive ejection per endpoint port. A connect that fails says something
// about one address AND port: a port-preserving origin (`--origin HOST`) with
// one closed port still serves the others, so failures are counted, and the
// endpoint ejected, per origin port. The time out starts short and doubles on
// repeats up to the configured maximum, as Envoy's outlier detection does
// (base_ejection_time × consecutive ejections, capped by max_ejection_time):
// a seconds-long origin restart costs seconds, a dead port stays out long.
import type { EjectConfig } from "../config/pool";

/** Consecutive failures and the ejection of one endpoint port. */
export class Ejection {
  failuresInRow = 0;
  /** Ejected until this Unix time in ms (0: never ejected). */
  until = 0;
  /** Ejections in a row: the next lasts baseMs × 2^level, at most durationMs. */
  level = 0;

  /** Out now. */
  out(now: number): boolean {
    return now < this.until;
  }

  /**
   * One failed connect at `now`: the ejection's duration when this failure
   * ejects, else 0. Failures while ejected (traffic tried anyway in panic)
   * do not extend it: the endpoint gets its next chance when the time ends.
   */
  failed(now: number, cfg: EjectConfig): number {
    if (now < this.until || ++this.failuresInRow < cfg.failures) return 0;
    this.failuresInRow = 0;
    // A period of success resets the backoff: the last ejection ended at
    // least the maximum duration ago, so this is a new outage, not a repeat.
    if (this.until > 0 && now - this.until >= cfg.durationMs) this.level = 0;
    const ms = Math.min(cfg.baseMs * 2 ** Math.min(this.level, 30), cfg.durationMs);
    this.level++;
    this.until = now + ms;
    return ms;
  }

  succeeded(): void {
    this.failuresInRow = 0;
  }

  /** Holds nothing worth keeping: no failures counted, not out, and backoff would reset anyway. */
  idle(now: number, cfg: EjectConfig): boolean {
    return this.failuresInRow === 0 && (this.until === 0 || now - this.until >= cfg.durationMs);
  }
}

/** Ports whose state one endpoint keeps at most; beyond, the least recently failed is forgotten (counted). */
export const MAX_PORT_STATES = 256;

/**
 * The ejection state of one endpoint's ports, for the ports that failed
 * only: a port-preserving origin can be dialled on 65,535 ports, and a
 * client choosing closed ports must not make us keep one entry each. A
 * bounded map in least-recently-failed order (a Map iterates in insertion
 * order; a failure re-inserts); an entry whose port works again is dropped.
 */
export class PortEjections {
  private readonly ports = new Map<number, Ejection>();
  /** Entries forgotten because the map was full. */
  evicted = 0;
  /** Ejections of any port, ever. */
  ejections = 0;

  constructor(
    private readonly config: EjectConfig,
    private readonly cap = MAX_PORT_STATES,
  ) {}

  /** Port `port` is ejected now. */
  out(port: number, now: number): boolean {
    return this.ports.get(port)?.out(now) ?? false;
  }

  /** A connect to `port` failed: the ejection's duration in ms when this ejects it, else 0. */
  failed(port: number, now: number): number {
    let e = this.ports.get(port);
    if (e) this.ports.delete(port);
    else {
      e = new Ejection();
      if (this.ports.size >= this.cap) {
        this.ports.delete(this.ports.keys().next().value!);
        this.evicted++;
      }
    }
    this.ports.set(port, e);
    const ms = e.failed(now, this.config);
    if (ms > 0) this.ejections++;
    return ms;
  }

  /** A connect to `port` succeeded: its failure count restarts, and an entry that holds nothing more goes. */
  succeeded(port: number, now: number): void {
    const e = this.ports.get(port);
    if (!e) return;
    e.succeeded();
    if (e.idle(now, this.config)) this.ports.delete(port);
  }

  /** The ports ejected now, ascending, with when each comes back. */
  ejected(now: number): { port: number; until: number }[] {
    const out: { port: number; until: number }[] = [];
    for (const [port, e] of this.ports) if (e.out(now)) out.push({ port, until: e.until });
    return out.sort((a, b) => a.port - b.port);
  }

  /** The earliest end of a current ejection, or undefined when none is out. */
  nextEnd(now: number): number | undefined {
    let next: number | undefined;
    for (const e of this.ports.values()) if (e.out(now) && (next === undefined || e.until < next)) next = e.until;
    return next;
  }

  /** Entries held (for tests and bounds). */
  get size(): number {
    return this.ports.size;
  }
}
