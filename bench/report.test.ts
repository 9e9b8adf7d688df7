import { describe, expect, test } from "bun:test";
import { ratioTable } from "./report";
import { cpuRatios } from "./wrk-scenario";

describe("ratios", () => {
  const rows = [
    { peer: "direct (no proxy)", mode: "keep-alive", value: NaN },
    { peer: "edgeproxy", mode: "keep-alive", value: 18 },
    { peer: "haproxy (mode tcp)", mode: "keep-alive", value: 20 },
    { peer: "nginx stream", mode: "keep-alive", value: 25 },
    { peer: "edgeproxy", mode: "close", value: 150 },
  ];
  test("edgeproxy against the lowest other proxy of the same mode", () => {
    const [ka, close] = cpuRatios("TCP", rows, "CPU");
    expect(ka).toMatchObject({ scenario: "TCP keep-alive", edgeproxy: 18, best: { peer: "haproxy (mode tcp)", value: 20 }, target: { met: true } });
    expect(close).toMatchObject({ scenario: "TCP one connection per request", best: { peer: "none measured" }, target: { met: false } });
  });
  test("one row per edgeproxy variant", () => {
    const r = cpuRatios("TCP", [...rows, { peer: "edgeproxy (splice auto)", mode: "keep-alive", value: 10 }], "CPU", ["keep-alive"]);
    expect(r.map((x) => x.scenario)).toEqual(["TCP keep-alive (edgeproxy)", "TCP keep-alive (splice auto)"]);
  });
  test("the table shows ratio, target and whether it is met", () => {
    const md = ratioTable(cpuRatios("TCP", rows, "CPU µs/request", ["keep-alive"]));
    expect(md).toContain("| TCP keep-alive | CPU µs/request (lower is better) | 18.0 µs | haproxy (mode tcp): 20.0 µs | 0.90× | ≤ 0.9× best peer | **met** |");
  });
});
