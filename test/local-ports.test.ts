// A host out of local ports towards an origin (connect(2) fails with
// EADDRNOTAVAIL: every port of net.ipv4.ip_local_port_range is in use to
// that address and port) is this host's lack, not the origin's: the
// connection is reset (tcp) or answered 502 (http), counted in
// local_resource_resets_total{resource="ports"} and origin_errors_total
// {class="other"}, and the origin is never ejected, even with failures = 1,
// nor taken down by active checks that could not connect for that reason.
// Each test in a namespace of its own, whose port range (a per-netns sysctl)
// it narrows to two ports once edgeproxy listens.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { linesOf, logDir } from "./helpers/accesslog";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange, text } from "./helpers/net";
import { hold, holdingOrigin, scrape, workdir, writeConfig, type Held } from "./helpers/pools";

const f = proxyFixture();
const ORIGIN_PORT = 9000;

/** Two local ports for this namespace's connects: the two held connections take both towards the origin. */
function narrowPortRange(): void {
  const p = Bun.spawnSync(["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40001"], { stderr: "pipe" });
  expect(p.stderr.toString()).toBe("");
  expect(p.exitCode).toBe(0);
}

/** curl (not our parser) asks for `path` at the edge's `port`: the status line's code and the body. */
async function curl(port: number, path: string, maxSeconds: number): Promise<{ code: string; body: string }> {
  const p = Bun.spawn(["curl", "-s", "--max-time", `${maxSeconds}`, "-w", "\n%{http_code}", `http://192.0.2.1:${port}${path}`], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const nl = out.lastIndexOf("\n");
  return { code: out.slice(nl + 1), body: out.slice(0, nl) };
}

async function expectCountedNotEjected(admin: string): Promise<void> {
  const m = await scrape(admin);
  expect(m("edgeproxy_local_resource_resets_total", { resource: "ports" })).toBe(1);
  expect(m("edgeproxy_origin_errors_total", { class: "other" })).toBe(1);
  expect(m("edgeproxy_origin_errors_total", { class: "unreachable" })).toBe(0);
  expect(m("edgeproxy_origin_ejections_total")).toBe(0);
  expect(m("edgeproxy_origin_up")).toBe(1);
}

describe("no local port towards the origin (EADDRNOTAVAIL)", () => {
  test.each(["epoll", "bun"] as const)("tcp on %s: the third connection is reset as local_ports, the origin stays up", async (engine) => {
    const w = workdir();
    const log = join(logDir(), "access.log");
    const held: Held[] = [];
    try {
      f.servers.push(holdingOrigin("o", ORIGIN_PORT));
      writeConfig(w, { origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000-7010", extra: `engine = "${engine}"\naccess_log = "${log}"\neject = { failures = 1, base_duration = "30s", duration = "30s" }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      narrowPortRange();
      // Each client to an edge port of its own: its 4-tuple differs, so it may share a local port with the proxy's connects.
      held.push(await hold("192.0.2.1", 7000), await hold("192.0.2.1", 7001));
      expect(held.map((h) => h.name)).toEqual(["o", "o"]);

      const third = await exchange("192.0.2.1", 7002, "", 3000);
      expect(third.kind === "data" || third.kind === "reset").toBe(true);
      expect(text(third)).toBe("");
      await expectCountedNotEjected(w.admin);
      const lines = await linesOf(log, 1);
      expect(lines.find((l) => l.edge === "192.0.2.1:7002")).toMatchObject({ event: "origin_error", reason: "local_ports", origin: `127.0.0.1:${ORIGIN_PORT}` });
    } finally {
      for (const h of held) h.close();
      w.done();
    }
  });

  test.each(["epoll", "bun"] as const)("http on %s: the third request is a 502 saying so, the origin stays up", async (engine) => {
    const w = workdir();
    let release: () => void = () => {};
    const released = new Promise<void>((r) => (release = r));
    // /hold keeps its origin connection busy until the test ends; anything else is answered.
    const origin = Bun.serve({ hostname: "127.0.0.1", port: ORIGIN_PORT, fetch: async (req) => (new URL(req.url).pathname === "/hold" ? (await released, new Response("late")) : new Response("ok")) });
    try {
      writeConfig(w, { mode: "http", origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000-7010", extra: `engine = "${engine}"\neject = { failures = 1, base_duration = "30s", duration = "30s" }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      narrowPortRange();
      // Two requests the origin holds take both ports towards it.
      const holds = [7001, 7002].map((p) => curl(p, "/hold", 8));
      await Bun.sleep(500);
      const third = await curl(7004, "/", 3);
      expect(third.code).toBe("502");
      expect(third.body).toContain("out of local ports to the origin");
      await expectCountedNotEjected(w.admin);
      release();
      expect((await Promise.all(holds)).filter((r) => r.code === "200").length).toBe(2);
    } finally {
      release();
      origin.stop(true);
      w.done();
    }
  });

  test("active checks that find no local port are no verdict: the origin stays up with fall = 1", async () => {
    const w = workdir();
    const held: Held[] = [];
    try {
      f.servers.push(holdingOrigin("o", ORIGIN_PORT));
      writeConfig(w, { origins: [`127.0.0.1:${ORIGIN_PORT}`], ports: "7000", extra: `health = { interval = "100ms", timeout = "100ms", fall = 1, rise = 1 }` });
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      narrowPortRange();
      // The test itself takes both ports towards the origin (the checks' own connects come and go: retried).
      for (let i = 0; i < 40 && held.length < 2; i++) {
        try {
          held.push(await hold("127.0.0.1", ORIGIN_PORT, 500));
        } catch {
          await Bun.sleep(50);
        }
      }
      expect(held.length).toBe(2);
      type Status = { origins: { endpoints: { lastCheck?: string; up: boolean }[] }[] };
      let check = "";
      for (let i = 0; i < 40 && !check.startsWith("skipped"); i++) {
        await Bun.sleep(100);
        const st = (await (await fetch("http://localhost/services/p", { unix: w.admin } as RequestInit)).json()) as Status;
        check = st.origins[0]?.endpoints[0]?.lastCheck ?? "";
      }
      expect(check).toBe("skipped: EADDRNOTAVAIL: this host is out of ports, no verdict on the origin");
      // Several checks later, still up.
      await Bun.sleep(500);
      expect((await scrape(w.admin))("edgeproxy_origin_up")).toBe(1);
    } finally {
      for (const h of held) h.close();
      w.done();
    }
  });
});
