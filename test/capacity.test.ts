// The connection cap: beyond it new connections are refused by the kernel
// (steering is paused), never left to spin on accept() at the open-file limit.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { readFileSync } from "node:fs";
import { EdgeproxyProcess, MAIN, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { echoOrigin, exchange, text } from "./helpers/net";

const f = proxyFixture();

/** An open connection through the proxy, proven by one echoed byte. */
function hold(port: number): Promise<Socket | "refused"> {
  return new Promise((resolve) => {
    Bun.connect({
      hostname: "192.0.2.1",
      port,
      socket: {
        open: (s) => void s.write("x"),
        data: (s) => resolve(s),
        close: () => resolve("refused"),
        connectError: () => resolve("refused"),
      },
    }).catch(() => resolve("refused"));
  });
}

const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime
};

describe("connection cap", () => {
  test("--max-connections: over the cap refused, room again after some close", async () => {
    f.servers.push(echoOrigin("127.0.0.1"));
    f.ep = await EdgeproxyProcess.start(["--ports", "1000-2000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${f.servers[0]!.port}`, "--max-connections", "20"]);
    expect(f.ep.stderr).toContain("at most 20 open connections");
    const held: Socket[] = [];
    for (let i = 0; i < 20; i++) {
      const s = await hold(1000 + i);
      expect(s).not.toBe("refused");
      held.push(s as Socket);
    }
    for (let i = 0; i < 5; i++) expect((await exchange("192.0.2.1", 1500 + i, "over")).kind).toBe("refused");
    held.pop()!.end();
    let back = "";
    for (let i = 0; i < 100 && back !== "again"; i++) {
      await Bun.sleep(20);
      back = text(await exchange("192.0.2.1", 1600, "again"));
    }
    expect(back).toBe("again");
    expect(f.ep.stderr).toMatch(/at --max-connections 20: refusing new connections[^]*below --max-connections 20: accepting again/);
    for (const s of held) s.end();
  }, 30_000);

  test("a low open-file limit caps connections instead of spinning on accept()", async () => {
    f.servers.push(echoOrigin("127.0.0.1"));
    // 150 descriptors: (150 - 100 reserved) / 2 = 25 connections.
    f.ep = await EdgeproxyProcess.start(["--ports", "1000-2000", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${f.servers[0]!.port}`], {}, [
      "prlimit",
      "--nofile=150",
      "--",
      process.execPath,
      MAIN,
    ]);
    expect(f.ep.stderr).toContain("at most 25 open connections");
    const results = [];
    for (let i = 0; i < 80; i++) results.push(await hold(1000 + i)); // 160 descriptors: past the limit
    const open = results.filter((r) => r !== "refused") as Socket[];
    expect(open).toHaveLength(25);
    // Idle now; a process spinning on EMFILE would burn a whole core.
    const t0 = cpuTicks(f.ep.pid);
    await Bun.sleep(1000);
    expect(cpuTicks(f.ep.pid) - t0).toBeLessThan(30);
    for (const s of open) s.end();
  }, 30_000);

  test("--max-connections above what the open-file limit allows is a config error", async () => {
    const r = await runEdgeproxy(["--prefix", "192.0.2.0/24", "--max-connections", "99999999"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/--max-connections: 99999999 connections and 0 UDP flows need .* open-file limit is \d+/);
  });
});
