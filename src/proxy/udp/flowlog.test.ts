import { describe, expect, test } from "bun:test";
import type { AccessLogConfig } from "../../config/service";
import { RingReader } from "../../log/ring";
import { FlowLog, FlowLogSink } from "./flowlog";

const config = (path: string, sample = 1, bufferBytes = 1 << 20): AccessLogConfig => ({ path, sample, connect: false, bufferBytes, instance: "i1" });

/** A sink whose rings this test reads as the main thread would. */
function sinkAndReaders() {
  const readers = new Map<string, RingReader>();
  const nudged: string[] = [];
  const sink = new FlowLogSink(
    (c, memory) => readers.set(c.path, new RingReader(memory)),
    (path) => nudged.push(path),
  );
  /** The lines written for `path` since the last call. */
  const lines = (path: string): string[] => {
    const r = readers.get(path)!;
    const got = r.read();
    if (!got) return [];
    const text = got.views.map((v) => Buffer.from(v).toString("utf8")).join("");
    r.release(got);
    return text.split("\n").slice(0, -1);
  };
  return { sink, readers, nudged, lines };
}

describe("FlowLogSink (the data plane thread's log lines, as bytes in a ring per file)", () => {
  test("closed() writes the fields JSON.stringify would, in their order, per path", () => {
    const { sink, readers, lines } = sinkAndReaders();
    const tcp = new FlowLog(sink, "web", config("/a.log"), "tcp");
    const udp = new FlowLog(sink, 'q"uote', config("/b.log"));
    const r = { client: "192.0.2.1:4000", edge: "[2001:db8::1]:443", origin: "127.0.0.1:9000", startedAt: performance.now() };
    tcp.closed(r, 10, 2 ** 40, "close", "client_fin");
    udp.closed({ ...r, origin: null }, 0, 7, 'odd"event', "tab\there é");
    expect([...readers.keys()]).toEqual(["/a.log", "/b.log"]);
    const a = JSON.parse(lines("/a.log")[0]!);
    expect(Object.keys(a)).toEqual(["time", "instance", "service", "protocol", "event", "client", "edge", "origin", "bytes_in", "bytes_out", "duration_ms", "reason"]);
    expect(a).toMatchObject({ instance: "i1", service: "web", protocol: "tcp", event: "close", client: r.client, edge: r.edge, origin: r.origin, bytes_in: 10, bytes_out: 2 ** 40, reason: "client_fin" });
    expect(Number.isInteger(a.duration_ms)).toBe(true);
    expect(Date.parse(a.time)).toBeGreaterThan(0);
    const b = JSON.parse(lines("/b.log")[0]!);
    expect(b).toMatchObject({ service: 'q"uote', protocol: "udp", event: 'odd"event', origin: null, bytes_in: 0, bytes_out: 7, reason: "tab\there é" });
    expect(readers.get("/a.log")!.counts()).toEqual({ lines: 1, dropped: 0, sampledOut: 0 });
  });

  test("events from fields (emit), and a line too long for the ring, dropped and counted", () => {
    const { sink, readers, lines } = sinkAndReaders();
    const log = new FlowLog(sink, "s", config("/a.log", 1, 1 << 16), "tcp");
    log.emit({ event: "limited", client: "192.0.2.1:1", reason: "cap" });
    log.emit({ event: "limited", client: "x".repeat(40_000) });
    // Longer than an eighth of the ring at 3 bytes a character, but not in UTF-8: kept.
    log.emit({ event: "limited", client: "y".repeat(5_000) });
    const got = lines("/a.log");
    expect(got.length).toBe(2);
    expect(JSON.parse(got[1]!).client).toBe("y".repeat(5_000));
    expect(JSON.parse(got[0]!)).toMatchObject({ service: "s", protocol: "tcp", event: "limited", reason: "cap" });
    expect(readers.get("/a.log")!.counts()).toEqual({ lines: 2, dropped: 1, sampledOut: 0 });
  });

  test("bounded by access_log_buffer: lines beyond the ring are dropped and counted, the reader nudged once; sampling is counted", () => {
    const { sink, readers, nudged, lines } = sinkAndReaders();
    const log = new FlowLog(sink, "s", config("/a.log", 1, 1 << 16));
    const r = { client: "192.0.2.1:4000", edge: "192.0.2.5:80", origin: "127.0.0.1:9000", startedAt: 0 };
    for (let i = 0; i < 2_000; i++) log.closed(r, i, 1, "close", "x".repeat(100));
    // Sampled out: drawn when a flow starts (no record, so no last line), and a rare line's own draw.
    const off = new FlowLog(sink, "s", config("/a.log", 0, 1 << 16));
    expect(off.sampledIn()).toBe(false);
    off.emit({ event: "connect" });
    expect(log.sampledIn()).toBe(true);
    expect(nudged).toEqual(["/a.log"]);
    const kept = lines("/a.log");
    kept.forEach((l, i) => expect(JSON.parse(l).bytes_in).toBe(i));
    const c = readers.get("/a.log")!.counts();
    expect(c.lines).toBe(kept.length);
    expect(c.lines + c.dropped).toBe(2_000);
    expect(c.dropped).toBeGreaterThan(0);
    expect(c.sampledOut).toBe(2);
  });
});
