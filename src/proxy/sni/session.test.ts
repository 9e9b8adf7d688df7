import { describe, expect, test } from "bun:test";
import type { OriginPool } from "../../origin/pool";
import type { CoarseClock } from "../clock";
import type { Relay } from "../relay";
import { ServiceStats } from "../stats";
import { OPENSSL_A, OPENSSL_NO_SNI } from "./hello.fixtures";
import { SniRouter } from "./router";
import { SniSession, type RunningSniRoute, type SniRouting } from "./session";
import { SniRouteStats, SniStats } from "./stats";

/*
 * The session's decisions with a stand-in for the relay (what it was told,
 * in order); the real relay, sockets and origins are in test/sni-route.test.ts.
 */
class FakeRelay {
  readonly calls: string[] = [];
  readonly data: Uint8Array[] = [];
  routed: Relay["routed"];
  routeStats: Relay["routeStats"];
  clientData(c: Uint8Array) {
    this.data.push(c);
  }
  clientEnd() {
    this.calls.push("clientEnd");
  }
  clientDrain() {
    this.calls.push("clientDrain");
  }
  clientClosed(e?: Error) {
    this.calls.push(e ? "clientClosed(reset)" : "clientClosed");
  }
  sweep() {
    this.calls.push("sweep");
  }
  abort() {
    this.calls.push("abort");
  }
  end() {
    this.calls.push("end");
  }
  cause(event: string, why: string) {
    this.calls.push(`cause ${event} ${why}`);
  }
}

const poolA = { name: "A" } as unknown as OriginPool;
const poolDefault = { name: "default" } as unknown as OriginPool;

function setup(withDefault = true) {
  const clock = { now: 1000 } as CoarseClock;
  const a: RunningSniRoute = { pool: poolA, stats: new SniRouteStats("1", "a.example") };
  const fallback = withDefault ? { pool: poolDefault, stats: new SniRouteStats("default", "") } : undefined;
  const serviceStats = new ServiceStats();
  const routing: SniRouting = {
    router: new SniRouter([{ names: ["a.example"], pool: {} as never }], () => a),
    fallback,
    stats: new SniStats([a.stats, ...(fallback ? [fallback.stats] : [])]),
    serviceStats,
    clock,
    handshakeMs: 10_000,
  };
  const relay = new FakeRelay();
  const dialled: string[] = [];
  const open = (rest = new Uint8Array(0)) =>
    new SniSession(relay as unknown as Relay, routing, (p) => (dialled.push((p as unknown as { name: string }).name), true), rest);
  return { clock, relay, dialled, routing, open, a, fallback };
}

describe("SniSession", () => {
  test("a hello in pieces: held until complete, then dialled and replayed in order; later bytes pass straight on", () => {
    const { relay, dialled, open, a } = setup();
    const s = open(OPENSSL_A.subarray(0, 10));
    s.clientData(OPENSSL_A.subarray(10, 200));
    expect(dialled).toEqual([]);
    expect(relay.data).toEqual([]);
    s.clientData(OPENSSL_A.subarray(200));
    expect(dialled).toEqual(["A"]);
    expect(Buffer.concat(relay.data).equals(Buffer.from(OPENSSL_A))).toBe(true);
    s.clientData(Uint8Array.of(1, 2, 3));
    expect(relay.data.at(-1)).toEqual(Uint8Array.of(1, 2, 3));
    expect(relay.routed).toEqual({ route: "1", sni: "a.example" });
    expect(relay.routeStats).toBe(a.stats);
    expect(a.stats.connections).toBe(1);
    // Routed: the relay's own deadlines and events from now on.
    s.sweep(1_000_000);
    s.clientEnd();
    expect(relay.calls).toEqual(["sweep", "clientEnd"]);
  });

  test("no server_name and not TLS: the default origins, counted by why; none: reset as no_route", () => {
    const one = setup();
    one.open(OPENSSL_NO_SNI);
    one.open(Buffer.from("GET / HTTP/1.1\r\n"));
    expect(one.dialled).toEqual(["default", "default"]);
    expect(one.routing.stats.unmatched).toEqual({ no_sni: 1, unknown_name: 0, not_tls: 1 });
    expect(one.fallback!.stats.connections).toBe(2);

    const none = setup(false);
    none.open(Buffer.from("GET / HTTP/1.1\r\n"));
    expect(none.dialled).toEqual([]);
    expect(none.relay.calls).toEqual(["cause close no_route", "abort"]);
    expect(none.routing.stats.noRoute).toBe(1);
  });

  test("the deadline: reset at handshakeMs, counted as the tls_handshake stage and as a timeout; not before", () => {
    const { clock, relay, dialled, routing, open } = setup();
    const s = open(OPENSSL_A.subarray(0, 50));
    s.sweep(clock.now + 9_999);
    expect(relay.calls).toEqual([]);
    s.sweep(clock.now + 10_000);
    expect(relay.calls).toEqual(["cause timeout client_hello_timeout", "abort"]);
    expect(routing.serviceStats.deadlinesExpired.get("tls_handshake")).toBe(1);
    expect(routing.stats.parseErrors.timeout).toBe(1);
    // Done: nothing more happens, whatever comes.
    s.clientData(OPENSSL_A.subarray(50));
    s.sweep(clock.now + 20_000);
    expect(dialled).toEqual([]);
    expect(relay.calls).toHaveLength(2);
  });

  test("a FIN before any byte closes quietly; a FIN mid-hello is truncated; a reset is the relay's to count", () => {
    const quiet = setup();
    quiet.open().clientEnd();
    expect(quiet.relay.calls).toEqual(["cause close client_fin", "end"]);
    expect(quiet.routing.stats.parseErrors.truncated).toBe(0);

    const cut = setup();
    const s = cut.open(OPENSSL_A.subarray(0, 100));
    s.clientEnd();
    expect(cut.relay.calls).toEqual(["cause close client_hello_truncated", "abort"]);
    expect(cut.routing.stats.parseErrors.truncated).toBe(1);

    const reset = setup();
    const r = reset.open(OPENSSL_A.subarray(0, 100));
    r.clientClosed(new Error("ECONNRESET"));
    r.sweep(reset.clock.now + 60_000);
    expect(reset.relay.calls).toEqual(["clientClosed(reset)"]);
  });

  test("a refused hello: reset, counted by reason, nothing dialled", () => {
    const { relay, dialled, routing, open } = setup();
    open(Uint8Array.of(22, 3, 1, 0, 4, 2, 0, 0, 0));
    expect(relay.calls).toEqual(["cause close client_hello_not_client_hello", "abort"]);
    expect(routing.stats.parseErrors.not_client_hello).toBe(1);
    expect(dialled).toEqual([]);
  });
});
