import { expect, test } from "bun:test";
import type { ServeConfig, ServiceConfig } from "../config/service";
import { connectionShare, fdBudget } from "./server";

const svc = (mode: "tcp" | "udp") => ({ mode }) as ServiceConfig;
const cfg = (modes: ("tcp" | "udp")[], extra: Partial<ServeConfig> = {}) => ({ services: modes.map(svc), ...extra }) as ServeConfig;
// 20,100 files: 100 in reserve, room for 10,000 pairs of descriptors.
const NOFILE = 20_100;

test("defaults split the open-file limit by the kinds of service configured", () => {
  expect(fdBudget(cfg(["tcp"]), NOFILE)).toEqual({ maxConnections: 10_000, maxFlows: 0 });
  expect(fdBudget(cfg(["udp"]), NOFILE)).toEqual({ maxConnections: 500, maxFlows: 9_500 });
  expect(fdBudget(cfg(["tcp", "udp"]), NOFILE)).toEqual({ maxConnections: 5_000, maxFlows: 5_000 });
});

test("a figure given takes its share first; the other kind gets the rest", () => {
  expect(fdBudget(cfg(["tcp", "udp"], { maxFlows: 8_000 }), NOFILE)).toEqual({ maxConnections: 2_000, maxFlows: 8_000 });
  expect(fdBudget(cfg(["tcp", "udp"], { maxConnections: 9_000 }), NOFILE)).toEqual({ maxConnections: 9_000, maxFlows: 1_000 });
  expect(fdBudget(cfg(["udp"], { maxFlows: 10_000 }), NOFILE)).toEqual({ maxConnections: 0, maxFlows: 10_000 });
});

test("budgets beyond the limit, or that starve a configured kind, are config errors", () => {
  expect(() => fdBudget(cfg(["tcp"], { maxConnections: 10_001 }), NOFILE)).toThrow("--max-connections: 10001 connections and 0 UDP flows need 20102 file descriptors, but the open-file limit is 20100");
  expect(() => fdBudget(cfg(["tcp", "udp"], { maxFlows: 10_000 }), NOFILE)).toThrow("--max-flows: 10000 UDP flows leave no descriptors for the TCP services' connections");
  expect(() => fdBudget(cfg(["tcp", "udp"], { maxConnections: 10_000 }), NOFILE)).toThrow("--max-connections: 10000 connections leave no descriptors for the UDP services' flows");
});

test("--max-connections is the instance's: the workers' shares add up to it exactly", () => {
  for (const [max, workers] of [[40, 2], [41, 2], [100, 3], [7, 7], [1000, 256]] as const) {
    const shares = Array.from({ length: workers }, (_, w) => connectionShare(max, workers, w)!);
    expect(shares.reduce((a, b) => a + b, 0)).toBe(max);
    expect(Math.max(...shares) - Math.min(...shares)).toBeLessThanOrEqual(1);
  }
  expect(connectionShare(41, 2, 0)).toBe(21);
  expect(connectionShare(41, 2, 1)).toBe(20);
  // Without a figure each worker's own open-file limit decides (fdBudget).
  expect(connectionShare(undefined, 4, 3)).toBeUndefined();
  expect(() => connectionShare(3, 4, 0)).toThrow("--max-connections: 3 connections cannot be shared by 4 workers");
  expect(() => connectionShare(undefined, 257, 0)).toThrow("--workers: 257 workers: at most 256");
});
