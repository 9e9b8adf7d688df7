// `edgeproxy status` (issue 17 item 3) against a real edgeproxy in its own
// netns: each service's bindings (prefixes and ports), its origins with
// health, open connections and rates from the live instance; a service no
// live instance runs shows what the pins say, its rates marked unavailable;
// `--json` counters are JSON numbers; `status SERVICE` shows one.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_ENGINE, EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";

const f = proxyFixture();

/** A connection through edgeproxy that echoed once and stays open. */
function held(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    const timer = setTimeout(() => (s.destroy(), reject(new Error(`no echo from ${host}:${port} in 5 s`))), 5_000);
    s.once("error", reject);
    s.once("data", () => (clearTimeout(timer), resolve(s)));
    s.write("hello");
  });
}

interface StatusJson {
  services: {
    name: string;
    bindings: { protocol: string; prefix: string; ports: string }[];
    counters: Record<string, unknown>;
    limited: Record<string, unknown>;
    instance: string | null;
    mode: string | null;
    engine: string | null;
    open: number | null;
    origins: { origin: string; healthy: boolean; up: number; endpoints: number; active: number }[];
    rates: { connections: number; bytes: number; errors: Record<string, number> } | null;
  }[];
  unmatchedLookups: unknown;
  instances: { name: string; live: boolean; services: string[] }[];
  answering: { instance: string }[];
  clients: Record<string, { available: boolean; top: { address: string; connections: number }[] }>;
}

describe("status", () => {
  test("bindings, origins with health, open connections, rates; --json numbers; status SERVICE", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-status-"));
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    // web: an echo origin and one nobody listens on (port 9), checked every 200 ms so it is seen DOWN.
    const config = join(dir, "edge.toml");
    writeFileSync(
      config,
      `workers = 2\n\n[[service]]\nname = "web"\norigins = ["127.0.0.1:${origin.port}", "127.0.0.1:9"]\n` +
        `[service.health]\ninterval = "200ms"\ntimeout = "100ms"\nfall = 1\n` +
        `[[service.bind]]\nprefixes = ["192.0.2.0/24", "2001:db8::/64"]\nports = "7000-7009,7100"\n`,
    );
    f.ep = await EdgeproxyProcess.start(["--config", config]);
    // A service of the pins only: bound by hand, no process runs it.
    const bound = await runEdgeproxy(["bind", "ext", "tcp", "198.51.100.0/24", "9000-9001", "--create"]);
    expect(bound.stderr).toBe("");
    expect(bound.code).toBe(0);

    // The dead origin is found DOWN; then two connections stay open on the live one.
    const deadline = Date.now() + 10_000;
    let json: StatusJson;
    for (;;) {
      const r = await runEdgeproxy(["status", "--json"]);
      expect(r.code).toBe(0);
      json = JSON.parse(r.stdout) as StatusJson;
      const web = json.services.find((s) => s.name === "web");
      if (web?.origins.some((o) => !o.healthy)) break;
      if (Date.now() > deadline) throw new Error(`origin 127.0.0.1:9 not seen down in 10 s: ${r.stdout}`);
      await Bun.sleep(200);
    }
    for (let i = 0; i < 5; i++) expect(text(await exchange("192.0.2.1", 7001, "x".repeat(100), 5000))).toBe("x".repeat(100));
    const open = [await held("192.0.2.1", 7000), await held("2001:db8::1", 7100)];
    try {
      // The live figures are the instance's once-a-second reading (src/admin/dashboard.ts), and the busiest
      // clients reach it from each worker's data plane thread (a copy at most every 250 ms): let one reading pass,
      // then read until both clients are there (bounded: on a loaded machine one reading can come late).
      await Bun.sleep(1_500);
      const until = Date.now() + 10_000;
      for (;;) {
        const r = await runEdgeproxy(["status", "--json"]);
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        json = JSON.parse(r.stdout) as StatusJson;
        if ((json.clients.edge?.top.length ?? 0) >= 2 || Date.now() > until) break;
        await Bun.sleep(250);
      }
      expect(json.services.map((s) => s.name).sort()).toEqual(["ext", "web"]);
      const web = json.services.find((s) => s.name === "web")!;
      // Every binding, not a count: both prefixes, each port range.
      expect(web.bindings).toEqual([
        { protocol: "tcp", prefix: "192.0.2.0/24", ports: "7000-7009" },
        { protocol: "tcp", prefix: "192.0.2.0/24", ports: "7100" },
        { protocol: "tcp", prefix: "2001:db8::/64", ports: "7000-7009" },
        { protocol: "tcp", prefix: "2001:db8::/64", ports: "7100" },
      ]);
      expect(web.instance).toBe("edge");
      expect(web.mode).toBe("tcp");
      expect(web.engine).toBe(DEFAULT_ENGINE);
      expect(web.open).toBe(2);
      expect(web.origins).toEqual([
        { origin: `127.0.0.1:${origin.port}`, healthy: true, up: 1, endpoints: 1, active: 2 },
        { origin: "127.0.0.1:9", healthy: false, up: 0, endpoints: 1, active: 0 },
      ]);
      // Rates from two readings a second apart: numbers (their values depend on when the sampler read).
      expect(web.rates).not.toBeNull();
      expect(typeof web.rates!.connections).toBe("number");
      expect(typeof web.rates!.bytes).toBe("number");
      // Counters are JSON numbers, as counted: 7 steered connections at least (5 exchanges, 2 held).
      for (const v of [...Object.values(web.counters), ...Object.values(web.limited), json.unmatchedLookups]) expect(typeof v).toBe("number");
      expect(web.counters.steered as number).toBeGreaterThanOrEqual(7);
      expect(web.counters.lookups as number).toBeGreaterThanOrEqual(web.counters.steered as number);
      const ext = json.services.find((s) => s.name === "ext")!;
      expect(ext.bindings).toEqual([{ protocol: "tcp", prefix: "198.51.100.0/24", ports: "9000-9001" }]);
      expect(ext).toMatchObject({ instance: null, mode: null, engine: null, open: null, origins: [], rates: null });
      // The serves answering, and the instances the pins record (ext is no instance's: bound by hand).
      expect(json.answering.map((i) => i.instance)).toEqual(["edge"]);
      expect(json.instances.map((i) => [i.name, i.live, i.services])).toEqual([["edge", true, ["web"]]]);
      // The instance's busiest clients (both workers' counts): 5 exchanges and one held connection from 192.0.2.1, one over IPv6 (from the source address the kernel picks).
      expect(json.clients.edge!.top.map((c) => [c.address, c.connections])).toEqual([["192.0.2.1", 6], [expect.stringContaining(":"), 1]]);

      // The table: bindings with prefixes and ports, origins with health, open connections.
      const human = await runEdgeproxy(["status"]);
      expect(human.code).toBe(0);
      const out = human.stdout;
      expect(out).toMatch(new RegExp(`^web\\s+tcp/${DEFAULT_ENGINE}\\s+edge\\s+2\\s+\\S+\\s+\\S+B\\s+\\S+\\s+1/2\\s+\\d+\\s+\\d+`, "m"));
      expect(out).toMatch(/^ext\s+external\s+-\s+-\s+-\s+-\s+-\s+-\s+/m);
      expect(out).toContain("unavailable");
      expect(out).toMatch(/^web\s+tcp\s+2001:db8::\/64\s+7100$/m);
      expect(out).toMatch(/^ext\s+tcp\s+198\.51\.100\.0\/24\s+9000-9001$/m);
      expect(out).toMatch(new RegExp(`^web\\s+127\\.0\\.0\\.1:${origin.port}\\s+healthy\\s+1/1\\s+2$`, "m"));
      expect(out).toMatch(/^web\s+127\.0\.0\.1:9\s+DOWN\s+0\/1\s+0$/m);
      expect(out).toMatch(/^instance edge: busiest clients \(new connections, last \d+ s\):\nCLIENT\s+CONNECTIONS\s+±\s+REFUSED\s+BYTES\n192\.0\.2\.1\s+6\s+1\.00kB\n[\da-f:]+\s+1\s+0B$/m);

      // One service.
      const one = await runEdgeproxy(["status", "web", "--json"]);
      expect(one.code).toBe(0);
      expect((JSON.parse(one.stdout) as StatusJson).services.map((s) => s.name)).toEqual(["web"]);
      const oneHuman = await runEdgeproxy(["status", "ext"]);
      expect(oneHuman.stdout).not.toMatch(/^web\s/m);
      expect(oneHuman.stdout).not.toContain("busiest clients"); // instance-wide: not a service's
      expect(oneHuman.stdout).toMatch(/^ext\s+tcp\s+198\.51\.100\.0\/24/m);
      for (const [args, pattern] of [
        [["status", "nope"], /^edgeproxy: status nope: no such service \(see edgeproxy status\)\n$/],
        [["status", "a", "b"], /^edgeproxy: status: usage: edgeproxy status \[SERVICE\]\n$/],
      ] as const) {
        const bad = await runEdgeproxy([...args]);
        expect(bad.code).toBe(2);
        expect(bad.stderr).toMatch(pattern);
      }
    } finally {
      for (const s of open) s.destroy();
    }
    expect((await runEdgeproxy(["unbind", "ext", "tcp", "198.51.100.0/24", "9000-9001"])).code).toBe(0);
  }, 60_000);
});
