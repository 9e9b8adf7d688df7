import { describe, expect, test } from "bun:test";
import { CONNECTIONS, h2Load, STREAMS } from "./h2";
import { ratioTable } from "./report";
import { describeSClient, parseH2load, parseSClient, parseSTime } from "./tls-parse";
import { bestPeerRow, tlsSummary, type TlsSample } from "./tls-run";

// Captured from OpenSSL 3.0.19 and nghttp2 1.52.0 (Debian 12).
const STIME_NEW = `Collecting connection statistics for 2 seconds
${"*".repeat(1207)}

1207 connections in 0.63s; 1915.87 connections/user sec, bytes read 0
1207 connections in 3 real seconds, 0 bytes read per connection
`;
const STIME_REUSE = `starting
${"r".repeat(120)}

1483 connections in 0.37s; 4008.11 connections/user sec, bytes read 6913746
1483 connections in 2 real seconds, 4662 bytes read per connection
`;

describe("parseSTime", () => {
  test("new connections: the count and one * each", () => {
    expect(parseSTime(STIME_NEW)).toEqual({ connections: 1207, fresh: 1207, resumed: 0, bytesRead: 0 });
  });
  test("resumed connections are told apart", () => {
    expect(parseSTime(`*rrr*\n${STIME_REUSE}`)).toMatchObject({ connections: 1483, fresh: 2, resumed: 123, bytesRead: 6913746 });
  });
  test("a failed run says what s_time printed", () => {
    expect(() => parseSTime("Collecting connection statistics for 2 seconds\nconnect:errno=111\n")).toThrow('s_time: no "connections in" line: Collecting connection statistics for 2 seconds\nconnect:errno=111');
    expect(() => parseSTime("")).toThrow("(no output)");
  });
});

const H2LOAD_H2 = `starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 1s of main duration for measurements.
Warm-up started for thread #0.
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2
Process Request Failure:1
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 1.00s, 4000.00 req/s, 269.79KB/s
requests: 4014 total, 4036 started, 4014 done, 4000 succeeded, 14 failed, 14 errored, 0 timeout
status codes: 4000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 269.79KB (276264) total, 187.50KB (192000) headers (space savings 51.02%), 11.72KB (12000) data
                     min         max         mean         sd        +/- sd
time for request:       32us      1.56ms       490us       185us    82.33%
time for connect:     4.08ms      6.01ms      5.07ms       831us    50.00%
time to 1st byte:     6.33ms      7.78ms      7.38ms       698us    75.00%
req/s           :   15353.11    15809.48    15584.67      209.06    50.00%
`;
const H2LOAD_FALLBACK = `starting benchmark...
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
No protocol negotiated. Fallback behaviour may be activated
Server does not support NPN/ALPN. Falling back to HTTP/1.1.
Application protocol: http/1.1
No protocol negotiated. Fallback behaviour may be activated
Server does not support NPN/ALPN. Falling back to HTTP/1.1.

finished in 2.00s, 10723.00 req/s, 1.01MB/s
requests: 21446 total, 21606 started, 21446 done, 21446 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 21446 2xx, 0 3xx, 0 4xx, 0 5xx
`;

describe("parseH2load", () => {
  test("an h2 run: counts, rate, what was negotiated", () => {
    const r = parseH2load(H2LOAD_H2);
    expect(r).toMatchObject({ seconds: 1, rps: 4000, total: 4014, started: 4036, done: 4014, succeeded: 4000, failed: 14, errored: 14, timeout: 0, status2xx: 4000 });
    expect(r).toMatchObject({ protocol: "h2", tls: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", tempKey: "X25519 253 bits" });
  });
  test("a server without ALPN h2: HTTP/1.1 fallback", () => {
    expect(parseH2load(H2LOAD_FALLBACK)).toMatchObject({ protocol: "http/1.1", succeeded: 21446, seconds: 2 });
    expect(parseH2load(H2LOAD_FALLBACK.replace("Application protocol: http/1.1\n", "")).protocol).toBeUndefined();
  });
  test("sub-second durations; no summary is an error", () => {
    expect(parseH2load(H2LOAD_H2.replace("finished in 1.00s", "finished in 500.25ms")).seconds).toBe(0.50025);
    expect(() => parseH2load("starting benchmark...\nNo addresses found\n")).toThrow('h2load: no "finished in"');
  });
});

describe("h2Load", () => {
  test("h2: succeeded requests count; failures up to the streams open at the end are no anomaly", () => {
    expect(h2Load("nginx http ssl", parseH2load(H2LOAD_H2), 2)).toEqual({ units: 4000, seconds: 1, failed: 14 });
  });
  test("no h2: nothing counts, and the anomaly names edgeproxy's checkout", () => {
    const l = h2Load("edgeproxy http+tls", parseH2load(H2LOAD_FALLBACK), 2);
    expect(l.units).toBe(0);
    expect(l.anomaly).toBe("edgeproxy does not negotiate h2 in this checkout (h2load: application protocol http/1.1; 21446 requests succeeded)");
    expect(h2Load("haproxy", parseH2load(H2LOAD_FALLBACK), 2).anomaly).toBe("haproxy did not negotiate h2 (h2load: application protocol http/1.1)");
  });
  test("more failures than open streams, or non-2xx, are anomalies", () => {
    const many = CONNECTIONS * STREAMS + 1;
    const r = parseH2load(H2LOAD_H2.replace("14 failed, 14 errored", `${many} failed, ${many} errored`).replace("4000 2xx", "3990 2xx"));
    expect(h2Load("nginx", r, 2).anomaly).toBe(`10 of 4000 succeeded requests were not 2xx; ${many} requests failed (${many} errored, 0 timed out)`);
  });
});

const SCLIENT = `CONNECTED(00000003)
---
No client certificate CA names sent
Peer signing digest: SHA256
Peer signature type: ECDSA
Server Temp Key: X25519, 253 bits
---
SSL handshake has read 772 bytes and written 414 bytes
---
New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384
Server public key is 256 bit
ALPN protocol: h2
Early data was not sent
`;

describe("parseSClient", () => {
  test("version, cipher, key exchange, signature, ALPN", () => {
    const r = parseSClient(SCLIENT);
    expect(r).toEqual({ version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", tempKey: "X25519, 253 bits", signature: "ECDSA", alpn: "h2" });
    expect(describeSClient(r)).toBe("TLSv1.3, TLS_AES_256_GCM_SHA384, X25519, ECDSA, ALPN h2");
    expect(describeSClient(parseSClient(SCLIENT.replace("ALPN protocol: h2", "No ALPN negotiated")))).toBe("TLSv1.3, TLS_AES_256_GCM_SHA384, X25519, ECDSA, no ALPN");
  });
  test("no handshake: the error lines", () => {
    expect(() => parseSClient("40C7:error:8000006F:system library:BIO_connect:Connection refused\nconnect:errno=111\n")).toThrow("s_client: no handshake: 40C7:error:8000006F:system library:BIO_connect:Connection refused; connect:errno=111");
  });
});

describe("TLS scenarios' ratios", () => {
  const sample = (peer: string, run: number, coreUs: number, rate: number): TlsSample => ({ peer, run, coreUs, rate, procUs: coreUs, machineUs: coreUs, units: 100, seconds: 1, failed: 0 });
  const sums = tlsSummary([
    sample("edgeproxy http+tls", 1, 300, 900), sample("edgeproxy http+tls", 2, 200, 1100), sample("edgeproxy http+tls", 3, 250, 1000),
    sample("haproxy (mode http, ssl)", 1, 180, 1200), sample("nginx http ssl", 1, 150, 1150),
  ]);
  test("medians per peer; the best peer is the lowest CPU, the highest rate", () => {
    expect(sums[0]).toMatchObject({ peer: "edgeproxy http+tls", coreUs: 250, rate: 1000, runs: 3, units: 300 });
    expect(bestPeerRow("TLS", "CPU", "µs", "lower", sums, "coreUs")).toEqual({ scenario: "TLS", metric: "CPU", unit: "µs", better: "lower", edgeproxy: 250, best: { peer: "nginx http ssl", value: 150 } });
    expect(bestPeerRow("TLS", "rate", "/s", "higher", sums, "rate")?.best).toEqual({ peer: "haproxy (mode http, ssl)", value: 1200 });
  });
  test("edgeproxy unmeasured (no h2): the row stays, with no ratio and no target", () => {
    // sideBySide gives a run that measured nothing NaN for both, not a rate of 0.
    const none = tlsSummary([sample("edgeproxy http+tls", 1, NaN, NaN), sample("nginx http ssl", 1, 50, 20000)]);
    expect(ratioTable([bestPeerRow("HTTP/2 over TLS", "requests/s", "/s", "higher", none, "rate")!])).toContain("| – | nginx http ssl: 20,000 /s | – |");
    const row = bestPeerRow("HTTP/2 over TLS", "CPU µs/request on the proxy core", "µs", "lower", none, "coreUs")!;
    expect(ratioTable([row])).toContain("| HTTP/2 over TLS | CPU µs/request on the proxy core (lower is better) | – | nginx http ssl: 50.0 µs | – | – | – |");
    expect(bestPeerRow("x", "y", "µs", "lower", tlsSummary([sample("nginx", 1, 5, 5)]), "coreUs")).toBeUndefined();
  });
});
