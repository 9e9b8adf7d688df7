import { describe, expect, test } from "bun:test";
import { mergeMetrics } from "../cli/supervisor-admin";
import type { StatusSnapshot } from "./backend";
import { sampleStatus } from "./fixture";
import { renderMetrics } from "./metrics";
import { addFigures, totalStatus } from "./total";
import { SniRouteStats, SniStats } from "../proxy/sni/stats";

/** Another worker's status: the same services, other figures. */
function secondWorker(): StatusSnapshot {
  const s = sampleStatus();
  const web = s.services[0]!;
  const c = web.connections!;
  return {
    ...s,
    pid: 4243,
    capacity: { max: 9950, active: 5, refused: 1, accepting: false, left: 1, rejoined: 0 },
    services: [
      {
        ...web,
        connections: {
          ...c,
          active: 4,
          total: 11,
          bytesFromClients: 10,
          originErrors: { refused: 1, timeout: 3 },
          duration: { buckets: c.duration.buckets.map((b) => ({ le: b.le, count: b.count + 1 })), sum: 1.5, count: c.duration.count + 1 },
        },
        origins: web.origins!.map((o) => ({ ...o, active: o.active + 1, endpoints: o.endpoints.map((e) => ({ ...e, active: e.active + 1, up: true, panics: 1 })) })),
      },
      s.services[1]!,
    ],
  };
}

/** Samples of a text exposition, each keyed by name and labels (the worker label dropped), summed over workers. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    const key = line.slice(0, space).replace(/worker="\d+",?/, "").replace("{}", "");
    out.set(key, (out.get(key) ?? 0) + Number(line.slice(space + 1)));
  }
  return out;
}

describe("totalStatus", () => {
  test("adds every worker's figures as /metrics has them: each series of the total equals the sum of the workers' series", () => {
    const workers = [sampleStatus(), secondWorker()];
    const total = samples(renderMetrics(totalStatus(workers)));
    const merged = samples(mergeMetrics(workers.map((s, i) => ({ worker: i, text: renderMetrics(s) }))));
    // Some-worker flags (OR, not a sum), the start time and which engine serves a service are not counts.
    const flags = /^edgeproxy_(connection_cap_accepting|origin_up|process_start_time_seconds|service_engine)/;
    let compared = 0;
    for (const [key, value] of merged) {
      if (flags.test(key)) continue;
      expect({ key, value: total.get(key) }).toEqual({ key, value });
      compared++;
    }
    expect(compared).toBeGreaterThan(50);
    expect(total.get('edgeproxy_connections_total{service="web"}')).toBe(7 + 11);
    expect(total.get('edgeproxy_origin_errors_total{service="web",class="timeout"}')).toBe(3);
  });

  test("shared state is taken once: kernel counters, bindings, sockets; bucket bounds are not added", () => {
    const [a, b] = [sampleStatus(), secondWorker()];
    const t = totalStatus([a, b]);
    expect(t.services[0]!.kernel).toEqual(a.services[0]!.kernel);
    expect(t.services[0]!.sockets).toEqual(a.services[0]!.sockets);
    expect(t.services[0]!.bindings).toEqual(a.services[0]!.bindings);
    expect(t.services[0]!.connections!.duration.buckets.map((x) => x.le)).toEqual(a.services[0]!.connections!.duration.buckets.map((x) => x.le));
    expect(t.capacity).toEqual({ max: 19900, active: 7, refused: 6, accepting: true, left: 4, rejoined: 3 });
    // An endpoint is up when it is in some worker; weights are config, not counts.
    expect(t.services[0]!.origins![0]!.endpoints[0]!.up).toBe(true);
    expect(t.services[0]!.origins![1]!.weight).toBe(3);
    expect(totalStatus([a])).toBe(a);
  });

  test("sni routing figures add up per route, the routes' names taken once", () => {
    const worker = (n: number): StatusSnapshot => {
      const s = sampleStatus();
      const routes = [new SniRouteStats("1", "a.example"), new SniRouteStats("default", "")];
      routes[0]!.connections = n;
      routes[0]!.bytesFromClients = 100 * n;
      const sni = new SniStats(routes);
      sni.parseErrors.timeout = n;
      sni.unmatched.no_sni = 1;
      return { ...s, services: s.services.map((svc, i) => (i === 0 ? { ...svc, sni: sni.snapshot() } : svc)) };
    };
    const t = totalStatus([worker(2), worker(3)]).services[0]!.sni!;
    expect(t.routes[0]).toEqual({ route: "1", sni: "a.example", connections: 5, bytesFromClients: 500, bytesFromOrigins: 0 });
    expect(t.routes[1]!.route).toBe("default");
    expect([t.parseErrors.timeout, t.unmatched.no_sni, t.noRoute]).toEqual([5, 2, 0]);
  });

  test("addFigures: records key by key, missing keys kept, non-numbers from the first", () => {
    expect(addFigures({ a: 1, b: { x: 2 }, s: "one" } as Record<string, unknown>, { a: 2, b: { x: 3, y: 1 }, c: 4, s: "two" })).toEqual({ a: 3, b: { x: 5, y: 1 }, c: 4, s: "one" });
  });
});
