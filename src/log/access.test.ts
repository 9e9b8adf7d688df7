import { describe, expect, spyOn, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { accessLogCounts, attachRing, formatEndpoint, jsonInner, jsonOrNull, jsonString, LineWriter, nudgeRing, tenths } from "./access";
import { newRingMemory, ringBytes, RingWriter } from "./ring";

// The hand-built lines (relay-log.ts, reqlog.ts, flowlog.ts) must read exactly as JSON.stringify wrote them.
describe("access log line pieces", () => {
  test("jsonString is JSON.stringify for plain, escaped, control, non-ASCII and lone-surrogate strings", () => {
    for (const s of ["", "/index.html", "GET", 'a"b', "a\\b", "tab\there", "nl\n", "\u0000\u001f\u007f", "é/ü", "😀", "\ud800x", "x\udc00", "0123456789abcdef-1z"]) {
      expect(jsonString(s)).toBe(JSON.stringify(s));
      expect(JSON.parse(jsonString(s))).toBe(s);
      expect(`"${jsonInner(s)}"`).toBe(JSON.stringify(s));
    }
    expect(jsonOrNull(undefined)).toBe("null");
    expect(jsonOrNull(null)).toBe("null");
  });

  test("tenths writes what JSON.stringify(Math.round(x * 10) / 10) does", () => {
    for (const x of [0, 0.04, 0.05, 0.1, 0.15, 0.96, 1, 9.95, 12.34, 99.99, 1234.56, 86400000.07, 3.14159]) {
      expect(tenths(x)).toBe(JSON.stringify(Math.round(x * 10) / 10));
    }
    for (let i = 0; i < 10000; i++) {
      const x = Math.random() * 10 ** (i % 8);
      expect(tenths(x)).toBe(JSON.stringify(Math.round(x * 10) / 10));
    }
  });

  test("formatEndpoint: the same text, made once per endpoint object", () => {
    const v4 = { family: 4 as const, addr: new Uint8Array([192, 0, 2, 10]), port: 40000 };
    const v6 = { family: 6 as const, addr: new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), port: 443 };
    expect(formatEndpoint(v4)).toBe("192.0.2.10:40000");
    expect(formatEndpoint(v4)).toBe("192.0.2.10:40000");
    expect(formatEndpoint(v6)).toBe("[2001:db8::1]:443");
  });
});

describe("LineWriter (lines written in place)", () => {
  const w = new LineWriter();
  const written = (f: (w: LineWriter) => void): string => {
    w.buf = Buffer.alloc(4096);
    w.p = 0;
    f(w);
    return w.buf.toString("utf8", 0, w.p);
  };

  test("int writes what a template does", () => {
    const values = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 65535, 123456789, 2 ** 32, Number.MAX_SAFE_INTEGER, -1, 1.5, NaN, 2 ** 60];
    for (let i = 0; i < 2000; i++) values.push(Math.floor(Math.random() * 10 ** Math.floor(Math.random() * 15)));
    for (const n of values) expect(written((w) => w.int(n))).toBe(`${n}`);
  });

  test("tenths writes what tenths() does", () => {
    const values = [0, 0.04, 0.05, 0.95, 1, 9.96, 10, 12.34, 99.99, 100.05, 123456.7];
    for (let i = 0; i < 2000; i++) values.push(Math.random() * 10 ** Math.floor(Math.random() * 7));
    for (const ms of values) expect(written((w) => w.tenths(ms))).toBe(tenths(ms));
  });

  test("text writes what jsonInner does, up to `end`; raw copies ASCII", () => {
    for (const s of ["", "plain/path", 'q"uote', "back\\slash", "ctl\u0000\u001f", "del\u007f", "é€", "😀", "lone\ud800", "x".repeat(300)]) {
      expect(written((w) => w.text(s))).toBe(jsonInner(s));
      expect(written((w) => w.text(`${s}?tail`, s.length))).toBe(jsonInner(s));
    }
    expect(written((w) => w.raw('"a":').int(1).raw(',"b":"').text("c").raw('"}'))).toBe('"a":1,"b":"c"}');
  });

  test("texts either side of the native copy's threshold: the same bytes, escapes anywhere in them, nothing past `end`", () => {
    for (const n of [1, 22, 23, 24, 25, 64, 300]) {
      const plain = "/p".repeat(n).slice(0, n);
      for (const s of [plain, `"${plain.slice(1)}`, `${plain.slice(1)}\\`, `${plain.slice(0, n >> 1)}é${plain.slice(n >> 1)}`, `${plain}\u0001`]) {
        expect(written((w) => w.text(s))).toBe(jsonInner(s));
        expect(written((w) => w.raw("<").text(`${s}?q=${plain}`, s.length).raw(">"))).toBe(`<${jsonInner(s)}>`);
      }
      expect(written((w) => w.raw("[").raw(plain).raw("]"))).toBe(`[${plain}]`);
    }
  });

  test("a long text past the buffer's end (a caller's worst-case bound wrong) is cut there, as the loop's writes are: no throw on the data plane", () => {
    const small = new LineWriter();
    small.buf = Buffer.alloc(30);
    small.p = 20;
    expect(() => small.text("/p".repeat(20)).raw("x".repeat(40))).not.toThrow();
    expect(small.buf.toString("latin1", 20)).toBe("/p/p/p/p/p");
    small.p = 35; // past the end already (the short loop moves on without writing)
    expect(() => small.raw("y".repeat(30)).text("z".repeat(30))).not.toThrow();
  });
});

describe("the data plane thread's rings (attachRing)", () => {
  test("a ring whose file cannot be opened: its lines are counted as dropped in the process's counters, not lost from them", () => {
    const config = { path: "/nonexistent-edgeproxy-dir/a.log", sample: 1, connect: false, bufferBytes: 1 << 16, instance: "i" };
    const memory = newRingMemory(ringBytes(config.bufferBytes));
    const w = new RingWriter(memory, () => {});
    const before = accessLogCounts();
    const err = spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      attachRing(config, memory);
    } finally {
      err.mockRestore();
    }
    for (let i = 0; i < 2000; i++) w.add(`"n":${i},"pad":"${"x".repeat(100)}"}`, new TextEncoder().encode("{"));
    w.skipped();
    const after = accessLogCounts();
    expect(after.dropped - before.dropped).toBe(2000);
    expect(after.lines - before.lines).toBe(0);
    expect(after.sampledOut - before.sampledOut).toBe(1);
  });

  test("an idle ring stops its reader's timer: the next line nudges once and is written at once", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-ringsleep-"));
    try {
      const path = join(dir, "a.log");
      const config = { path, sample: 1, connect: false, bufferBytes: 1 << 16 };
      const memory = newRingMemory(ringBytes(config.bufferBytes));
      let nudges = 0;
      // As the data plane thread's sink does (src/proxy/udp/flowlog.ts): a nudge becomes nudgeRing on the main thread, a message later.
      const w = new RingWriter(memory, () => {
        nudges++;
        setImmediate(() => nudgeRing(path));
      });
      const head = new TextEncoder().encode("{");
      const has = (text: string) => readFileSync(path, "utf8").includes(text);
      attachRing(config, memory);
      // Awake: the timer reads the line, nothing asks.
      w.add('"n":1}', head);
      expect(nudges).toBe(0);
      for (let i = 0; i < 50 && !has('"n":1'); i++) await Bun.sleep(20);
      expect(has('"n":1')).toBe(true);
      // A period with no line stops the timer (the ring's ASLEEP slot, header word 7, says so); the next line asks for a read.
      const asleep = () => Atomics.load(new Int32Array(memory, 0, 8), 7) === 1;
      for (let i = 0; i < 100 && !asleep(); i++) await Bun.sleep(20);
      expect(asleep()).toBe(true);
      w.add('"n":2}', head);
      w.add('"n":3}', head);
      expect(nudges).toBe(1);
      // Written on the nudge, not a period later.
      const at = performance.now();
      for (let i = 0; i < 50 && !has('"n":3'); i++) await Bun.sleep(5);
      expect(has('"n":3')).toBe(true);
      // Under the timer's 200 ms period: the nudge, not the next tick.
      expect(performance.now() - at).toBeLessThan(180);
      expect(readFileSync(path, "utf8")).toBe('{"n":1}\n{"n":2}\n{"n":3}\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
