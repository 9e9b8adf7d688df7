// The raw-socket engine (engine = "epoll", src/engine/), the default data
// plane of tcp relay services: the shared tcp relay suite (tcp-relay.case.ts)
// on it, and what only the engine says.
import { expect, test } from "bun:test";
import { proxyFixture } from "./helpers/fixture";
import { tcpRelayCases } from "./tcp-relay.case";

tcpRelayCases(proxyFixture(), "epoll");

test("--engine epoll with what it cannot run yet is one clear line, exit 2", async () => {
  for (const [args, why] of [
    [["--mode", "udp", "--origin", "127.0.0.1:80"], "is for tcp and http services; a udp service has one data plane of its own"],
    [["--origin", "127.0.0.1:443", "--origin-tls", "insecure"], "does not speak TLS to origins yet"],
  ] as const) {
    const p = Bun.spawnSync([process.execPath, "src/main.ts", "--engine", "epoll", ...args], { stderr: "pipe" });
    expect(p.exitCode).toBe(2);
    const err = p.stderr.toString().trim();
    expect(err.split("\n")).toHaveLength(1);
    expect(err).toContain(`--engine: "epoll" ${why}`);
  }
});
