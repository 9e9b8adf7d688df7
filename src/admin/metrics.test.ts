import { expect, test } from "bun:test";
import parse, { type ParsedFamily } from "parse-prometheus-text-format";
import type { StatusSnapshot } from "./backend";
import { sampleStatus } from "./fixture";
import { renderMetrics } from "./metrics";
import { SniRouteStats, SniStats } from "../proxy/sni/stats";

function families(text: string): Map<string, ParsedFamily> {
  return new Map(parse(text).map((f) => [f.name, f]));
}

// The value of the one sample of `name` whose labels are exactly `labels`.
function value(fams: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): string {
  const fam = fams.get(name);
  if (!fam) throw new Error(`no family ${name}`);
  const hits = fam.metrics.filter((m) => Bun.deepEquals(m.labels ?? {}, labels));
  expect(hits).toHaveLength(1);
  return hits[0]!.value!;
}

test("every family parses, is typed and has help; counters end in _total", () => {
  const text = renderMetrics(sampleStatus());
  const fams = parse(text);
  expect(fams.map((f) => f.name).sort()).toEqual(
    [
      "build_info",
      "bytes_total",
      "client_resets_total",
      "connection_cap_accepting",
      "connection_cap_active",
      "connection_cap_max",
      "connection_cap_refused_total",
      "connection_cap_steering_total",
      "connection_duration_seconds",
      "connections_active",
      "connections_total",
      "deadline_expired_total",
      "http2_sessions_closed_total",
      "http2_sessions_total",
      "http2_stream_resets_total",
      "http2_streams_total",
      "http_origin_connections_total",
      "http_requests_refused_total",
      "http_responses_total",
      "idle_timeouts_total",
      "kernel_cap_redirected_total",
      "kernel_drops_total",
      "kernel_lookups_total",
      "kernel_migrations_total",
      "kernel_source_limited_total",
      "kernel_steered_total",
      "kernel_unmatched_lookups_total",
      "local_resource_resets_total",
      "origin_active",
      "origin_ejections_total",
      "origin_errors_total",
      "origin_panic_total",
      "origin_port_state_evictions_total",
      "origin_resolve_failures_total",
      "origin_tls_handshake_errors_total",
      "origin_up",
      "process_start_time_seconds",
      "proxy_header_errors_total",
      "service_engine",
      "source_limited_total",
      "tls_certificate_expiry_seconds",
      "tls_certificate_reloads_total",
      "tls_handshake_errors_total",
      "tls_handshakes_total",
      "udp_bytes_total",
      "udp_datagrams_total",
      "udp_drops_total",
      "udp_flows_active",
      "udp_flows_closed_total",
      "udp_flows_total",
    ].map((n) => `edgeproxy_${n}`),
  );
  for (const f of fams) {
    expect(f.help).not.toBe("");
    expect(["COUNTER", "GAUGE", "HISTOGRAM"]).toContain(f.type);
    if (f.type === "COUNTER") expect(f.name).toEndWith("_total");
  }
  expect(text.endsWith("\n")).toBe(true);
});

test("every sample line is well formed", () => {
  // The parser is lenient about names and values; check them line by line as Prometheus would.
  const label = String.raw`[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"`;
  const line = new RegExp(String.raw`^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{${label}(?:,${label})*\})? (\S+)$`);
  for (const l of renderMetrics(sampleStatus()).trimEnd().split("\n")) {
    if (l.startsWith("# ")) {
      expect(l).toMatch(/^# (HELP|TYPE) edgeproxy_[a-z0-9_]+ \S/);
      continue;
    }
    const m = line.exec(l);
    expect(m, l).not.toBeNull();
    expect(Number.isNaN(Number(m![1]!.replace("Inf", "Infinity")))).toBe(false);
  }
});

test("values match the snapshot, bigints to the last digit", () => {
  const fams = families(renderMetrics(sampleStatus()));
  expect(value(fams, "edgeproxy_build_info", { version: "1.2.3-test" })).toBe("1");
  expect(value(fams, "edgeproxy_process_start_time_seconds")).toBe("1700000000");
  // Which data plane serves the tcp service; none for the service this process does not run.
  expect(value(fams, "edgeproxy_service_engine", { service: "web", engine: "epoll" })).toBe("1");
  expect(fams.get("edgeproxy_service_engine")!.metrics).toHaveLength(1);
  expect(value(fams, "edgeproxy_kernel_lookups_total", { service: "web" })).toBe("18446744073709551615");
  expect(value(fams, "edgeproxy_kernel_lookups_total", { service: "ext" })).toBe("10");
  expect(value(fams, "edgeproxy_kernel_steered_total", { service: "web" })).toBe("100");
  expect(value(fams, "edgeproxy_kernel_drops_total", { service: "web", reason: "missing_socket" })).toBe("1");
  expect(value(fams, "edgeproxy_kernel_drops_total", { service: "web", reason: "assign_error" })).toBe("2");
  expect(value(fams, "edgeproxy_kernel_drops_total", { service: "web", reason: "denied" })).toBe("3");
  expect(value(fams, "edgeproxy_kernel_drops_total", { service: "web", reason: "full" })).toBe("5");
  expect(value(fams, "edgeproxy_kernel_cap_redirected_total", { service: "web", tier: "1" })).toBe("4");
  expect(value(fams, "edgeproxy_kernel_cap_redirected_total", { service: "web", tier: "2" })).toBe("7");
  expect(value(fams, "edgeproxy_kernel_migrations_total", { service: "web", to: "room" })).toBe("6");
  expect(value(fams, "edgeproxy_kernel_unmatched_lookups_total")).toBe("9007199254740993");
  expect(value(fams, "edgeproxy_connections_active", { service: "web" })).toBe("2");
  expect(value(fams, "edgeproxy_connections_total", { service: "web" })).toBe("7");
  expect(value(fams, "edgeproxy_bytes_total", { service: "web", direction: "client_to_origin" })).toBe("1234");
  expect(value(fams, "edgeproxy_bytes_total", { service: "web", direction: "origin_to_client" })).toBe("98765");
  expect(value(fams, "edgeproxy_origin_errors_total", { service: "web", class: "refused" })).toBe("2");
  expect(value(fams, "edgeproxy_origin_errors_total", { service: "web", class: "timeout" })).toBe("0");
  expect(value(fams, "edgeproxy_origin_errors_total", { service: "web", class: "weird" })).toBe("1");
  expect(value(fams, "edgeproxy_origin_errors_total", { service: "web", class: "no_origin" })).toBe("0");
  expect(value(fams, "edgeproxy_origin_up", { service: "web", origin: "127.0.0.1:9000", address: "127.0.0.1" })).toBe("0");
  expect(value(fams, "edgeproxy_origin_up", { service: "web", origin: "origin.test:9000 weight=3", address: "10.0.0.1" })).toBe("1");
  expect(value(fams, "edgeproxy_origin_up", { service: "web", origin: "origin.test:9000 weight=3", address: "10.0.0.2" })).toBe("0");
  expect(value(fams, "edgeproxy_origin_active", { service: "web", origin: "127.0.0.1:9000", address: "127.0.0.1" })).toBe("2");
  expect(value(fams, "edgeproxy_origin_ejections_total", { service: "web", origin: "127.0.0.1:9000", address: "127.0.0.1" })).toBe("4");
  expect(value(fams, "edgeproxy_origin_panic_total", { service: "web" })).toBe("7");
  expect(value(fams, "edgeproxy_origin_resolve_failures_total", { service: "web", origin: "origin.test:9000 weight=3" })).toBe("1");
  expect(value(fams, "edgeproxy_client_resets_total", { service: "web" })).toBe("1");
  expect(value(fams, "edgeproxy_idle_timeouts_total", { service: "web" })).toBe("3");
  expect(value(fams, "edgeproxy_proxy_header_errors_total", { service: "web", reason: "malformed" })).toBe("2");
  // Every resource is a series from the start (a reset for want of one is rare: an alert wants the 0).
  expect(value(fams, "edgeproxy_local_resource_resets_total", { service: "web", resource: "epoll" })).toBe("1");
  expect(value(fams, "edgeproxy_local_resource_resets_total", { service: "web", resource: "buffers" })).toBe("0");
  expect(value(fams, "edgeproxy_proxy_header_errors_total", { service: "web", reason: "timeout" })).toBe("0");
  expect(value(fams, "edgeproxy_tls_handshake_errors_total", { service: "web", reason: "failed" })).toBe("4");
  expect(value(fams, "edgeproxy_tls_handshake_errors_total", { service: "web", reason: "timeout" })).toBe("0");
  // A tcp service shows its two stages' deadlines (http ones would read 0 forever).
  expect(value(fams, "edgeproxy_deadline_expired_total", { service: "web", stage: "tls_handshake" })).toBe("1");
  expect(value(fams, "edgeproxy_deadline_expired_total", { service: "web", stage: "proxy_header" })).toBe("0");
  expect(fams.get("edgeproxy_deadline_expired_total")!.metrics.map((m) => m.labels!.stage)).toEqual(["proxy_header", "tls_handshake"]);
  expect(value(fams, "edgeproxy_connection_cap_max")).toBe("9950");
  expect(value(fams, "edgeproxy_connection_cap_active")).toBe("2");
  expect(value(fams, "edgeproxy_connection_cap_refused_total")).toBe("5");
  expect(value(fams, "edgeproxy_connection_cap_accepting")).toBe("1");
  expect(value(fams, "edgeproxy_connection_cap_steering_total", { event: "left" })).toBe("3");
});

test("a service without connections gets only kernel series", () => {
  const fams = parse(renderMetrics(sampleStatus()));
  for (const f of fams) {
    const services = new Set(f.metrics.map((m) => m.labels?.service).filter(Boolean));
    if (f.name.startsWith("edgeproxy_kernel_") && f.name !== "edgeproxy_kernel_unmatched_lookups_total") {
      expect([...services].sort()).toEqual(["ext", "web"]);
    } else {
      expect(services.has("ext")).toBe(false);
    }
  }
});

test("the duration histogram: cumulative buckets, +Inf last, sum and count", () => {
  const text = renderMetrics(sampleStatus());
  expect(families(text).get("edgeproxy_connection_duration_seconds")?.type).toBe("HISTOGRAM");
  // parse-prometheus-text-format merges labelled histograms into one and drops their
  // _sum/_count (yunyu/parse-prometheus-text-format#13); read the series untyped instead.
  const fams = families(text.replace(/^# TYPE (edgeproxy_connection_duration_seconds) histogram$/m, "# TYPE $1 untyped"));
  const buckets = fams.get("edgeproxy_connection_duration_seconds_bucket")!.metrics;
  expect(buckets.every((b) => b.labels?.service === "web")).toBe(true);
  const les = buckets.map((b) => b.labels!.le!);
  expect(les.at(-1)).toBe("+Inf");
  expect(les.slice(0, 4)).toEqual(["0.005", "0.01", "0.025", "0.05"]);
  const counts = buckets.map((b) => Number(b.value));
  expect(counts).toEqual([...counts].sort((a, b) => a - b)); // cumulative
  const at = (le: string) => buckets.find((b) => b.labels!.le === le)!.value;
  expect(at("0.005")).toBe("2");
  expect(at("0.25")).toBe("2");
  expect(at("0.5")).toBe("4");
  expect(at("3600")).toBe("4");
  expect(at("+Inf")).toBe("5");
  expect(value(fams, "edgeproxy_connection_duration_seconds_count", { service: "web" })).toBe("5");
  expect(Number(value(fams, "edgeproxy_connection_duration_seconds_sum", { service: "web" }))).toBeCloseTo(7200.606, 9);
});

test("label values and help are escaped", () => {
  const odd = 'a"b\\c\nd';
  const s = sampleStatus();
  const status: StatusSnapshot = { ...s, version: odd, services: [{ ...s.services[0]!, name: odd }] };
  const text = renderMetrics(status);
  expect(text).toContain(String.raw`version="a\"b\\c\nd"`);
  const fams = families(text);
  expect(value(fams, "edgeproxy_build_info", { version: odd })).toBe("1");
  expect(value(fams, "edgeproxy_kernel_steered_total", { service: odd })).toBe("100");
});

test("a histogram snapshot without a +Inf bucket gets one", () => {
  const s = sampleStatus();
  const web = s.services[0]!;
  const duration = { buckets: [{ le: 1, count: 1 }], sum: 3, count: 2 };
  const text = renderMetrics({ ...s, services: [{ ...web, connections: { ...web.connections!, duration } }] });
  expect(text).toContain('edgeproxy_connection_duration_seconds_bucket{service="web",le="1"} 1\n');
  expect(text).toContain('edgeproxy_connection_duration_seconds_bucket{service="web",le="+Inf"} 2\n');
});

test("per-client limits: the kernel's refusals by limit and as a drop reason; refusals at accept per service", () => {
  const fams = families(renderMetrics(sampleStatus()));
  expect(value(fams, "edgeproxy_kernel_source_limited_total", { service: "web", limit: "connections" })).toBe("4");
  expect(value(fams, "edgeproxy_kernel_source_limited_total", { service: "web", limit: "rate" })).toBe("5");
  expect(value(fams, "edgeproxy_kernel_drops_total", { service: "web", reason: "limited" })).toBe("9");
  // A snapshot without the figure (a pinned program from before the limits): zero.
  expect(value(fams, "edgeproxy_kernel_drops_total", { service: "ext", reason: "limited" })).toBe("0");
  expect(value(fams, "edgeproxy_source_limited_total", { service: "web", limit: "connections" })).toBe("6");
  expect(value(fams, "edgeproxy_source_limited_total", { service: "web", limit: "rate" })).toBe("7");
  expect(fams.get("edgeproxy_source_limited_total")!.metrics).toHaveLength(2);
});

test("sni routes: per route (and default) connections and bytes, unmatched by why, parse errors by reason, no_route", () => {
  const base = sampleStatus();
  const routes = [new SniRouteStats("1", "a.example,*.b.example"), new SniRouteStats("default", "")];
  routes[0]!.connections = 3;
  routes[0]!.bytesFromClients = 517;
  routes[0]!.bytesFromOrigins = 4000;
  routes[1]!.connections = 2;
  const sni = new SniStats(routes);
  sni.unmatched.unknown_name = 1;
  sni.unmatched.not_tls = 1;
  sni.parseErrors.timeout = 4;
  sni.parseErrors.too_long = 1;
  sni.noRoute = 6;
  const status: StatusSnapshot = { ...base, services: base.services.map((s, i) => (i === 0 ? { ...s, sni: sni.snapshot() } : s)) };
  const text = renderMetrics(status);
  const fams = families(text);
  expect(value(fams, "edgeproxy_sni_route_connections_total", { service: "web", route: "1", sni: "a.example,*.b.example" })).toBe("3");
  // An empty label is no label (exposition format): the default route has route only.
  expect(text).toContain('edgeproxy_sni_route_connections_total{service="web",route="default",sni=""} 2');
  expect(value(fams, "edgeproxy_sni_route_bytes_total", { service: "web", route: "1", sni: "a.example,*.b.example", direction: "client_to_origin" })).toBe("517");
  expect(value(fams, "edgeproxy_sni_route_bytes_total", { service: "web", route: "1", sni: "a.example,*.b.example", direction: "origin_to_client" })).toBe("4000");
  expect(value(fams, "edgeproxy_sni_unmatched_total", { service: "web", reason: "unknown_name" })).toBe("1");
  expect(value(fams, "edgeproxy_sni_unmatched_total", { service: "web", reason: "no_sni" })).toBe("0");
  expect(value(fams, "edgeproxy_sni_unmatched_total", { service: "web", reason: "not_tls" })).toBe("1");
  expect(value(fams, "edgeproxy_sni_no_route_total", { service: "web" })).toBe("6");
  expect(value(fams, "edgeproxy_sni_parse_errors_total", { service: "web", reason: "timeout" })).toBe("4");
  expect(value(fams, "edgeproxy_sni_parse_errors_total", { service: "web", reason: "too_long" })).toBe("1");
  // Every reason from the start, at 0: rate() has a series before the first refusal.
  expect(fams.get("edgeproxy_sni_parse_errors_total")!.metrics.map((m) => m.labels!.reason)).toEqual(["too_long", "truncated", "bad_record", "not_client_hello", "malformed", "bad_server_name", "timeout"]);
  // Services without sni routes have no such series.
  expect(renderMetrics(base)).not.toContain("edgeproxy_sni_");
});
