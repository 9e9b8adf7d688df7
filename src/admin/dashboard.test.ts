import { describe, expect, test } from "bun:test";
import { createAdminApp } from "./api";
import type { AdminBackend, StatusSnapshot } from "./backend";
import { DashboardSampler, ERROR_REASONS, mergeReadings, readStatus, type DashboardView, type Reading } from "./dashboard";
import { DASHBOARD_HTML } from "./dashboard-page";
import { sampleStatus } from "./fixture";
import { renderTop } from "../cli/live";
import { parseLive } from "../cli/live";

/** The fixture with its counters moved on by `k` connections of 100 bytes each way and k origin errors. */
function moved(k: number): StatusSnapshot {
  const s = sampleStatus();
  const web = s.services[0]!;
  const c = web.connections!;
  return {
    ...s,
    services: [
      { ...web, connections: { ...c, total: c.total + k, bytesFromClients: c.bytesFromClients + 100 * k, bytesFromOrigins: c.bytesFromOrigins + 100 * k, originErrors: { ...c.originErrors, refused: (c.originErrors.refused ?? 0) + k } } },
      ...s.services.slice(1),
    ],
  };
}

describe("readStatus", () => {
  test("sums the fixture's counters by reason; JSON (kernel counters as strings) reads the same", () => {
    const r = readStatus(sampleStatus());
    const web = r.services[0]!;
    expect(web.totals.connections).toBe(7);
    expect(web.totals.bytes).toBe(1234 + 98765);
    expect(web.totals.errors).toMatchObject({ origin: 3, denied: 3, limited: 4 + 5 + 6 + 7, full: 5, no_socket: 3, tls: 4, proxy_header: 2, deadline: 1, client_reset: 1 });
    expect(web.bindings).toEqual(["tcp 192.0.2.0/24 80"]);
    expect(web.origins).toEqual([
      { origin: "127.0.0.1:9000", healthy: false, up: 0, endpoints: 1, active: 2 },
      { origin: "origin.test:9000 weight=3", healthy: true, up: 1, endpoints: 2, active: 0 },
    ]);
    expect(r.totals.errors.cap).toBe(5);
    const json = JSON.parse(JSON.stringify(sampleStatus(), (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    expect(readStatus(json)).toEqual(r);
  });

  test("without kernel counters (a supervisor's second worker) the kernel reasons are 0", () => {
    const web = readStatus(sampleStatus(), false).services[0]!;
    expect(web.totals.errors).toMatchObject({ denied: 0, full: 0, no_socket: 0, limited: 6 + 7 });
  });

  test("mergeReadings sums workers' totals and open connections, kernel once", () => {
    const a = readStatus(sampleStatus(), true);
    const b = readStatus(sampleStatus(), false);
    const m = mergeReadings([a, b], 99)!;
    expect(m.workers).toBe(2);
    expect(m.pid).toBe(99);
    expect(m.services[0]!.totals.connections).toBe(14);
    expect(m.services[0]!.active).toBe(4);
    expect(m.services[0]!.totals.errors.denied).toBe(3);
    expect(m.services[0]!.origins[0]!.active).toBe(4);
    // The inputs are not changed.
    expect(a.services[0]!.totals.connections).toBe(7);
    expect(mergeReadings([], 1)).toBeUndefined();
  });

  test("the busiest clients: workers' lists added up per address; the view lists them, top prints them", async () => {
    const top = (rows: [string, number][]) => ({ windowSeconds: 60, counters: 64, top: rows.map(([address, connections]) => ({ address, connections, refused: 0, error: 0, bytes: 1500 * connections })) });
    const a = readStatus({ ...sampleStatus(), clients: top([["192.0.2.1", 5], ["192.0.2.2", 1]]) });
    const b = readStatus({ ...sampleStatus(), clients: top([["192.0.2.2", 7]]) }, false);
    const m = mergeReadings([a, b], 99)!;
    expect(m.clients!.top.map((c) => [c.address, c.connections])).toEqual([["192.0.2.2", 8], ["192.0.2.1", 5]]);
    const sampler = new DashboardSampler(() => m);
    await sampler.sample();
    const v = sampler.view();
    expect(v.clients.available).toBe(true);
    expect(v.clients.top).toEqual(m.clients!.top);
    expect(v.clients.note).toContain("each of 2 workers");
    expect(renderTop(v)).toMatch(/^busiest clients \(new connections, last 60 s\):\nCLIENT\s+CONNECTIONS\s+±\s+REFUSED\s+BYTES\n192\.0\.2\.2\s+8\s+12\.0kB\n192\.0\.2\.1\s+5\s+7\.50kB$/m);
    // A process without the tracker (an older worker): said so, not an empty list.
    const old = new DashboardSampler(() => readStatus(sampleStatus()));
    await old.sample();
    expect(old.view().clients).toEqual({ available: false, note: "this edgeproxy does not track client addresses" });
    expect(renderTop(old.view())).toContain("busiest clients: unavailable");
  });
});

describe("DashboardSampler", () => {
  test("rates are the counters' differences over the interval; the ring is bounded; a restarted worker's drop is 0, not negative", async () => {
    let clock = 1_000_000;
    const steps = [0, 10, 30, 30, 5, 45];
    let i = 0;
    const sampler = new DashboardSampler(() => readStatus(moved(steps[i++]!)), { samples: 4, now: () => clock });
    for (const _ of steps) {
      await sampler.sample();
      clock += 2_000;
    }
    const v = sampler.view();
    // Six readings, four kept: three intervals of 2 s (30->30, 30->5, 5->45).
    expect(v.samples.map((s) => s.dt)).toEqual([2, 2, 2]);
    expect(v.samples.map((s) => s.connections)).toEqual([0, 0, 20]);
    expect(v.samples.map((s) => s.bytes)).toEqual([0, 0, 4000]);
    expect(v.samples.map((s) => s.errors.origin)).toEqual([0, 0, 20]);
    expect(v.samples[2]!.errors.denied).toBe(0);
    expect(v.windowSeconds).toBe(4);
    expect(Object.keys(v.samples[0]!.errors)).toEqual([...ERROR_REASONS]);
    expect(v.services[0]!.rates.connections).toBe(20);
    // ?since: only what is newer than the last sample the page holds.
    expect(sampler.view(v.samples[1]!.t).samples).toEqual([v.samples[2]!]);
    expect(sampler.view(v.samples[2]!.t).samples).toEqual([]);
    expect(v.clients.available).toBe(false);
  });

  test("a failed read is a missed sample; the sampler stops when nobody asked for idleMs", async () => {
    let clock = 0;
    let fail = false;
    const sampler = new DashboardSampler(
      () => {
        if (fail) throw new Error("worker restarting");
        return readStatus(sampleStatus());
      },
      { idleMs: 5_000, intervalMs: 60_000, now: () => clock },
    );
    await sampler.touch();
    expect(sampler.running).toBe(true);
    fail = true;
    await sampler.sample();
    fail = false;
    clock = 4_000;
    await sampler.sample();
    expect(sampler.view().samples).toHaveLength(1);
    expect(sampler.running).toBe(true);
    clock = 6_000;
    await sampler.sample();
    expect(sampler.running).toBe(false);
  });
});

describe("admin routes", () => {
  const backend: AdminBackend = { status: () => sampleStatus(), addBinding() {}, removeBinding: () => false, reload: async () => {} };

  test("GET / is the page, without external assets; /dashboard.json answers with the view", async () => {
    const app = createAdminApp(backend);
    const page = await app.request("/");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(await page.text()).toBe(DASHBOARD_HTML);
    expect(DASHBOARD_HTML).not.toMatch(/\b(src|href)=|https?:\/\/|@import|url\(/);
    const v = (await (await app.request("/dashboard.json")).json()) as DashboardView;
    expect(v.services.map((s) => s.name)).toEqual(["web", "ext"]);
    expect(v.samples).toEqual([]); // one reading so far
    expect((await app.request("/dashboard.json?since=1700000000.5")).status).toBe(200);
    const bad = await app.request("/dashboard.json?since=yesterday");
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: 'since must be Unix seconds, not "yesterday"' });
  });

  test("with a token: the page is open (it holds no figures), its data is not", async () => {
    const app = createAdminApp(backend, { token: "0123456789abcdef" });
    expect((await app.request("/")).status).toBe(200);
    expect((await app.request("/dashboard.json")).status).toBe(401);
    expect((await app.request("/", { method: "POST" })).status).toBe(401);
    expect((await app.request("/dashboard.json", { headers: { Authorization: "Bearer 0123456789abcdef" } })).status).toBe(200);
  });
});

describe("edgeproxy top / dashboard", () => {
  const view = (): DashboardView => {
    const s = new DashboardSampler(() => undefined);
    const reading: Reading = readStatus(sampleStatus());
    const base = s.view();
    const zero = Object.fromEntries(ERROR_REASONS.map((r) => [r, 0])) as DashboardView["samples"][number]["errors"];
    return {
      ...base,
      version: "1.2.3-test",
      pid: 4242,
      workers: 2,
      now: 1_700_000_000,
      samples: [{ t: 1_700_000_000, dt: 1, connections: 12.5, bytes: 2_500_000, errors: { ...zero, denied: 3 } }],
      services: reading.services.map((svc) => ({ ...svc, rates: { connections: 12.5, bytes: 2_500_000, errors: { ...zero, denied: 3 } } })),
    };
  };

  test("renderTop: services, rates, errors by reason and origin health, plain text", () => {
    const out = renderTop(view());
    expect(out).toContain("edgeproxy 1.2.3-test  pid 4242  2 workers  22:13:20 UTC");
    expect(out).toContain("last 1 s: 12.5 conn/s  2.50MB/s  3 errors/s");
    expect(out).toMatch(/^web\s+tcp\/epoll\s+2\s+12\.5\s+2\.50MB\s+3\s+7\s+1\/2$/m);
    expect(out).toMatch(/^ext\s+external\s+0\s+/m);
    expect(out).toContain("errors/s by reason (last 1 s): denied 3");
    expect(out).toMatch(/^web\s+127\.0\.0\.1:9000\s+DOWN\s+0\/1\s+2$/m);
    expect(out).not.toContain("\x1b");
  });

  test("flags: a bad port, a positional argument, a repeat are usage errors", () => {
    expect(parseLive("dashboard", ["--port", "8080"]).port).toBe(8080);
    expect(parseLive("top", ["--once", "--admin=/x.sock"])).toEqual({ port: 0, once: true, admin: "/x.sock" });
    expect(() => parseLive("dashboard", ["--port", "70000"])).toThrow(/--port/);
    expect(() => parseLive("top", ["now"])).toThrow(/usage: edgeproxy top/);
    expect(() => parseLive("top", ["--once", "--once"])).toThrow(/given twice/);
    expect(() => parseLive("top", ["--port", "1"])).toThrow(/unknown option/);
  });
});
