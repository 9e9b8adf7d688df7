// Passive ejection per endpoint port, backoff and panic, end to end through
// the real kernel path, each test in a namespace of its own: closed ports of
// a port-preserving origin never take its working ports out (tcp, udp,
// http), a short origin restart costs about as long as it lasted, and a pool
// whose every endpoint is ejected still tries them.
import { describe, expect, test } from "bun:test";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { exchange, greeter, text } from "./helpers/net";
import { scrape, workdir, writeConfig } from "./helpers/pools";
import { UdpClient, udpOrigin } from "./helpers/udp";

const f = proxyFixture();

/** A port nothing listens on now (bound, then closed). */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

const tcpAsk = async (port: number) => text(await exchange("192.0.2.1", port, "", 2000));

async function udpAsk(port: number): Promise<string> {
  const c = await UdpClient.connect("192.0.2.1", port);
  try {
    const got = await c.request("hi", 400);
    return got === "<timeout>" ? "" : got;
  } finally {
    c.close();
  }
}

// curl, not our parser, reads the reply; a failure (502) is "".
async function httpAsk(port: number): Promise<string> {
  const p = Bun.spawn(["curl", "-s", "--max-time", "3", "-w", "\n%{http_code}", `http://192.0.2.1:${port}/`], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const nl = out.lastIndexOf("\n");
  return out.slice(nl + 1) === "200" ? out.slice(0, nl) : "";
}

const tally = (xs: string[]) => xs.reduce<Record<string, number>>((o, x) => ({ ...o, [x]: (o[x] ?? 0) + 1 }), {});

describe("ejection per endpoint port", () => {
  /**
   * Two port-preserving origins on 7000-7010: 127.0.0.1 serves 7001 only,
   * 127.0.0.2 serves 7001 and 7002. Connections to 7002 fail on .1 until
   * .1:7002 is ejected (a long ejection: base 10 s), then all go to .2. With
   * ejection per address, .1 would be out on 7001 too and 7001 would go to
   * .2 only; per port, 7001 keeps alternating between both, with no panic.
   */
  test.each([
    ["tcp", tcpAsk],
    ["udp", udpAsk],
    ["http", httpAsk],
  ] as const)("%s: closed ports never eject a port-preserving origin on its working ports", async (mode, ask) => {
    const w = workdir();
    const udp: { socket: { close(): void } }[] = [];
    try {
      if (mode === "tcp") f.servers.push(greeter("127.0.0.1", 7001, "a1"), greeter("127.0.0.2", 7001, "b1"), greeter("127.0.0.2", 7002, "b2"));
      if (mode === "http") for (const [h, p, n] of [["127.0.0.1", 7001, "a1"], ["127.0.0.2", 7001, "b1"], ["127.0.0.2", 7002, "b2"]] as const) f.servers.push(httpOrigin(h, n, undefined, p).listener);
      if (mode === "udp") for (const [h, p, n] of [["127.0.0.1", 7001, "a1"], ["127.0.0.2", 7001, "b1"], ["127.0.0.2", 7002, "b2"]] as const) udp.push(await udpOrigin(h, () => n, p));
      writeConfig(w, { mode, origins: ["127.0.0.1", "127.0.0.2"], ports: "7000-7010", extra: `eject = { failures = 3, base_duration = "10s", duration = "30s" }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);

      const first: string[] = [];
      for (let i = 0; i < 12; i++) first.push(await ask(7002));
      // Round-robin a, b, a, b, a: three failures on .1:7002 eject it; then .2 only.
      expect(first.filter((x) => x !== "b2").length).toBe(3);
      expect(first.slice(5)).toEqual(Array(7).fill("b2"));

      const working: string[] = [];
      const closed: string[] = [];
      for (let i = 0; i < 10; i++) {
        working.push(await ask(7001));
        closed.push(await ask(7002));
      }
      expect(tally(working)).toEqual({ a1: 5, b1: 5 });
      expect(closed).toEqual(Array(10).fill("b2"));

      const m = await scrape(w.admin);
      const one = { origin: "127.0.0.1 (port-preserving)", address: "127.0.0.1" };
      expect(m("edgeproxy_origin_ejections_total", one)).toBe(1);
      expect(m("edgeproxy_origin_up", one)).toBe(1);
      expect(m("edgeproxy_origin_panic_total")).toBe(0);
      expect(f.ep.stderr).toMatch(/origin 127\.0\.0\.1 \(port-preserving\) port 7002 ejected for 10000ms after 3 failed connects/);
      const status = await (await fetch("http://localhost/status", { unix: w.admin } as RequestInit)).json();
      const ep = JSON.stringify(status);
      expect(ep).toContain('"ejectedPorts":[{"port":7002');
    } finally {
      for (const s of udp) s.socket.close();
      w.done();
    }
  }, 30_000);
});

describe("backoff and panic", () => {
  /**
   * One origin, restarted under load: stopped for ~2 s while a client loop
   * (bounded in time and count) connects every few ms. Without panic its
   * ejection would turn the blip into eject.duration (30 s) of resets; the
   * failures must end within a few seconds of the origin's return.
   */
  test.each(["tcp", "http"] as const)("%s: a single origin restarted for 2 s under load costs about 2 s of failures, not the ejection time", async (mode) => {
    const w = workdir();
    try {
      const port = freePort();
      const start = () => (mode === "tcp" ? greeter("127.0.0.1", port, "up") : httpOrigin("127.0.0.1", "up", undefined, port).listener);
      // Our raw client reads the reply; a 200 ends with the origin's body "up", anything else does not.
      const ask = async () => (mode === "tcp" ? tcpAsk(1000) : text(await exchange("192.0.2.1", 1000, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 2000)).startsWith("HTTP/1.1 200") ? "up" : "");
      let origin = start();
      writeConfig(w, { mode, origins: [`127.0.0.1:${port}`], ports: "1000" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      const t0 = performance.now();
      const results: { at: number; ok: boolean }[] = [];
      let stopped = 0;
      let restarted = 0;
      // The origin goes away at 1 s and is back 2 s later, while 8 client loops
      // (each bounded: 8 s, 5,000 connections) connect back to back.
      const down = setTimeout(() => {
        origin.stop(true);
        stopped = performance.now() - t0;
      }, 1_000);
      const up = setTimeout(() => {
        origin = start();
        restarted = performance.now() - t0;
      }, 3_000);
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let i = 0; i < 5_000 && performance.now() - t0 < 7_000; i++) {
            const at = performance.now() - t0;
            const ok = (await ask()) === "up";
            results.push({ at, ok });
          }
        }),
      );
      clearTimeout(down);
      clearTimeout(up);
      f.servers.push(origin);
      const failed = results.filter((r) => !r.ok);
      const window = failed.length ? failed.at(-1)!.at - failed[0]!.at : 0;
      const lastFail = failed.at(-1)?.at ?? 0;
      console.log(`${mode}: single origin down ${(restarted - stopped).toFixed(0)}ms: ${failed.length}/${results.length} failed over ${window.toFixed(0)}ms; last failure ${(lastFail - restarted).toFixed(0)}ms after its return`);
      expect(failed.length).toBeGreaterThan(5);
      expect(window).toBeLessThan(4_000);
      // Every connection begun after the return (plus one connect's slack) is answered.
      expect(lastFail - restarted).toBeLessThan(250);
      expect(results.filter((r) => r.at > restarted + 250).every((r) => r.ok)).toBe(true);
      expect(results.filter((r) => r.at > restarted + 250).length).toBeGreaterThan(100);
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_ejections_total", { origin: `127.0.0.1:${port}`, address: "127.0.0.1" })).toBeGreaterThanOrEqual(1);
      expect(m("edgeproxy_origin_panic_total")).toBeGreaterThan(0);
    } finally {
      w.done();
    }
  }, 30_000);

  /**
   * Two origins, one restarted for 2 s: ejected first for base_duration
   * (1 s), then 2 s, so it is back in rotation about a second after its
   * return, not eject.duration (30 s) later.
   */
  test("ejection backs off from base_duration: a restarted origin of two is back in rotation within seconds", async () => {
    const w = workdir();
    try {
      const b = greeter("127.0.0.1", 0, "b");
      f.servers.push(b);
      const port = freePort();
      let a = greeter("127.0.0.1", port, "a");
      writeConfig(w, { origins: [`127.0.0.1:${port}`, `127.0.0.1:${b.port}`], ports: "1000" });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(tally([await tcpAsk(1000), await tcpAsk(1000)])).toEqual({ a: 1, b: 1 });
      a.stop(true);
      const down = performance.now();
      const seen: string[] = [];
      let back = 0;
      let firstA = 0;
      for (let i = 0; i < 5_000 && performance.now() - down < 10_000 && !firstA; i++) {
        if (!back && performance.now() - down > 2_000) {
          a = greeter("127.0.0.1", port, "a");
          back = performance.now();
        }
        const got = await tcpAsk(1000);
        seen.push(got);
        if (back && got === "a") firstA = performance.now();
        await Bun.sleep(10);
      }
      f.servers.push(a);
      console.log(`origin of two down 2s: ${seen.filter((x) => x === "").length} failed connections; back in rotation ${(firstA - back).toFixed(0)}ms after its return`);
      expect(firstA).toBeGreaterThan(0);
      // Ejections of 1 s then 2 s during the 2 s outage: back at most ~2 s after its return.
      expect(firstA - back).toBeLessThan(2_500);
      // Each re-try costs eject.failures (3) failed connections: a few per ejection, not one per connection.
      expect(seen.filter((x) => x === "").length).toBeLessThanOrEqual(12);
      expect(f.ep.stderr).toMatch(/ejected for 1000ms after 3 failed connects/);
      expect(f.ep.stderr).toMatch(/ejected for 2000ms after 3 failed connects/);
    } finally {
      w.done();
    }
  }, 30_000);

  test("panic: with every endpoint ejected, traffic still goes to them, and it is counted", async () => {
    const w = workdir();
    try {
      const [p1, p2] = [freePort(), freePort()];
      writeConfig(w, { origins: [`127.0.0.1:${p1}`, `127.0.0.1:${p2}`], ports: "1000", extra: `eject = { failures = 1, base_duration = "60s", duration = "60s" }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      // One failure each ejects both for a minute.
      expect([(await exchange("192.0.2.1", 1000, "x", 2000)).kind, (await exchange("192.0.2.1", 1000, "x", 2000)).kind]).toEqual(["reset", "reset"]);
      let m = await scrape(w.admin);
      expect(m("edgeproxy_origin_up", { origin: `127.0.0.1:${p1}`, address: "127.0.0.1" })).toBe(0);
      expect(m("edgeproxy_origin_up", { origin: `127.0.0.1:${p2}`, address: "127.0.0.1" })).toBe(0);
      // Both ejected, one comes back: it is reached at once, not after the minute.
      f.servers.push(greeter("127.0.0.1", p2, "two"));
      const got: string[] = [];
      for (let i = 0; i < 6; i++) got.push(await tcpAsk(1000));
      // Balanced over both, as when healthy: every other connection.
      expect(tally(got)).toEqual({ "": 3, two: 3 });
      m = await scrape(w.admin);
      expect(m("edgeproxy_origin_panic_total")).toBe(6);
      expect(m("edgeproxy_origin_errors_total", { class: "no_origin" })).toBe(0);
      expect(f.ep.stderr).toMatch(/no endpoint eligible \(all down or ejected\): trying them anyway \(panic\)/);
    } finally {
      w.done();
    }
  }, 30_000);
});
