import { describe, expect, test } from "bun:test";
import type { AccessLogConfig } from "../../config/service";
import { type AccessBatch, FlowLog, FlowLogSink } from "./flowlog";

const config = (path: string, sample = 1): AccessLogConfig => ({ path, sample, connect: false, bufferBytes: 1 << 20, instance: "i1" });

/** The batch's lines per path, as the main thread would write them. */
function lines(batch: AccessBatch): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [path, chunks, counts] of batch.byPath) {
    const text = chunks.map((c) => Buffer.from(c).toString("utf8")).join("");
    const got = text.split("\n").slice(0, -1);
    expect(got.length).toBe(counts.reduce((a, b) => a + b, 0));
    out.set(path, got);
  }
  return out;
}

describe("FlowLogSink (the data plane thread's log lines, as bytes)", () => {
  test("closed() writes the fields JSON.stringify would, in their order, per path", () => {
    const sink = new FlowLogSink();
    const tcp = new FlowLog(sink, "web", config("/a.log"), "tcp");
    const udp = new FlowLog(sink, 'q"uote', config("/b.log"));
    const r = { client: "192.0.2.1:4000", edge: "[2001:db8::1]:443", origin: "127.0.0.1:9000", startedAt: performance.now() };
    tcp.closed(r, 10, 2 ** 40, "close", "client_fin");
    udp.closed({ ...r, origin: null }, 0, 7, 'odd"event', "tab\there é");
    const got = lines(sink.take());
    const a = JSON.parse(got.get("/a.log")![0]!);
    expect(Object.keys(a)).toEqual(["time", "instance", "service", "protocol", "event", "client", "edge", "origin", "bytes_in", "bytes_out", "duration_ms", "reason"]);
    expect(a).toMatchObject({ instance: "i1", service: "web", protocol: "tcp", event: "close", client: r.client, edge: r.edge, origin: r.origin, bytes_in: 10, bytes_out: 2 ** 40, reason: "client_fin" });
    expect(Number.isInteger(a.duration_ms)).toBe(true);
    expect(Date.parse(a.time)).toBeGreaterThan(0);
    const b = JSON.parse(got.get("/b.log")![0]!);
    expect(b).toMatchObject({ service: 'q"uote', protocol: "udp", event: 'odd"event', origin: null, bytes_in: 0, bytes_out: 7, reason: "tab\there é" });
    expect(sink.pending).toBe(false);
  });

  test("many lines fill several buffers, each its own transferable ArrayBuffer; every line arrives whole", () => {
    const sink = new FlowLogSink();
    const log = new FlowLog(sink, "s", config("/a.log"), "tcp");
    for (let i = 0; i < 1000; i++) log.closed({ client: `10.0.0.${i % 256}:${i}`, edge: "192.0.2.5:80", origin: null, startedAt: 0 }, i, i, "close", "shutdown");
    log.emit({ event: "limited", client: "x".repeat(40_000) });
    const batch = sink.take();
    const [[, chunks, counts]] = batch.byPath as [AccessBatch["byPath"][number]];
    expect(chunks.length).toBeGreaterThan(2);
    expect(new Set(chunks.map((c) => c.buffer)).size).toBe(chunks.length);
    // Transfer as postMessage does: the sink keeps nothing that aliases what was sent.
    const moved = structuredClone(batch, { transfer: FlowLogSink.transfer(batch) });
    expect(chunks[0]!.byteLength).toBe(0);
    const got = lines(moved).get("/a.log")!;
    expect(got.length).toBe(1001);
    got.forEach((l, i) => i < 1000 && expect(JSON.parse(l).bytes_in).toBe(i));
    expect(JSON.parse(got[1000]!).client).toBe("x".repeat(40_000));
    expect(counts.reduce((a, b) => a + b)).toBe(1001);
    // The sink goes on writing after a transfer.
    log.closed({ client: "a", edge: "b", origin: null, startedAt: 0 }, 1, 1, "close", "x");
    expect(lines(sink.take()).get("/a.log")!.length).toBe(1);
  });

  test("a quiet post copies its few lines out and keeps the buffer", () => {
    const sink = new FlowLogSink();
    const log = new FlowLog(sink, "s", config("/a.log"));
    log.closed({ client: "a", edge: "b", origin: null, startedAt: 0 }, 1, 1, "close", "x");
    const [[, chunks]] = sink.take().byPath as [AccessBatch["byPath"][number]];
    expect(chunks[0]!.buffer.byteLength).toBe(chunks[0]!.byteLength);
  });

  test("bounded: lines beyond the batch's bytes are dropped and counted; sampling is counted", () => {
    const sink = new FlowLogSink();
    const log = new FlowLog(sink, "s", config("/a.log"));
    const r = { client: "192.0.2.1:4000", edge: "192.0.2.5:80", origin: "127.0.0.1:9000", startedAt: 0 };
    for (let i = 0; i < 20_000; i++) log.closed(r, 1, 1, "close", "x".repeat(100));
    const off = new FlowLog(sink, "s", config("/a.log", 0));
    off.closed(r, 1, 1, "close", "x");
    off.emit({ event: "connect" });
    const batch = sink.take();
    const kept = lines(batch).get("/a.log")!.length;
    expect(kept).toBeGreaterThan(1000);
    expect(kept + batch.dropped).toBe(20_000);
    expect(batch.sampledOut).toBe(2);
    expect(sink.pending).toBe(false);
  });
});
