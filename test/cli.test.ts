// The edgeproxy command: flag errors, loop refusal, environment checks,
// signals and clean teardown checked against the kernel's own listing.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { EdgeproxyProcess, ROOT, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { TestNetns } from "./helpers/netns";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expectOneLine } from "./helpers/oneline";

let ns: TestNetns;

beforeEach(() => {
  ns = TestNetns.enter();
});

afterEach(() => {
  ns.leave();
});

/** bpftool's JSON listing; undefined when the object does not exist. */
function bpftool(...args: string[]): any {
  const p = Bun.spawnSync(["bpftool", "-j", ...args]);
  return p.exitCode === 0 ? JSON.parse(p.stdout.toString() || "null") : undefined;
}

/** The kernel frees programs and maps after an RCU grace period and a workqueue: poll, bounded. */
async function gone(kind: "link" | "prog" | "map", id: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (!bpftool(kind, "show", "id", String(id))) return true;
    await Bun.sleep(20);
  }
  return false;
}


describe("edgeproxy command", () => {
  test.each([
    [["--ports", "0-5"], /--ports: "0-5": port 0 is outside 1-65535/],
    [["--ports", "70000"], /--ports: "70000": port 70000 is outside 1-65535/],
    [["--ports", "5-3"], /--ports: "5-3": range start is above its end/],
    [["--prefix", "10.0.0.0/33"], /--prefix: "10.0.0.0\/33": prefix length must be 0-32/],
    [["garbage"], /garbage: unexpected argument/],
    [["--ports", "1-10", "--bogus"], /--bogus: unknown option/],
    [["--origin", "1.2.3.4:99999"], /--origin: .*port must be 1-65535/],
  ])("bad flags %p: one line, exit 2, nothing attached", async (args, pattern) => {
    const r = await runEdgeproxy(args as string[]);
    expect(r.code).toBe(2);
    expectOneLine(r.stderr, pattern as RegExp);
    expect(bpftool("link", "show").filter((l: any) => String(l.netns_ino) === ns.inode)).toEqual([]);
  });

  test("--help and --version", async () => {
    const help = await runEdgeproxy(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("--ports LIST");
    const version = await runEdgeproxy(["--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^edgeproxy \S+\n$/);
  });

  test("an origin inside its own bindings is refused as a loop", async () => {
    const fixed = await runEdgeproxy(["--prefix", "127.0.0.1/32", "--ports", "9000-9100", "--origin", "127.0.0.1:9000"]);
    expect(fixed.code).toBe(2);
    expectOneLine(fixed.stderr, /origin 127\.0\.0\.1:9000 is inside edgeproxy's own bindings .*loop/);
    const preserving = await runEdgeproxy(["--prefix", "127.0.0.0/8", "--ports", "80,443", "--origin", "127.0.0.5"]);
    expect(preserving.code).toBe(2);
    expectOneLine(preserving.stderr, /origin 127\.0\.0\.5:80 is inside/);
    const v6 = await runEdgeproxy(["--prefix", "2001:db8::/64", "--ports", "1-65535", "--origin", "[2001:db8::1]:80"]);
    expectOneLine(v6.stderr, /origin \[2001:db8::1\]:80 is inside/);
    // The same origin outside the bound ports is fine.
    const ok = await EdgeproxyProcess.start(["--prefix", "127.0.0.1/32", "--ports", "9001-9100", "--origin", "127.0.0.1:9000"]);
    expect(await ok.stop()).toBe(0);
  }, 20_000);

  test("a udp origin inside its own udp bindings is a loop; tcp bindings on the same ports are not", async () => {
    // The default prefix and ports cover 127.0.0.1:9000: every datagram to the origin would come back as a new flow.
    const udp = await runEdgeproxy(["--mode", "udp", "--origin", "127.0.0.1:9000"]);
    expect(udp.code).toBe(2);
    expectOneLine(udp.stderr, /origin 127\.0\.0\.1:9000 is inside edgeproxy's own bindings \(udp 127\.0\.0\.1\/32\), so datagrams would loop back/);
    const preserving = await runEdgeproxy(["--mode", "udp", "--prefix", "192.0.2.0/24", "--ports", "53", "--origin", "192.0.2.9"]);
    expectOneLine(preserving.stderr, /origin 192\.0\.2\.9:53 is inside .*\(udp/);
    // A tcp service owns the tcp side of these ports only: a udp origin there is fine.
    const dir = mkdtempSync(join(tmpdir(), "ep-loop-"));
    try {
      const file = join(dir, "edgeproxy.toml");
      const bind = '[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = "53"\n';
      writeFileSync(file, `[admin]\nenabled = false\n[[service]]\nname = "t"\n${bind}[[service]]\nname = "u"\nmode = "udp"\norigin = "192.0.2.9:53"\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = "54"\n`);
      const ok = await EdgeproxyProcess.start(["--config", file]);
      expect(await ok.stop()).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 20_000);

  test("missing capabilities: one line naming them, exit 2", async () => {
    const p = Bun.spawnSync(
      ["setpriv", "--inh-caps=-all", "--bounding-set=-bpf,-net_admin,-sys_admin", process.execPath, `${ROOT}/src/main.ts`, "--prefix", "192.0.2.0/24"],
      { stderr: "pipe", timeout: 15_000 },
    );
    expect(p.exitCode).toBe(2);
    expectOneLine(p.stderr.toString(), /privileges: missing CAP_BPF, CAP_NET_ADMIN: run as root/);
  });

  test("missing libbpf: one line, exit 2", async () => {
    const r = await runEdgeproxy(["--prefix", "192.0.2.0/24"], { EDGEPROXY_LIBBPF: "/nonexistent/libbpf.so.1" });
    expect(r.code).toBe(2);
    expectOneLine(r.stderr, /load libbpf: \/nonexistent\/libbpf\.so\.1 not found: install libbpf/);
  });

  test.each(["SIGTERM", "SIGINT"] as const)("%s detaches and frees every program, link and map it made, and exits 0", async (signal) => {
    const origin = echoOrigin("127.0.0.1");
    try {
      const ep = await EdgeproxyProcess.start(["--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
      const links = bpftool("link", "show").filter((l: any) => String(l.netns_ino) === ns.inode);
      expect(links).toHaveLength(1);
      expect(links[0].attach_type).toBe("sk_lookup");
      const prog = bpftool("prog", "show", "id", String(links[0].prog_id));
      expect(prog.name).toBe("ep_dispatch");
      expect(prog.map_ids.length).toBeGreaterThanOrEqual(5);
      expect(text(await exchange("192.0.2.1", 443, "up"))).toBe("up");

      expect(await ep.stop(signal)).toBe(0);
      expect(ep.stderr).toContain(`${signal}: withdrew its services`);
      // The kernel's counters and the data plane's, for the one connection sent.
      expect(ep.stderr).toMatch(/service default: 1 lookups, 1 steered, 0 refused without a socket, 0 denied, 0 limited, 0 assign errors; 1 connections, 2 bytes in, 2 bytes out, origin errors: none/);
      expect(await gone("link", links[0].id)).toBe(true);
      expect(await gone("prog", prog.id)).toBe(true);
      for (const id of prog.map_ids) expect(await gone("map", id)).toBe(true);
      expect((await exchange("192.0.2.1", 443, "down")).kind).toBe("refused");
    } finally {
      origin.stop(true);
    }
  }, 20_000);
});
