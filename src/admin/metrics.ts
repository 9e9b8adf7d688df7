import { UDP_DROP_REASONS, type DatagramStats } from "../proxy/udp/stats";
import type { OriginStatus } from "../origin/pool";
import { H2_CLOSE_REASONS, REFUSAL_REASONS, type HttpStatsSnapshot } from "../proxy/http/stats";
import { DEADLINE_STAGES } from "../config/deadlines";
import { LOCAL_RESOURCES } from "../system/lack";
import type { ConnectionStats, ServiceSnapshot, SniSnapshot, StatusSnapshot } from "./backend";
import { HELLO_ERRORS } from "../proxy/sni/hello";
import { UNMATCHED } from "../proxy/sni/stats";

/** The Content-Type of renderMetrics' output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Value = number | bigint;
type Labels = Readonly<Record<string, string>>;
type Kind = "counter" | "gauge" | "histogram";

// Classes every proxied service reports, even at zero, so rate() has a series from the start.
// no_origin: the pool had no endpoint at all (a name resolving to nothing); down or ejected ones are tried in panic.
// tls: a handshake with the origin refused (origin_tls; by reason in origin_tls_handshake_errors_total).
const ORIGIN_ERROR_CLASSES = ["refused", "timeout", "reset", "unreachable", "tls", "other", "no_origin"];
const PROXY_HEADER_ERRORS = ["signature", "malformed", "too_long", "truncated", "timeout"];
const TLS_HANDSHAKE_ERRORS = ["failed", "timeout"];
const ORIGIN_TLS_ERRORS = ["verify", "name", "protocol", "timeout"];
const SNI_MATCHES = ["exact", "wildcard", "default", "none"];
const RELOAD_RESULTS = ["ok", "failed"];

/** Render a status snapshot in the Prometheus text exposition format 0.0.4. */
export function renderMetrics(s: StatusSnapshot): string {
  const out: string[] = [];
  const family = (name: string, kind: Kind, help: string) => {
    out.push(`# HELP edgeproxy_${name} ${escapeHelp(help)}`, `# TYPE edgeproxy_${name} ${kind}`);
  };
  const sample = (name: string, labels: Labels, value: Value) => {
    out.push(`edgeproxy_${name}${formatLabels(labels)} ${formatValue(value)}`);
  };
  const perService = <S extends ServiceSnapshot>(
    services: readonly S[],
    name: string,
    kind: Kind,
    help: string,
    each: (s: S, emit: (labels: Labels, v: Value) => void) => void,
  ) => {
    family(name, kind, help);
    for (const svc of services) each(svc, (labels, v) => sample(name, { service: svc.name, ...labels }, v));
  };

  family("build_info", "gauge", "Always 1; the version label says which edgeproxy is running.");
  sample("build_info", { version: s.version }, 1);
  family("process_start_time_seconds", "gauge", "When this process started, in Unix seconds.");
  sample("process_start_time_seconds", {}, s.startedAt);

  const all = s.services;
  // Which data plane serves each tcp and http service (engine = "auto" picks per service; config/service.ts completeEngine).
  perService(all.filter((svc) => svc.engine), "service_engine", "gauge", "Always 1 for a tcp or http service this process runs; the engine label says which data plane serves it: epoll (raw sockets, src/engine/) or bun (Bun's sockets).", (svc, emit) =>
    emit({ engine: svc.engine! }, 1),
  );
  perService(all, "kernel_lookups_total", "counter", "Socket lookups the dispatcher matched to the service.", (svc, emit) =>
    emit({}, svc.kernel.lookups),
  );
  perService(all, "kernel_steered_total", "counter", "Lookups steered to the service's socket.", (svc, emit) =>
    emit({}, svc.kernel.steered),
  );
  perService(all, "kernel_drops_total", "counter", "Lookups of the service that were not steered, by reason.", (svc, emit) => {
    emit({ reason: "missing_socket" }, svc.kernel.missingSocket);
    emit({ reason: "assign_error" }, svc.kernel.assignError);
    emit({ reason: "denied" }, svc.kernel.denied);
    emit({ reason: "limited" }, (svc.kernel.limited?.connections ?? 0n) + (svc.kernel.limited?.rate ?? 0n));
    emit({ reason: "full" }, svc.kernel.full);
  });
  perService(all, "kernel_source_limited_total", "counter", "SYNs refused at socket lookup by a per-client limit (source_connections, source_rate), by limit.", (svc, emit) => {
    emit({ limit: "connections" }, svc.kernel.limited?.connections ?? 0n);
    emit({ limit: "rate" }, svc.kernel.limited?.rate ?? 0n);
  });
  perService(
    all,
    "kernel_cap_redirected_total",
    "counter",
    "New connections the reuseport selection did not give to the hashed worker's first tier, by tier: 1, the hashed worker was past its soft mark (or restarting) and another below its soft mark took it; 2, no worker was below its soft mark and one inside its headroom (soft mark to cap) took it.",
    (svc, emit) => {
      emit({ tier: "1" }, svc.kernel.redirected);
      emit({ tier: "2" }, svc.kernel.secondTier);
    },
  );
  perService(all, "kernel_migrations_total", "counter", "Connections queued on a closing listener moved to another worker, by where: one with room, or the kernel's hash (none had room).", (svc, emit) => {
    emit({ to: "room" }, svc.kernel.migrated);
    emit({ to: "hash" }, svc.kernel.migratedUnselected);
  });
  family("kernel_unmatched_lookups_total", "counter", "Socket lookups that matched no binding.");
  sample("kernel_unmatched_lookups_total", {}, s.unmatchedLookups);

  // External registered sockets have no data plane here: kernel series only.
  const proxied = all.filter((svc): svc is ServiceSnapshot & { connections: ConnectionStats } => !!svc.connections);
  perService(proxied, "connections_active", "gauge", "Proxied connections open now.", (svc, emit) =>
    emit({}, svc.connections.active),
  );
  perService(proxied, "connections_total", "counter", "Proxied connections accepted.", (svc, emit) =>
    emit({}, svc.connections.total),
  );
  perService(proxied, "bytes_total", "counter", "Bytes relayed, by direction.", (svc, emit) => {
    emit({ direction: "client_to_origin" }, svc.connections.bytesFromClients);
    emit({ direction: "origin_to_client" }, svc.connections.bytesFromOrigins);
  });
  family("connection_duration_seconds", "histogram", "How long proxied connections lasted, from accept to close.");
  for (const svc of proxied) histogram(svc.name, svc.connections.duration, sample);
  perService(proxied, "origin_errors_total", "counter", "Failures talking to the origin, by class.", (svc, emit) => {
    const errors = svc.connections.originErrors;
    const classes = [...new Set([...ORIGIN_ERROR_CLASSES, ...Object.keys(errors).sort()])];
    for (const c of classes) emit({ class: c }, errors[c] ?? 0);
  });
  perService(proxied, "client_resets_total", "counter", "Connections the client reset.", (svc, emit) =>
    emit({}, svc.connections.clientResets),
  );
  perService(proxied, "idle_timeouts_total", "counter", "Connections closed for being idle too long.", (svc, emit) =>
    emit({}, svc.connections.idleTimeouts),
  );

  perService(proxied, "proxy_header_errors_total", "counter", "Inbound PROXY headers refused (connection reset), by reason.", (svc, emit) => {
    const errors = svc.connections.proxyHeaderErrors;
    for (const r of [...new Set([...PROXY_HEADER_ERRORS, ...Object.keys(errors).sort()])]) emit({ reason: r }, errors[r] ?? 0);
  });
  perService(proxied, "local_resource_resets_total", "counter", "Connections reset (or http requests answered 502) because this host lacked a resource for them, by resource: buffers (the tcp engine's buffer pool was empty when a PROXY header had to be held), epoll (the kernel refused to watch the socket: fs.epoll.max_user_watches, or memory), descriptors (EMFILE, ENFILE), memory (ENOMEM, ENOBUFS), ports (no free local port towards the origin: EADDRNOTAVAIL, net.ipv4.ip_local_port_range). None counts against the origin.", (svc, emit) => {
    const resets = svc.connections.localResourceResets ?? {};
    for (const r of LOCAL_RESOURCES) emit({ resource: r }, resets[r] ?? 0);
  });
  perService(proxied, "tls_handshake_errors_total", "counter", "TLS handshakes that failed or did not finish in time (connection reset), by reason.", (svc, emit) => {
    const errors = svc.connections.tlsHandshakeErrors;
    for (const r of [...new Set([...TLS_HANDSHAKE_ERRORS, ...Object.keys(errors).sort()])]) emit({ reason: r }, errors[r] ?? 0);
  });

  perService(proxied, "origin_tls_handshake_errors_total", "counter", "TLS handshakes with origins (origin_tls) that failed, by reason: verify (certificate chain), name (certificate names), protocol, timeout (connect_timeout). Also counted as origin errors, class tls (timeout: class timeout).", (svc, emit) => {
    const errors = svc.connections.originTlsErrors ?? {};
    for (const r of [...new Set([...ORIGIN_TLS_ERRORS, ...Object.keys(errors).sort()])]) emit({ reason: r }, errors[r] ?? 0);
  });
  const terminating = proxied.filter((svc) => svc.connections!.tlsCertificates?.length);
  perService(terminating, "tls_handshakes_total", "counter", "TLS handshakes completed, by how the client's SNI matched a certificate: exact, wildcard, default (an unknown name: the first certificate), none (no SNI).", (svc, emit) => {
    const n = svc.connections!.tlsHandshakes ?? {};
    for (const m of SNI_MATCHES) emit({ sni: m }, n[m] ?? 0);
  });
  perService(terminating, "tls_certificate_reloads_total", "counter", "Certificate reloads (changed files, or reload), by result; failed: the previous certificate is still served.", (svc, emit) => {
    const n = svc.connections!.tlsCertificateReloads ?? {};
    for (const r of RELOAD_RESULTS) emit({ result: r }, n[r] ?? 0);
  });
  perService(terminating, "tls_certificate_expiry_seconds", "gauge", "When each served certificate expires (its notAfter), in Unix seconds; name: its first DNS name, file: its certificate file.", (svc, emit) => {
    for (const c of svc.connections!.tlsCertificates ?? []) emit({ name: c.name, file: c.file }, c.notAfter);
  });

  perService(proxied, "deadline_expired_total", "counter", "Connections closed because a client stage did not finish in time, by stage.", (svc, emit) => {
    const expired = svc.connections.deadlinesExpired;
    const stages = DEADLINE_STAGES[svc.mode === "http" ? "http" : "tcp"];
    for (const st of [...new Set([...stages, ...Object.keys(expired).sort()])]) emit({ stage: st }, expired[st] ?? 0);
  });

  // tcp services with sni routes (proxy/sni/): route "default" is the service's own origins.
  const sni = all.filter((svc): svc is ServiceSnapshot & { sni: SniSnapshot } => !!svc.sni);
  // Only where some service has sni routes: a family without samples is noise to every other instance.
  if (sni.length) {
    perService(sni, "sni_route_connections_total", "counter", "Connections a tcp service routed by the TLS server name in their ClientHello, by route (its number in the config, or default: the service's own origins) and the route's names.", (svc, emit) => {
      for (const r of svc.sni.routes) emit({ route: r.route, sni: r.sni }, r.connections);
    });
    perService(sni, "sni_route_bytes_total", "counter", "Bytes relayed on connections routed by TLS server name, by route and direction (the ClientHello included).", (svc, emit) => {
      for (const r of svc.sni.routes) {
        emit({ route: r.route, sni: r.sni, direction: "client_to_origin" }, r.bytesFromClients);
        emit({ route: r.route, sni: r.sni, direction: "origin_to_client" }, r.bytesFromOrigins);
      }
    });
    perService(sni, "sni_unmatched_total", "counter", "Connections no sni route took, sent to the service's own origins, by why: no_sni (no server_name), unknown_name, not_tls (the first bytes are not a TLS handshake record).", (svc, emit) => {
      for (const r of UNMATCHED) emit({ reason: r }, svc.sni.unmatched[r] ?? 0);
    });
    perService(sni, "sni_no_route_total", "counter", "Connections no sni route took, reset because the service has no origins of its own.", (svc, emit) => emit({}, svc.sni.noRoute));
    perService(sni, "sni_parse_errors_total", "counter", "ClientHellos refused on services with sni routes (connection reset), by reason: too_long (more than 16 KiB + 5 bytes), truncated (client FIN), bad_record, not_client_hello, malformed, bad_server_name, timeout (handshake_timeout).", (svc, emit) => {
      for (const r of HELLO_ERRORS) emit({ reason: r }, svc.sni.parseErrors[r] ?? 0);
    });
  }

  const limitedHere = all.filter((svc) => svc.sourceLimited);
  perService(limitedHere, "source_limited_total", "counter", "Connections (udp: flows) refused after accept by a per-client limit, by limit: clients a PROXY header names, SYNs that raced each other past the kernel's check, UDP flows.", (svc, emit) => {
    emit({ limit: "connections" }, svc.sourceLimited!.connections);
    emit({ limit: "rate" }, svc.sourceLimited!.rate);
  });

  // One series per endpoint (an origin's address): a name's addresses come and go with DNS.
  const pooled = all.filter((svc) => svc.origins);
  const perEndpoint = (name: string, kind: Kind, help: string, value: (e: OriginStatus["endpoints"][number]) => number) =>
    perService(pooled, name, kind, help, (svc, emit) => {
      for (const o of svc.origins!) for (const e of o.endpoints) emit({ origin: o.origin, address: e.address }, value(e));
    });
  perEndpoint("origin_up", "gauge", "1 when the origin endpoint takes new connections (active checks pass, not ejected).", (e) => (e.up ? 1 : 0));
  perEndpoint("origin_active", "gauge", "Connections (tcp) open to the origin endpoint now.", (e) => e.active);
  perEndpoint("origin_ejections_total", "counter", "Times a port of the origin endpoint was ejected after consecutive connect failures.", (e) => e.ejections);
  perEndpoint("origin_port_state_evictions_total", "counter", "Ports whose ejection state the origin endpoint forgot because its bounded per-port map was full.", (e) => e.portStatesEvicted);
  perService(pooled, "origin_panic_total", "counter", "Connections (flows, requests) sent to a down or ejected origin endpoint because no endpoint of the pool was eligible (panic).", (svc, emit) =>
    emit({}, svc.origins!.reduce((n, o) => n + o.endpoints.reduce((m, e) => m + e.panics, 0), 0)),
  );
  perService(pooled, "origin_resolve_failures_total", "counter", "Failed re-resolutions of an origin name (its last good addresses stay in use).", (svc, emit) => {
    for (const o of svc.origins!) emit({ origin: o.origin }, o.resolveFailures);
  });

  const udp = all.filter((svc): svc is ServiceSnapshot & { datagrams: DatagramStats } => !!svc.datagrams);
  perService(udp, "udp_flows_active", "gauge", "UDP flows open now.", (svc, emit) => emit({}, svc.datagrams.flowsActive));
  perService(udp, "udp_flows_total", "counter", "UDP flows made.", (svc, emit) => emit({}, svc.datagrams.flowsTotal));
  perService(udp, "udp_flows_closed_total", "counter", "UDP flows ended early or idle, by reason.", (svc, emit) => {
    emit({ reason: "idle" }, svc.datagrams.flowsExpired);
    emit({ reason: "evicted" }, svc.datagrams.flowsEvicted);
  });
  perService(udp, "udp_datagrams_total", "counter", "UDP datagrams relayed, by direction.", (svc, emit) => {
    emit({ direction: "client_to_origin" }, svc.datagrams.datagramsFromClients);
    emit({ direction: "origin_to_client" }, svc.datagrams.datagramsFromOrigins);
  });
  perService(udp, "udp_bytes_total", "counter", "UDP payload bytes relayed, by direction (headers excluded).", (svc, emit) => {
    emit({ direction: "client_to_origin" }, svc.datagrams.bytesFromClients);
    emit({ direction: "origin_to_client" }, svc.datagrams.bytesFromOrigins);
  });
  perService(udp, "udp_drops_total", "counter", "UDP datagrams dropped, by reason.", (svc, emit) => {
    for (const r of UDP_DROP_REASONS) emit({ reason: r }, svc.datagrams.drops[r]);
  });

  const http = all.filter((svc): svc is ServiceSnapshot & { http: HttpStatsSnapshot } => !!svc.http);
  perService(http, "http_responses_total", "counter", "HTTP responses sent to clients (ours included), by status class.", (svc, emit) => {
    for (const [cls, n] of Object.entries(svc.http.responses)) emit({ class: cls }, n);
  });
  perService(http, "http_requests_refused_total", "counter", "Requests refused by strict HTTP/1.1 framing before reaching an origin, by reason.", (svc, emit) => {
    for (const r of REFUSAL_REASONS) emit({ reason: r }, svc.http.refused?.[r] ?? 0);
  });
  perService(http, "http_origin_connections_total", "counter", "Requests sent to origins, by how the origin connection was got.", (svc, emit) => {
    emit({ how: "opened" }, svc.http.originConnectionsOpened);
    emit({ how: "reused" }, svc.http.originConnectionsReused);
  });
  perService(http, "http2_sessions_total", "counter", "HTTP/2 sessions (TLS connections whose ALPN chose h2).", (svc, emit) => emit({}, svc.http.h2?.sessions ?? 0));
  perService(http, "http2_streams_total", "counter", "HTTP/2 streams taken as requests.", (svc, emit) => emit({}, svc.http.h2?.streams ?? 0));
  perService(http, "http2_stream_resets_total", "counter", "HTTP/2 streams the client reset before their response was complete (what the rapid-reset budget counts).", (svc, emit) =>
    emit({}, svc.http.h2?.streamResets ?? 0),
  );
  perService(http, "http2_sessions_closed_total", "counter", "HTTP/2 sessions ended for cause, by reason: rapid_reset (GOAWAY ENHANCE_YOUR_CALM), flood, protocol (incl. header lists over the limit), settings_timeout, idle.", (svc, emit) => {
    for (const r of H2_CLOSE_REASONS) emit({ reason: r }, svc.http.h2?.closed[r] ?? 0);
  });
  family("connection_cap_max", "gauge", "The cap on open proxied connections for the process.");
  sample("connection_cap_max", {}, s.capacity.max);
  family("connection_cap_active", "gauge", "Open proxied connections counted against the cap.");
  sample("connection_cap_active", {}, s.capacity.active);
  family("connection_cap_refused_total", "counter", "Connections refused because the cap was reached.");
  sample("connection_cap_refused_total", {}, s.capacity.refused);
  family("connection_cap_accepting", "gauge", "1 while the process is below its cap and offered for new connections; 0 while at its cap (out of the member selection).");
  sample("connection_cap_accepting", {}, s.capacity.accepting ? 1 : 0);
  family("connection_cap_steering_total", "counter", "Times the process left the member selection at its cap (left) and rejoined it below the resume mark (rejoined).");
  sample("connection_cap_steering_total", { event: "left" }, s.capacity.left);
  sample("connection_cap_steering_total", { event: "rejoined" }, s.capacity.rejoined);

  if (s.accessLog) {
    const a = s.accessLog;
    family("access_log_lines_total", "counter", "Access log lines queued for writing.");
    sample("access_log_lines_total", {}, a.lines);
    family("access_log_dropped_total", "counter", "Access log lines dropped: the log's buffer or ring (access_log_buffer) was full (the disk or pipe did not keep up), a line was longer than the ring takes, or the file could not be opened.");
    sample("access_log_dropped_total", {}, a.dropped);
    family("access_log_write_errors_total", "counter", "Failed writes (and reopens) of an access log; the lines of a failed write are lost.");
    sample("access_log_write_errors_total", {}, a.writeErrors);
    family("access_log_sampled_out_total", "counter", "Access log lines not written because of access_log_sample.");
    sample("access_log_sampled_out_total", {}, a.sampledOut);
  }

  out.push("");
  return out.join("\n");
}

function histogram(
  service: string,
  d: ConnectionStats["duration"],
  sample: (name: string, labels: Labels, value: Value) => void,
): void {
  const name = "connection_duration_seconds";
  let sawInf = false;
  for (const b of d.buckets) {
    sample(`${name}_bucket`, { service, le: formatValue(b.le) }, b.count);
    sawInf ||= b.le === Infinity;
  }
  // The format requires a +Inf bucket equal to _count; supply it if the snapshot lacks one.
  if (!sawInf) sample(`${name}_bucket`, { service, le: "+Inf" }, d.count);
  sample(`${name}_sum`, { service }, d.sum);
  sample(`${name}_count`, { service }, d.count);
}

function formatLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** Label values escape backslash, double quote and line feed (exposition format 0.0.4). */
export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

/** A sample value as Go's ParseFloat reads it; bigints print every digit. */
export function formatValue(v: Value): string {
  if (typeof v === "bigint") return v.toString();
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}
