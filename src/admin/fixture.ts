import { ServiceStats } from "../proxy/stats";
import type { StatusSnapshot } from "./backend";

/** A status snapshot for the admin tests: one proxied service, one external, u64-sized counters. */
export function sampleStatus(): StatusSnapshot {
  const stats = new ServiceStats();
  stats.connectionsTotal = 7;
  stats.connectionsActive = 2;
  stats.bytesFromClients = 1234;
  stats.bytesFromOrigins = 98765;
  stats.clientResets = 1;
  stats.idleTimeouts = 3;
  stats.proxyHeaderError("malformed");
  stats.proxyHeaderError("malformed");
  stats.localResourceReset("epoll");
  for (let i = 0; i < 4; i++) stats.tlsHandshakeError("failed");
  stats.deadlineExpired("tls_handshake");
  stats.originError("refused");
  stats.originError("refused");
  stats.originError("weird");
  for (const s of [0.001, 0.005, 0.3, 0.3, 7200]) stats.observe(s);
  return {
    version: "1.2.3-test",
    pid: 4242,
    startedAt: 1_700_000_000,
    pinPath: "/sys/fs/bpf/edgeproxy/4026531840",
    unmatchedLookups: 9_007_199_254_740_993n, // 2^53 + 1: a double would round it
    capacity: { max: 9950, active: 2, refused: 5, accepting: true, left: 3, rejoined: 3 },
    services: [
      {
        name: "web",
        id: 1,
        mode: "tcp",
        engine: "epoll",
        origin: "127.0.0.1:9000",
        bindings: [{ protocol: "tcp", prefix: "192.0.2.0/24", ports: "80" }],
        sockets: [{ protocol: "tcp", family: 4, pid: 4242, fd: 7, cookie: 8193n }],
        kernel: { lookups: 18_446_744_073_709_551_615n, steered: 100n, missingSocket: 1n, assignError: 2n, denied: 3n, redirected: 4n, full: 5n, migrated: 6n, migratedUnselected: 0n, secondTier: 7n, limited: { connections: 4n, rate: 5n } },
        connections: stats.snapshot(),
        sourceLimited: { connections: 6, rate: 7 },
        origins: [
          {
            origin: "127.0.0.1:9000",
            addresses: ["127.0.0.1"],
            weight: 1,
            healthy: false,
            active: 2,
            resolveFailures: 0,
            endpoints: [{ address: "127.0.0.1", up: false, healthy: true, ejectedUntil: 1_700_000_030_000, ejections: 4, panics: 7, portStatesEvicted: 0, active: 2 }],
          },
          {
            origin: "origin.test:9000 weight=3",
            addresses: ["10.0.0.1", "10.0.0.2"],
            weight: 3,
            healthy: true,
            active: 0,
            resolveFailures: 1,
            endpoints: [
              { address: "10.0.0.1", up: true, healthy: true, ejections: 0, panics: 0, portStatesEvicted: 0, active: 0, lastCheck: "pass: connected" },
              { address: "10.0.0.2", up: false, healthy: false, ejections: 0, panics: 0, portStatesEvicted: 0, active: 0, lastCheck: "fail: ECONNREFUSED" },
            ],
          },
        ],
      },
      {
        name: "ext",
        id: 2,
        bindings: [{ protocol: "udp", prefix: "198.51.100.7/32", ports: "5000-5999" }],
        sockets: [{ protocol: "udp", family: 6, pid: 0, fd: 0, cookie: 8194n }],
        kernel: { lookups: 10n, steered: 9n, missingSocket: 1n, assignError: 0n, denied: 0n, redirected: 0n, full: 0n, migrated: 0n, migratedUnselected: 0n, secondTier: 0n },
      },
    ],
  };
}
