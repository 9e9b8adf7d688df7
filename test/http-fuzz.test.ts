// Fuzzing edgeproxy's http front end: mutated HTTP/1.1 requests (pipelined,
// several connections at once) and mutated PROXY v1/v2 headers (accept_proxy),
// through a real edgeproxy in the test's own namespace to a node origin
// (llhttp, not our parser). Must hold: edgeproxy stays up and /metrics
// answers, every connection ends within its bound, the origin meets no byte
// it cannot parse, and it parses exactly as many requests as clients got
// answers from it (one more would be a request smuggled past us).
// Deterministic: EDGEPROXY_FUZZ_SEED=<n> replays a run; the seed is in every failure.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange } from "./helpers/net";
import { NodeOrigin } from "./helpers/node-origin";

const f = proxyFixture();

const SEED = Number(process.env.EDGEPROXY_FUZZ_SEED ?? 0x15f00d);
/** Each connection must end within this (the PROXY header deadline is 3 s; the client half-closes after sending). */
const CONNECTION_BOUND_MS = 10_000;
const CONCURRENCY = 24;
/** Run-time bound of each fuzz loop, whatever the counts. */
const LOOP_BOUND_MS = 45_000;

/** mulberry32: small, seedable, good enough to pick mutations. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]!, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof rng>;

// ---- HTTP requests ----

const METHODS = ["GET", "GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"];
const PATHS = ["/", "/a", "/a/b?c=d", "/x/../admin", "//y", "/%61b", "/%2Fz", "/a/./b/", "/q?x=%zz&y=/../"];

/** A chunked encoding of `body` with random chunk sizes, hex case, leading zeros, extensions and trailers. */
function chunked(r: Rng, body: string): string {
  let out = "";
  let i = 0;
  while (i < body.length) {
    const n = 1 + r.int(Math.min(40, body.length - i));
    let hex = n.toString(16);
    if (r.chance(0.2)) hex = hex.toUpperCase();
    if (r.chance(0.1)) hex = `0${hex}`;
    out += `${hex}${r.chance(0.15) ? `;ext${r.int(9)}=${r.chance(0.5) ? "v" : '"q;v"'}` : ""}\r\n${body.slice(i, i + n)}\r\n`;
    i += n;
  }
  return `${out}0\r\n${r.chance(0.2) ? "X-Trailer: t\r\n" : ""}\r\n`;
}

/** A valid request as lines (head lines, then the body), before mutation. */
function request(r: Rng): { lines: string[]; body: string } {
  const method = r.pick(METHODS);
  const v10 = r.chance(0.08);
  const target = r.chance(0.07) ? `http://h${r.int(3)}.example${r.pick(PATHS)}` : r.pick(PATHS);
  const lines = [`${method} ${target} HTTP/1.${v10 ? 0 : 1}`];
  if (!v10 || r.chance(0.5)) lines.push(`Host: h${r.int(3)}.example${r.chance(0.2) ? ":8080" : ""}`);
  // HTTP/1.0 asks to be kept alive, so that the requests pipelined after it are read too.
  if (v10) lines.push("Connection: keep-alive");
  for (let k = r.int(4); k > 0; k--) lines.push(r.pick(["Accept: */*", "User-Agent: fuzz/1", `X-N: ${r.int(1e6)}`, "Cookie: a=b; c=d", "X-Forwarded-For: 203.0.113.9", "Connection: keep-alive", "Accept-Encoding: gzip, br"]));
  let body = "";
  if (method === "POST" || method === "PUT" || method === "PATCH") {
    body = "b".repeat(r.int(120));
    if (!v10 && r.chance(0.5)) {
      lines.push("Transfer-Encoding: chunked");
      body = chunked(r, body);
    } else lines.push(`Content-Length: ${body.length}`);
  }
  return { lines, body };
}

const INSERTS = ["\r", "\n", " ", "\t", "\0", ",", ":", ";", "\r\n", "\x0b", "\x7f"];

/** 1 to 3 mutations of a request, as bytes (latin1). */
function mutate(r: Rng, req: { lines: string[]; body: string }): string {
  const lines = [...req.lines];
  let body = req.body;
  const n = 1 + r.int(3);
  let text: string | undefined;
  for (let m = 0; m < n; m++) {
    const kind = r.int(9);
    if (kind === 0 && lines.length > 1) lines.splice(1 + r.int(lines.length - 1), 0, lines[1 + r.int(lines.length - 1)]!); // duplicate a field
    else if (kind === 1 && lines.length > 1) lines.splice(1 + r.int(lines.length - 1), 1); // remove a field
    else if (kind === 2) lines.push(r.pick(["Transfer-Encoding: chunked", "Content-Length: 5", "Content-Length: 0", "Transfer-Encoding: identity", "Content-Length: 5, 5", "Expect: 100-continue", "Connection: close"]));
    else if (kind === 3) body = r.chance(0.5) ? chunked(r, "c".repeat(r.int(60))) : body.slice(0, r.int(body.length + 1)); // random chunk framing or a short body
    else {
      // Byte-level: on the whole text from here on.
      text ??= `${lines.join("\r\n")}\r\n\r\n${body}`;
      const at = r.int(text.length + 1);
      if (kind === 4) text = text.slice(0, at) + String.fromCharCode(r.int(256)) + text.slice(at + 1); // flip a byte
      else if (kind === 5) text = text.slice(0, at) + String.fromCharCode(0x80 + r.int(128)) + text.slice(at);
      else if (kind === 6) text = text.slice(0, at) + text.slice(at + 1); // drop a byte
      else text = text.slice(0, at) + r.pick(INSERTS) + text.slice(at);
    }
  }
  return text ?? `${lines.join("\r\n")}\r\n\r\n${body}`;
}

// ---- PROXY headers ----

function v1(r: Rng): Buffer {
  const kind = r.int(4);
  const port = () => (r.chance(0.05) ? r.pick(["0", "65536", "080", "-1", ""]) : String(1 + r.int(65535)));
  const line =
    kind === 0
      ? `PROXY TCP4 203.0.113.${r.int(256)} 192.0.2.${r.int(256)} ${port()} ${port()}\r\n`
      : kind === 1
        ? `PROXY TCP6 2001:db8::${r.int(65536).toString(16)} 2001:db8::1 ${port()} ${port()}\r\n`
        : kind === 2
          ? "PROXY UNKNOWN\r\n"
          : `PROXY TCP4 ${r.pick(["256.1.1.1", "1.1.1", "::1", "01.2.3.4", "a.b.c.d"])} 192.0.2.1 1 2\r\n`;
  return Buffer.from(line, "latin1");
}

function v2(r: Rng): Buffer {
  const sig = Buffer.from("0d0a0d0a000d0a515549540a", "hex");
  const fam = r.pick([0x11, 0x21, 0x12, 0x00, 0x31]);
  const addrLen = fam >> 4 === 1 ? 12 : fam >> 4 === 2 ? 36 : fam >> 4 === 3 ? 216 : 0;
  const tlvs = r.chance(0.3) ? Buffer.from([r.pick([0x01, 0x02, 0x04, 0x05, 0x20, 0xee]), 0, 3, 1, 2, 3]) : Buffer.alloc(0);
  const addr = Buffer.alloc(addrLen);
  for (let i = 0; i < addrLen; i++) addr[i] = r.int(256);
  const head = Buffer.from([r.chance(0.9) ? 0x21 : 0x20, fam, 0, 0]);
  head.writeUInt16BE(addrLen + tlvs.length, 2);
  return Buffer.concat([sig, head, addr, tlvs]);
}

/** A header, valid or mutated: flips, inserts, truncation, a wrong length. */
function proxyHeader(r: Rng): { header: Buffer; mutated: boolean } {
  let h = r.chance(0.5) ? v1(r) : v2(r);
  const n = r.chance(0.3) ? 0 : 1 + r.int(3);
  for (let m = 0; m < n; m++) {
    const at = r.int(h.length);
    const kind = r.int(5);
    if (kind === 0) h[at] = r.int(256);
    else if (kind === 1) h = Buffer.concat([h.subarray(0, at), Buffer.from([r.pick([13, 10, 32, 9, 0, 0x80 + r.int(128)])]), h.subarray(at)]);
    else if (kind === 2) h = h.subarray(0, at);
    else if (kind === 3 && h.length >= 16 && h[12] !== undefined && h.subarray(0, 4).equals(Buffer.from("0d0a0d0a", "hex"))) h.writeUInt16BE(r.int(65536), 14);
    else h = Buffer.concat([h, Buffer.from("x".repeat(r.int(120)))]); // overlong
  }
  return { header: h, mutated: n > 0 };
}

// ---- running ----

const STATUS = /HTTP\/1\.[01] (\d{3}) /g;

/** Answers with status 200 in a client's stream (the origin's, relayed). */
function count200(got: string): number {
  let n = 0;
  for (const m of got.matchAll(STATUS)) if (m[1] === "200") n++;
  return n;
}

async function metricsUp(admin: string): Promise<boolean> {
  const res = await fetch("http://localhost/metrics", { unix: admin } as RequestInit);
  return res.ok && (await res.text()).includes("edgeproxy_");
}

interface Tally {
  sent: number;
  /** Requests sent with mutations. */
  mutated: number;
  /** Final answers (not 1xx) clients got: requests edgeproxy read to the end and answered. */
  answered: number;
  connections: number;
  timeouts: number;
  slowest: number;
  answered200: number;
  statuses: Map<string, number>;
}

/** Run `one` on CONCURRENCY connections at a time until `enough` or the loop bound. */
async function drive(one: (r: Rng, t: Tally) => Promise<void>, enough: (t: Tally) => boolean): Promise<Tally> {
  const t: Tally = { sent: 0, mutated: 0, answered: 0, connections: 0, timeouts: 0, slowest: 0, answered200: 0, statuses: new Map() };
  const stop = Date.now() + LOOP_BOUND_MS;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      const r = rng(SEED + w * 7919);
      while (!enough(t) && Date.now() < stop) await one(r, t);
    }),
  );
  return t;
}

function noteReply(t: Tally, got: string, ms: number, timedOut: boolean): void {
  t.connections++;
  // exchange() resets the connection at its bound, and the close may report first: the time tells.
  if (timedOut || ms >= CONNECTION_BOUND_MS - 50) t.timeouts++;
  t.slowest = Math.max(t.slowest, ms);
  t.answered200 += count200(got);
  for (const m of got.matchAll(STATUS)) if (m[1]![0] !== "1") t.answered++;
  const first = /^HTTP\/1\.[01] (\d{3})/.exec(got)?.[1] ?? (got.length ? "other" : "none");
  t.statuses.set(first, (t.statuses.get(first) ?? 0) + 1);
}

async function setup(extra: string[]): Promise<{ origin: NodeOrigin; admin: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "ep-fuzz-"));
  const origin = await NodeOrigin.start(1, true);
  const admin = join(dir, "admin.sock");
  f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.ports[0]}`, "--admin", admin, "--max-body-size", "64KiB", ...extra]);
  return { origin, admin, dir };
}

/** The invariants, one line each for what broke; the seed in front. */
async function verdict(t: Tally, origin: NodeOrigin, admin: string, what: string): Promise<string[]> {
  await origin.sync();
  const out: string[] = [];
  if (f.ep!.proc.exitCode !== null) out.push(`edgeproxy exited (${f.ep!.proc.exitCode}): ${f.ep!.stderr.slice(-2000)}`);
  else if (!(await metricsUp(admin))) out.push("/metrics does not answer");
  if (t.timeouts) out.push(`${t.timeouts} connections still open after ${CONNECTION_BOUND_MS} ms`);
  const errors = origin.parseErrors();
  if (errors.length) out.push(`origin parse errors: ${JSON.stringify(errors.slice(0, 3))}`);
  if (origin.requests.length !== t.answered200) out.push(`origin parsed ${origin.requests.length} requests, clients got ${t.answered200} answers from it`);
  const summary = `${what}: seed ${SEED}, ${t.sent} sent (${t.mutated} mutated) on ${t.connections} connections, ${t.answered} answered, first answers ${JSON.stringify(Object.fromEntries(t.statuses))}, ${origin.requests.length} reached the origin, slowest connection ${Math.round(t.slowest)} ms`;
  console.log(summary);
  return out.map((l) => `${summary}\n  ${l}`);
}

describe("fuzzing the http front end, checked by an independent parser at the origin", () => {
  // On each data plane (the HTTP code is shared; reads, writes and closes are each engine's own).
  test.each(["epoll", "bun"] as const)("20,000 mutated requests, pipelined on concurrent connections, engine %s", async (engine) => {
    const { origin, admin, dir } = await setup(["--engine", engine]);
    try {
      const t = await drive(
        async (r, t) => {
          // Valid requests (random fields, framing, chunking) pipelined, the last one mutated: edgeproxy reads
          // every one of them, since a refused request ends its connection and what follows would go unread.
          const k = 1 + r.int(5);
          let bytes = "";
          for (let i = 0; i < k - 1; i++) {
            const q = request(r);
            bytes += `${q.lines.join("\r\n")}\r\n\r\n${q.body}`;
          }
          const mutated = r.chance(0.95);
          const last = request(r);
          bytes += mutated ? mutate(r, last) : `${last.lines.join("\r\n")}\r\n\r\n${last.body}`;
          t.sent += k;
          if (mutated) t.mutated++;
          const t0 = performance.now();
          const o = await exchange(`192.0.2.${1 + r.int(150)}`, 1 + r.int(65000), Buffer.from(bytes, "latin1"), CONNECTION_BOUND_MS);
          const got = o.kind === "data" || o.kind === "reset" ? Buffer.from(o.bytes).toString("latin1") : "";
          noteReply(t, got, performance.now() - t0, o.kind === "timeout");
        },
        (t) => t.mutated >= 20_000 && t.answered >= 20_000,
      );
      expect(t.mutated).toBeGreaterThanOrEqual(20_000);
      // Answered: read and parsed by edgeproxy to the end, then passed on or refused.
      expect(t.answered).toBeGreaterThanOrEqual(20_000);
      expect(await verdict(t, origin, admin, "requests")).toEqual([]);
    } finally {
      await origin.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);

  test("20,000 mutated PROXY v1/v2 headers from a trusted balancer", async () => {
    // The balancers: 192.0.2.192/26 (many source addresses, so 20,000 connections do not run out of ports).
    const { origin, admin, dir } = await setup(["--accept-proxy", "192.0.2.192/26"]);
    try {
      const t = await drive(
        async (r, t) => {
          const { header, mutated } = proxyHeader(r);
          t.sent++;
          if (mutated) t.mutated++;
          const t0 = performance.now();
          const req = Buffer.from(`GET /pp HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`);
          const o = await exchange(`192.0.2.${1 + r.int(150)}`, 1 + r.int(65000), Buffer.concat([header, req]), CONNECTION_BOUND_MS, `192.0.2.${192 + r.int(64)}`);
          const got = o.kind === "data" || o.kind === "reset" ? Buffer.from(o.bytes).toString("latin1") : "";
          noteReply(t, got, performance.now() - t0, o.kind === "timeout");
        },
        (t) => t.sent >= 20_000,
      );
      expect(t.sent).toBeGreaterThanOrEqual(20_000);
      expect(await verdict(t, origin, admin, "PROXY headers")).toEqual([]);
    } finally {
      await origin.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
