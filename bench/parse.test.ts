import { describe, expect, test } from "bun:test";
import { parseFlags } from "./flags";
import { parseIperf3 } from "./iperf";
import { parsePairs } from "./paired";
import { CpuSnapshot, parseProcStat } from "./procstat";
import { CLK_TCK } from "./sys";

describe("parseFlags", () => {
  test("defaults: every scenario, 3 runs of 5 s", () => {
    expect(parseFlags([])).toEqual({ quick: false, build: false, only: ["tcp", "http", "bulk", "udp", "coverage", "lookup", "idle", "workers", "slowloris", "accesslog", "tls-handshake", "h2"], runs: 3, seconds: 5 });
  });
  test("--quick shortens runs unless told otherwise", () => {
    expect(parseFlags(["--quick"])).toMatchObject({ quick: true, runs: 1, seconds: 2 });
    expect(parseFlags(["--quick", "--runs", "2", "--seconds=4"])).toMatchObject({ runs: 2, seconds: 4 });
  });
  test("--only keeps the canonical order; --udp and --http are shorthands", () => {
    expect(parseFlags(["--only", "bulk,tcp"]).only).toEqual(["tcp", "bulk"]);
    expect(parseFlags(["--only=workers"]).only).toEqual(["workers"]);
    expect(parseFlags(["--udp", "--http"]).only).toEqual(["http", "udp"]);
    expect(parseFlags(["--http", "--only", "tcp"]).only).toEqual(["tcp", "http"]);
    expect(parseFlags(["--only", "h2,tls-handshake"]).only).toEqual(["tls-handshake", "h2"]);
  });
  test("bad input is one line naming it", () => {
    expect(() => parseFlags(["--fast"])).toThrow('unknown argument "--fast"');
    expect(() => parseFlags(["--only", "tcp,dns"])).toThrow('--only: unknown scenario "dns"');
    expect(() => parseFlags(["--only"])).toThrow("--only needs a list");
    expect(() => parseFlags(["--runs", "0"])).toThrow("--runs needs a whole number from 1 to 9");
    expect(() => parseFlags(["--runs", "10"])).toThrow("--runs needs");
    expect(() => parseFlags(["--seconds", "1.5"])).toThrow("--seconds needs");
    expect(() => parseFlags(["--seconds"])).toThrow("got nothing");
    expect(() => parseFlags(["--quick=1"])).toThrow("unknown argument");
  });
});

const STAT = `cpu  252355 0 351874 1880097 4385 0 100447 15500 0 0
cpu0 123215 0 156446 969291 632 0 44457 8221 0 0
cpu1 129139 7 195427 910805 3753 1 55989 7278 0 0
intr 18624125 0 0
ctxt 1
`;

describe("parseProcStat", () => {
  test("busy = user+nice+system+irq+softirq+steal, idle = idle+iowait", () => {
    const m = parseProcStat(STAT);
    expect(m.get("all")).toEqual({ busy: 252355 + 351874 + 100447 + 15500, idle: 1880097 + 4385 });
    expect(m.get(1)).toEqual({ busy: 129139 + 7 + 195427 + 1 + 55989 + 7278, idle: 910805 + 3753 });
    expect(m.get(2)).toBeUndefined();
  });
  test("differences in µs per core and for all", () => {
    const a = new CpuSnapshot(parseProcStat(STAT));
    const b = new CpuSnapshot(parseProcStat(STAT.replace("cpu0 123215", "cpu0 123315").replace("cpu  252355", "cpu  252455")));
    expect(b.busyMicrosSince(a, 0)).toBe((100 * 1e6) / CLK_TCK);
    expect(b.busyMicrosSince(a, "all")).toBe((100 * 1e6) / CLK_TCK);
    expect(b.busyMicrosSince(a, 1)).toBe(0);
    expect(() => b.busyMicrosSince(a, 7)).toThrow("no line for cpu 7");
  });
  test("rejects text that is not /proc/stat", () => {
    expect(() => parseProcStat("hello")).toThrow("no aggregate cpu line");
    expect(() => parseProcStat("cpu  1 2 x 4")).toThrow("cannot read the line");
  });
  test("reads this machine's", () => {
    expect(CpuSnapshot.now().ticks.get("all")!.busy).toBeGreaterThan(0);
  });
});

describe("parseIperf3", () => {
  test("the receiver's figure", () => {
    const text = JSON.stringify({
      start: {},
      intervals: [],
      end: {
        sum_sent: { seconds: 1.001253, bytes: 4722524160, bits_per_second: 37732913938.8, retransmits: 2 },
        sum_received: { seconds: 1.000028, bytes: 4721475584, bits_per_second: 37770747091.1 },
      },
    });
    expect(parseIperf3(text)).toEqual({ bitsPerSecond: 37770747091.1, bytes: 4721475584, seconds: 1.000028, retransmits: 2 });
  });
  test("iperf3's own error, or no JSON at all", () => {
    expect(() => parseIperf3(`{"start":{},"intervals":[],"end":{},"error":"unable to connect to server: Connection refused"}`)).toThrow("iperf3: unable to connect to server: Connection refused");
    expect(() => parseIperf3("iperf3: error - bad option")).toThrow("iperf3 printed no JSON: iperf3: error - bad option");
    expect(() => parseIperf3(`{"end":{}}`)).toThrow("no end.sum_received");
  });
});

describe("procNetTcpAddress", () => {
  test("IPv4 in host byte order (x86, arm64: little-endian), port in big-endian hex", async () => {
    const { procNetTcpAddress } = await import("./bulk");
    expect(procNetTcpAddress({ host: "127.0.0.1", port: 5201 })).toBe("0100007F:1451");
    expect(procNetTcpAddress({ host: "192.0.2.201", port: 8080 })).toBe("C90200C0:1F90");
  });
});

describe("parsePairs (bench/pair.sh's output)", () => {
  test("each pair's A, B, B/A and requests; other lines (a pair not measured) left out", () => {
    const out = "pair 1: A 19.30 µs/req (126972 req), B 24.51 µs/req (102798 req), B/A 1.270\nsomething else\npair 2: not measured (a variant failed, said above)\npair 3: A 50.30 µs/req (42943 req), B 57.01 µs/req (41393 req), B/A 1.134\n";
    expect(parsePairs(out)).toEqual({ a: [19.3, 50.3], b: [24.51, 57.01], ratios: [1.27, 1.134], aRequests: [126972, 42943], bRequests: [102798, 41393] });
    expect(parsePairs("usage: bench/pair.sh ...")).toEqual({ a: [], b: [], ratios: [], aRequests: [], bRequests: [] });
  });
});
