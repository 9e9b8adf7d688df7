// The single binary: built by the one build command, the BPF object embedded,
// serving the built-in default with nothing but libbpf.so.1 from the host.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { builtBinary, EdgeproxyProcess } from "./helpers/edgeproxy";
import { exchange, text } from "./helpers/net";
import { TestNetns } from "./helpers/netns";
import { udpExchange, udpText } from "./helpers/udp";

let ns: TestNetns;
let dir: string;

beforeAll(() => {
  // Run a copy from an empty directory: nothing from the source tree may be needed.
  dir = builtBinary().dir;
  ns = TestNetns.enter();
}, 120_000);

afterAll(() => {
  ns.leave();
  rmSync(dir, { recursive: true, force: true });
});

test("./edgeproxy --version names the build", () => {
  const p = Bun.spawnSync([join(dir, "edgeproxy"), "--version"], { cwd: dir });
  expect(p.exitCode).toBe(0);
  expect(p.stdout.toString()).toMatch(/^edgeproxy \d+\.\d+\.\d+/);
});

test("./edgeproxy with no origin serves the embedded responder on every port of the prefix", async () => {
  expect(existsSync(join(dir, "dist"))).toBe(false);
  const ep = await EdgeproxyProcess.start(["--ports", "1-65535", "--prefix", "192.0.2.0/24"], {}, [join(dir, "edgeproxy")]);
  try {
    const page = text(await exchange("192.0.2.44", 4242, "GET / HTTP/1.0\r\nAccept: application/json\r\n\r\n"));
    expect(page).toMatch(/^HTTP\/1\.0 200/);
    expect(page).toContain('"destination":"192.0.2.44:4242"');
    expect(text(await exchange("192.0.2.45", 1, "echo me"))).toBe("echo me");
  } finally {
    expect(await ep.stop()).toBe(0);
  }
}, 30_000);

test("./edgeproxy --mode udp runs its UDP worker from inside the binary and echoes", async () => {
  const ep = await EdgeproxyProcess.start(["--mode", "udp", "--ports", "1-65535", "--prefix", "192.0.2.0/24"], {}, [join(dir, "edgeproxy")]);
  try {
    expect(udpText(await udpExchange("192.0.2.46", 5353, "datagram"))).toBe("datagram");
  } finally {
    expect(await ep.stop()).toBe(0);
  }
}, 30_000);
