// The load generator itself: every way a request can fail is named as such,
// against servers that misbehave on purpose (in a namespace of the test's own).
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { REPLY_SIZE, REQUEST_SIZE, replyFor, requestBytes, runLoad, startOrigin, type LoadSpec, type Mode } from "./helpers/load";
import { spawnLoad, spawnOrigin } from "./helpers/load-main";
import { TestNetns } from "./helpers/netns";

let ns: TestNetns;
const servers: TCPSocketListener<any>[] = [];

beforeEach(() => {
  ns = TestNetns.enter();
});
afterEach(() => {
  for (const s of servers.splice(0)) s.stop(true);
  ns.leave();
});

const spec = (mode: Mode, port: number, over: Partial<LoadSpec> = {}): LoadSpec => ({
  mode,
  hosts: ["127.0.0.1"],
  ports: [port],
  connections: 2,
  durationMs: 250,
  maxRequests: 200,
  timeoutMs: 300,
  retryDelayMs: 5,
  ...over,
});

/** A server that answers each request with `answer(request)`; undefined: do nothing. */
function misbehaving(answer: (s: Socket<undefined>, req: Buffer) => void): TCPSocketListener<undefined> {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data: (s, d) => answer(s, d) } });
  servers.push(l);
  return l;
}

describe("load generator", () => {
  test("the protocol: a 32-byte request, a 256-byte reply that repeats its sequence number", () => {
    const req = requestBytes(42);
    expect(req.length).toBe(REQUEST_SIZE);
    expect(req.toString()).toBe(`REQ ${"0".repeat(25)}42\n`);
    const res = replyFor(req);
    expect(res.length).toBe(REPLY_SIZE);
    expect(res.subarray(0, REQUEST_SIZE).toString()).toBe(`RES ${"0".repeat(25)}42\n`);
  });

  test.each(["keep-alive", "close"] as const)("%s against the origin: every request ok, bounded by count", async (mode) => {
    const { listener, stats } = startOrigin();
    servers.push(listener);
    const r = await runLoad(spec(mode, listener.port, { durationMs: 5000, maxRequests: 300 }));
    expect(r.ok).toBe(300);
    expect(r.failedTotal).toBe(0);
    expect(r.firstFailureAt).toBeNull();
    expect(stats.requests).toBe(300);
    expect(stats.connections).toBe(mode === "close" ? 300 : 2);
  });

  test("refused, reset, short, wrong and timeout are told apart", async () => {
    // A port nobody listens on: refused.
    const closed = misbehaving(() => {});
    const port = closed.port;
    closed.stop(true);
    const refused = await runLoad(spec("close", port));
    expect(refused.failed.refused).toBeGreaterThan(0);
    expect(refused.failedTotal).toBe(refused.failed.refused);

    const reset = await runLoad(spec("close", misbehaving((s) => s.terminate()).port));
    expect(reset.failed.reset).toBeGreaterThan(0);
    expect(reset.failedTotal).toBe(reset.failed.reset);

    const short = await runLoad(spec("keep-alive", misbehaving((s, req) => s.end(replyFor(req).subarray(0, 100))).port));
    expect(short.failed.short).toBeGreaterThan(0);
    expect(short.failedTotal).toBe(short.failed.short);

    const wrong = await runLoad(spec("keep-alive", misbehaving((s) => void s.write(replyFor(requestBytes(999_999)))).port));
    expect(wrong.failed.wrong).toBeGreaterThan(0);
    expect(wrong.failedTotal).toBe(wrong.failed.wrong);

    const silent = await runLoad(spec("close", misbehaving(() => {}).port, { durationMs: 200 }));
    expect(silent.failed.timeout).toBe(2); // one per worker: each waits out its 300 ms deadline once
    expect(silent.failedTotal).toBe(2);
    expect(silent.endedAt - silent.startedAt).toBeLessThan(1000);
  });

  test("an outage is timed from the first failure to the first success of a request begun after it", async () => {
    let up = false;
    const l = misbehaving((s, req) => (up ? void s.write(replyFor(req)) : s.terminate()));
    setTimeout(() => (up = true), 150);
    const r = await runLoad(spec("close", l.port));
    expect(r.outages).toHaveLength(1);
    expect(r.firstFailureAt).not.toBeNull();
    expect(r.recoveredAt! - r.firstFailureAt!).toBeGreaterThan(100);
    expect(r.recoveredAt! - r.startedAt).toBeLessThan(600);
    expect(r.ok).toBeGreaterThan(0);
  });

  test("in a child process: one JSON result, also when stopped early", async () => {
    const origin = await spawnOrigin();
    try {
      const load = spawnLoad({ mode: "keep-alive", hosts: ["127.0.0.1"], ports: [origin.port], durationMs: 30_000 });
      await Bun.sleep(300);
      load.stop();
      const r = await load.result;
      expect(r.ok).toBeGreaterThan(0);
      expect(r.failedTotal).toBe(0);
      expect(r.endedAt - r.startedAt).toBeLessThan(5000);
      expect((await origin.stop()).requests).toBe(r.ok);
    } finally {
      origin.proc.kill("SIGKILL");
    }
  });
});
