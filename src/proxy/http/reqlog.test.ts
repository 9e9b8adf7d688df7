import { expect, test } from "bun:test";
import { LineWriter, type ServiceLog } from "../../log/access";
import type { RequestHead } from "./message";
import { RequestLog } from "./reqlog";

// The request line is built by hand (no object, no JSON.stringify per line): it must be valid JSON with every field, in the order they always had.
const ORDER = ["protocol", "client", "edge", "method", "host", "path", "status", "bytes_in", "bytes_out", "origin", "ttfb_ms", "duration_ms", "request_id", "http_version"];

// Either way a line is made: written in place (ServiceLog.begin, the usual request) or as a string (line(): the
// others, and the usual one when it would not fit a buffer).
function capture(inPlace = true): { log: ServiceLog; lines: string[] } {
  const lines: string[] = [];
  const w = new LineWriter();
  const log = {
    sampled: () => true,
    line: (b: string) => void lines.push(`{${b}`),
    begin: (worst: number) => {
      if (!inPlace) return undefined;
      w.buf = Buffer.alloc(worst);
      w.p = 0;
      return w;
    },
    finish: () => void lines.push(`{${w.buf.toString("utf8", 0, w.p)}`),
  };
  return { log: log as unknown as ServiceLog, lines };
}
const head = (over: Partial<RequestHead>): RequestHead => ({ method: "GET", target: "/a/b?q=1", host: "example.com", names: [], values: [], ...over }) as unknown as RequestHead;

for (const inPlace of [true, false]) {
  test(`the usual request: every field, in order, path without its query (${inPlace ? "written in place" : "as a string"})`, () => {
    const { log, lines } = capture(inPlace);
    const r = new RequestLog(log, "192.0.2.10:40000", "192.0.2.1:80");
    r.request(head({}), 0);
    r.bytesIn += 50;
    r.origin = "[2001:db8::5]:8080";
    r.status = 200;
    r.firstByte();
    r.bytesOut += 120;
    r.end();
    const l = JSON.parse(lines[0]!);
    expect(Object.keys(l)).toEqual(ORDER);
    expect(l).toMatchObject({ protocol: "http", client: "192.0.2.10:40000", edge: "192.0.2.1:80", method: "GET", host: "example.com", path: "/a/b", status: 200, bytes_in: 50, bytes_out: 120, origin: "[2001:db8::5]:8080" });
    expect(typeof l.ttfb_ms).toBe("number");
    expect(typeof l.request_id).toBe("string");
  });

  test(`a connection's later requests: the same members (the constant ones are encoded once from the second) (${inPlace ? "written in place" : "as a string"})`, () => {
    const { log, lines } = capture(inPlace);
    const r = new RequestLog(log, "[2001:db8::10]:40000", "192.0.2.1:80", "1.1");
    for (let i = 0; i < 4; i++) {
      r.request(head({ method: i % 2 ? "POST" : "GET" }), 0);
      r.origin = "127.0.0.1:9000";
      r.status = 200 + i;
      r.end();
    }
    const parsed = lines.map((l) => JSON.parse(l));
    expect(parsed.map((l) => Object.keys(l))).toEqual([ORDER, ORDER, ORDER, ORDER]);
    expect(parsed.map((l) => [l.client, l.edge, l.method, l.status, l.http_version])).toEqual([0, 1, 2, 3].map((i) => ["[2001:db8::10]:40000", "192.0.2.1:80", i % 2 ? "POST" : "GET", 200 + i, "1.1"]));
  });

  test(`a usual request with hostile host and path: escaped as JSON.stringify would (${inPlace ? "written in place" : "as a string"})`, () => {
    const { log, lines } = capture(inPlace);
    const r = new RequestLog(log, undefined, undefined, "2");
    const target = '/p"\\\u0001\u007fé€😀\ud800?x="';
    const host = "h\u0000\"é";
    r.request(head({ target, host }), 0);
    r.origin = "127.0.0.1:9000";
    r.status = 204;
    r.end();
    expect(lines[0]).toContain(`"path":${JSON.stringify(target.slice(0, target.indexOf("?")))}`);
    expect(lines[0]).toContain(`"host":${JSON.stringify(host)}`);
    const l = JSON.parse(lines[0]!);
    expect(l).toMatchObject({ host, path: target.slice(0, target.indexOf("?")), status: 204, ttfb_ms: null, http_version: "2" });
  });
}

test("hostile values are escaped; absent ones are null; a reason comes last", () => {
  const { log, lines } = capture();
  const r = new RequestLog(log, undefined, undefined);
  r.request(head({ target: '/x"\\\u0001é', host: undefined }), 0);
  r.answered(400, 10, "bad_request");
  r.begin(undefined, 0);
  r.answered(431, 5, "head_too_large");
  const a = JSON.parse(lines[0]!);
  expect(Object.keys(a)).toEqual([...ORDER.filter((k) => k !== "client" && k !== "edge"), "reason"]);
  expect(a).toMatchObject({ path: '/x"\\\u0001é', host: null, origin: null, ttfb_ms: null, status: 400, reason: "bad_request" });
  const b = JSON.parse(lines[1]!);
  expect(b).toMatchObject({ method: null, host: null, path: null, request_id: null, status: 431, bytes_out: 5 });
});

test("our ids: the bytes written to the origin and the line are the id's text, unique, across base-36 digit counts", () => {
  const { log, lines } = capture();
  const r = new RequestLog(log, undefined, undefined);
  const seen = new Set<string>();
  // 1,300 requests: the counter's base-36 text grows a digit at 36 and at 1,296 (module-wide, so from wherever it stands).
  for (let i = 0; i < 1300; i++) {
    expect(r.request(head({}), 0)).toBe(true);
    const b = Buffer.alloc(r.idLength + 2, 0x2a);
    expect(r.writeId(b, 1)).toBe(1 + r.idLength);
    const id = r.id!;
    expect(id).toMatch(/^[0-9a-f]{16}-[0-9a-z]+$/);
    expect(b.toString("latin1")).toBe(`*${id}*`);
    expect(seen.has(id)).toBe(false);
    seen.add(id);
    r.origin = "127.0.0.1:9000";
    r.status = 200;
    r.end();
    expect(JSON.parse(lines[i]!).request_id).toBe(id);
  }
  // A sane id of the client's is kept: none of ours to add, and the line says the client's.
  expect(r.request(head({ names: ["x-request-id"], values: ["abc-123"] }), 0)).toBe(false);
  expect(r.id).toBe("abc-123");
  r.origin = "127.0.0.1:9000";
  r.end();
  expect(JSON.parse(lines.at(-1)!).request_id).toBe("abc-123");
});
