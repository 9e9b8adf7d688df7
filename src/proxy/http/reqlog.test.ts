import { expect, test } from "bun:test";
import type { ServiceLog } from "../../log/access";
import type { RequestHead } from "./parse";
import { RequestLog } from "./reqlog";

// The request line is built by hand (no object, no JSON.stringify per line): it must be valid JSON with every field, in the order they always had.
const ORDER = ["protocol", "client", "edge", "method", "host", "path", "status", "bytes_in", "bytes_out", "origin", "ttfb_ms", "duration_ms", "request_id", "http_version"];

function capture(): { log: ServiceLog; lines: string[] } {
  const lines: string[] = [];
  return { log: { sampled: () => true, line: (b: string) => void lines.push(`{${b}`) } as unknown as ServiceLog, lines };
}
const head = (over: Partial<RequestHead>): RequestHead => ({ method: "GET", target: "/a/b?q=1", host: "example.com", names: [], values: [], ...over }) as unknown as RequestHead;

test("the usual request: every field, in order, path without its query", () => {
  const { log, lines } = capture();
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
