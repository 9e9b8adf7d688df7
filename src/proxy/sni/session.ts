import type { OriginPool } from "../../origin/pool";
import type { CoarseClock } from "../clock";
import type { Session } from "../pipelineapi";
import type { Relay } from "../relay";
import type { ServiceStats } from "../stats";
import { ClientHelloReader, type HelloError, type HelloVerdict } from "./hello";
import type { SniRouter } from "./router";
import type { SniRouteStats, SniStats, Unmatched } from "./stats";

/*
 * The start of a tcp connection on a service with sni routes: hold the
 * client's bytes until its ClientHello is complete (hello.ts), pick the
 * pool by the server name, then dial it and hand it everything held, first,
 * and relay as usual. Part of the tcp protocol's session rather than a
 * pipeline stage: the relay (counted, logged, with its PROXY header queued)
 * exists from the start and only its connect waits.
 *
 *   a route's name (exact, then "*.")  → the route's pool
 *   no server_name, an unknown name,   → the service's own origins
 *   or not TLS at all                    (none: reset, counted as no_route)
 *   a refused ClientHello              → reset, counted by reason
 *   client half-close mid-hello        → reset (truncated); before any byte: closed, no origin dialled
 *   handshake_timeout passes first     → reset, counted as
 *                                        deadline_expired_total{stage="tls_handshake"}
 *                                        and sni_parse_errors_total{reason="timeout"}
 *
 * Server-speaks-first protocols (SMTP, MySQL) cannot share a service with
 * sni routes: the client waits for the origin, the session for the client,
 * until the deadline.
 */

/** A route as the service runs it. */
export interface RunningSniRoute {
  readonly pool: OriginPool;
  readonly stats: SniRouteStats;
}

/** What every session of one service shares. */
export interface SniRouting {
  readonly router: SniRouter<RunningSniRoute>;
  /** The service's own origins; absent: unmatched connections are reset. */
  readonly fallback: RunningSniRoute | undefined;
  readonly stats: SniStats;
  readonly serviceStats: ServiceStats;
  readonly clock: CoarseClock;
  readonly handshakeMs: number;
}

const enum State {
  Reading,
  Routed,
  Done,
}

export class SniSession implements Session {
  private state = State.Reading;
  private readonly reader = new ClientHelloReader();
  /** The client's bytes as they came, forwarded once routed; the reader bounds them (HELLO_LIMIT and one read). */
  private held: Uint8Array[] = [];
  private readonly deadline: number;

  constructor(
    private readonly relay: Relay,
    private readonly r: SniRouting,
    /** Pick an endpoint of `pool` and connect the relay to it (false: none, the relay was reset). */
    private readonly dial: (pool: OriginPool) => boolean,
    /** Bytes already read (after a PROXY header). */
    rest: Uint8Array,
  ) {
    this.deadline = r.clock.now + r.handshakeMs;
    if (rest.length) this.clientData(rest);
  }

  clientData(chunk: Uint8Array): void {
    if (this.state === State.Routed) return this.relay.clientData(chunk);
    if (this.state === State.Done) return;
    this.held.push(chunk);
    const v = this.reader.feed(chunk);
    if (v.kind !== "more") this.decide(v);
  }

  private decide(v: Exclude<HelloVerdict, { kind: "more" }>): void {
    if (v.kind === "error") return this.refuse(v.reason);
    if (v.kind === "not_tls") return this.route(this.r.fallback, "not_tls", null);
    if (v.sni === undefined) return this.route(this.r.fallback, "no_sni", null);
    const route = this.r.router.match(v.sni);
    this.route(route ?? this.r.fallback, route ? undefined : "unknown_name", v.sni);
  }

  private route(to: RunningSniRoute | undefined, unmatched: Unmatched | undefined, sni: string | null): void {
    const relay = this.relay;
    const held = this.held;
    this.held = [];
    if (unmatched) this.r.stats.unmatched[unmatched]++;
    relay.routed = { route: to?.stats.route ?? null, sni };
    if (!to) {
      this.state = State.Done;
      this.r.stats.noRoute++;
      relay.cause("close", "no_route");
      return relay.abort();
    }
    this.state = State.Routed;
    to.stats.connections++;
    relay.routeStats = to.stats;
    if (!this.dial(to.pool)) return;
    for (const chunk of held) relay.clientData(chunk);
  }

  private refuse(reason: HelloError, event = "close"): void {
    this.state = State.Done;
    this.held = [];
    this.r.stats.parseErrors[reason]++;
    this.relay.cause(event, `client_hello_${reason}`);
    this.relay.abort();
  }

  clientDrain(): void {
    if (this.state === State.Routed) this.relay.clientDrain();
  }

  clientEnd(): void {
    if (this.state === State.Routed) return this.relay.clientEnd();
    if (this.state === State.Done) return;
    // A TCP check connects and closes without a byte: close, no origin dialled, nothing refused.
    if (this.reader.received === 0) {
      this.state = State.Done;
      this.relay.cause("close", "client_fin");
      return this.relay.end();
    }
    this.refuse("truncated");
  }

  /** The relay's bytes both ways (the busiest-clients tracker's): held bytes count once routed and forwarded. */
  bytes(): number {
    return this.relay.bytes();
  }

  clientClosed(error?: Error): void {
    if (this.state === State.Reading) this.state = State.Done;
    this.relay.clientClosed(error);
  }

  sweep(now: number): void {
    if (this.state === State.Routed) return this.relay.sweep(now);
    if (this.state === State.Reading && now >= this.deadline) {
      this.r.serviceStats.deadlineExpired("tls_handshake");
      this.refuse("timeout", "timeout");
    }
  }

  abort(): void {
    this.state = State.Done;
    this.relay.abort();
  }
}
