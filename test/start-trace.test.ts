// $EDGEPROXY_START_TRACE: one line per startup phase, in order, with the
// time since the runtime started; the service is steered before the
// admin API starts and before "ready"; and nothing of it without the variable.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { exchange, text } from "./helpers/net";
import { TestNetns } from "./helpers/netns";

let ns: TestNetns;
beforeAll(() => {
  ns = TestNetns.enter();
});
afterAll(() => ns.leave());

const phases = (stderr: string) => [...stderr.matchAll(/^edgeproxy: start \+([\d.]+) ms: (.+)$/gm)].map((m) => ({ ms: Number(m[1]), phase: m[2]! }));

test("EDGEPROXY_START_TRACE=1: the phases in order, steered before the admin API and ready", async () => {
  const ep = await EdgeproxyProcess.start(["--workers", "1", "--ports", "8080", "--prefix", "192.0.2.70/32"], { EDGEPROXY_START_TRACE: "1" });
  try {
    // The responder (no --origin) answers: the steering the trace names is real.
    expect(text(await exchange("192.0.2.70", 8080, "echo me"))).toBe("echo me");
    // The trace's last line follows the readiness line start() waited for: read on until it is there (bounded).
    for (let i = 0; i < 100 && !/ ms: ready$/m.test(ep.stderr); i++) await Bun.sleep(20);
    const seen = phases(ep.stderr);
    const names = seen.map((p) => p.phase);
    expect(names).toEqual([
      "modules evaluated",
      "config parsed, BPF image read",
      "environment, pins, pid file, access logs and admin socket checked",
      "server checks done",
      "dispatcher loaded (verifier), pinned and attached",
      "service default: listening and registered (steered from here)",
      "data planes started",
      "admin API started",
      "ready",
    ]);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.ms).toBeGreaterThanOrEqual(seen[i - 1]!.ms);
    // The readiness line comes after everything started, and before the trace's last line.
    const readyLine = ep.stderr.indexOf("edgeproxy: ready (setup");
    expect(readyLine).toBeGreaterThan(ep.stderr.indexOf("ms: admin API started"));
    expect(readyLine).toBeLessThan(ep.stderr.search(/ ms: ready$/m));
  } finally {
    expect(await ep.stop()).toBe(0);
  }
}, 30_000);

test("without EDGEPROXY_START_TRACE nothing of it is said", async () => {
  const ep = await EdgeproxyProcess.start(["--workers", "1", "--ports", "8080", "--prefix", "192.0.2.71/32"], { EDGEPROXY_START_TRACE: "" });
  try {
    expect(phases(ep.stderr)).toEqual([]);
  } finally {
    expect(await ep.stop()).toBe(0);
  }
}, 30_000);
