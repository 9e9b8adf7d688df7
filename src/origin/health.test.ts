import { afterEach, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { HealthChecker, HealthState, probe } from "./health";

const listeners: TCPSocketListener<any>[] = [];
afterEach(() => {
  for (const l of listeners.splice(0)) l.stop(true);
});

/** A loopback server answering every connection with `reply` (or nothing). */
function server(reply?: string, onOpen?: () => void, onClose?: () => void): number {
  const l = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open: () => onOpen?.(),
      data(s) {
        if (reply !== undefined) s.end(reply);
      },
      close: () => onClose?.(),
    },
  });
  listeners.push(l);
  return l.port;
}

/** A port nothing listens on: bound, then closed. */
function deadPort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

const target = (port: number) => ({ address: "127.0.0.1", port, hostHeader: "origin.test" });

describe("HealthState", () => {
  test("fall consecutive failures take it down, rise consecutive passes bring it back; a pass in between resets", () => {
    const h = new HealthState({ rise: 2, fall: 3 });
    expect([h.record(false), h.record(false), h.record(true), h.record(false), h.record(false)]).toEqual([false, false, false, false, false]);
    expect(h.healthy).toBe(true);
    expect(h.record(false)).toBe(true);
    expect(h.healthy).toBe(false);
    expect([h.record(true), h.record(false), h.record(true)]).toEqual([false, false, false]);
    expect(h.record(true)).toBe(true);
    expect(h.healthy).toBe(true);
  });

  test("markDown needs rise passes", () => {
    const h = new HealthState({ rise: 2, fall: 1 });
    h.markDown();
    expect(h.record(true)).toBe(false);
    expect(h.record(true)).toBe(true);
  });
});

describe("probe", () => {
  test("tcp: a listener passes, a closed port fails", async () => {
    expect((await probe("tcp", target(server()), "/", 1000)).pass).toBe(true);
    const dead = await probe("tcp", target(deadPort()), "/", 1000);
    expect(dead).toEqual({ pass: false, detail: "ECONNREFUSED" });
  });

  test("http: 2xx and 3xx pass; 5xx, garbage, silence fail", async () => {
    const got = async (reply: string | undefined) => probe("http", target(server(reply)), "/healthz", 300);
    expect(await got("HTTP/1.1 204 No Content\r\n\r\n")).toEqual({ pass: true, detail: "status 204" });
    expect(await got("HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n")).toEqual({ pass: true, detail: "status 302" });
    expect(await got("HTTP/1.1 503 Service Unavailable\r\n\r\n")).toEqual({ pass: false, detail: "status 503" });
    expect((await got("SSH-2.0-OpenSSH\r\n")).pass).toBe(false);
    expect(await got(undefined)).toEqual({ pass: false, detail: "no response within 300ms" });
  });

  test("http: sends GET path with the origin's name as Host", async () => {
    let request = "";
    const l = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s, d) {
          request += d.toString();
          s.end("HTTP/1.1 200 OK\r\n\r\n");
        },
      },
    });
    listeners.push(l);
    expect((await probe("http", target(l.port), "/ready", 1000)).pass).toBe(true);
    expect(request).toStartWith(`GET /ready HTTP/1.1\r\nHost: origin.test:${l.port}\r\n`);
  });
});

test("HealthChecker: checks of one endpoint never overlap, and stop() ends them", async () => {
  let open = 0;
  let most = 0;
  let checks = 0;
  // Never answers: each check runs into its 150ms timeout, longer than the 50ms interval.
  const port = server(
    undefined,
    () => {
      checks++;
      most = Math.max(most, ++open);
    },
    () => open--,
  );
  const results: boolean[] = [];
  const c = new HealthChecker("http", target(port), { intervalMs: 50, timeoutMs: 150, rise: 1, fall: 1, path: "/" }, (r) => results.push(r.pass));
  c.start();
  await Bun.sleep(700);
  c.stop();
  const after = checks;
  await Bun.sleep(300);
  expect(most).toBe(1);
  expect(results.length).toBeGreaterThanOrEqual(3);
  expect(results.every((p) => !p)).toBe(true);
  expect(checks).toBeLessThanOrEqual(after + 1);
});
