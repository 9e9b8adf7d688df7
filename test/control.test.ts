// The control commands against the namespace's pinned dispatcher: the
// sk_lookup demo, pinned state outliving its makers, concurrency, mismatch.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess, MAIN, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, pool, text } from "./helpers/net";
import { TestNetns } from "./helpers/netns";

let ns: TestNetns;
const children: Subprocess[] = [];

beforeEach(() => {
  ns = TestNetns.enter();
});

afterEach(async () => {
  for (const c of children.splice(0)) {
    c.kill("SIGKILL");
    await c.exited;
  }
  ns.leave();
});

/** A plain echo server in a process of its own, and the fd of its listening socket there. */
async function echoServer(port: number): Promise<{ pid: number; fd: number }> {
  const proc = Bun.spawn(
    [process.execPath, "-e", `Bun.listen({hostname:"127.0.0.1",port:${port},socket:{data(s,d){s.write(d)}}}); console.log("up"); setInterval(()=>{},1e9)`],
    { stdout: "pipe", stderr: "inherit" },
  );
  children.push(proc);
  await proc.stdout.getReader().read(); // "up"
  // What `ss -ltnp` shows: the inode of the LISTEN socket on the port, then the fd linking to it.
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const line = readFileSync("/proc/net/tcp", "utf8").split("\n").find((l) => l.trim().split(/\s+/)[3] === "0A" && l.includes(`:${hexPort} `));
  const inode = line!.trim().split(/\s+/)[9];
  const fd = readdirSync(`/proc/${proc.pid}/fd`).find((f) => readlinkSync(`/proc/${proc.pid}/fd/${f}`) === `socket:[${inode}]`);
  return { pid: proc.pid, fd: Number(fd) };
}

const ep = async (...args: string[]) => {
  const r = await runEdgeproxy(args);
  if (r.code !== 0) throw new Error(`edgeproxy ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
};

async function scan(host: string, from: number, to: number): Promise<number[]> {
  const ports = Array.from({ length: to - from + 1 }, (_, i) => from + i);
  const open = await pool(ports, 100, async (p) => ((await exchange(host, p, "", 2000)).kind === "refused" ? undefined : p));
  return open.filter((p): p is number => p !== undefined);
}

describe("control commands", () => {
  test("the sk_lookup demo: register an echo server's socket, bind 7,77,777; a scan of 1-1000 finds exactly those", async () => {
    const echo = await echoServer(7777);
    const reg = await ep("register", "echo", "--pid", String(echo.pid), "--fd", String(echo.fd));
    expect(reg).toContain(`registered`);
    await ep("bind", "echo", "tcp", "127.0.0.1/32", "7,77,777");
    // Neither command is running any more: the pinned dispatcher does the steering.
    for (const p of [7, 77, 777]) expect(text(await exchange("127.0.0.1", p, `hello ${p}`))).toBe(`hello ${p}`);
    expect(await scan("127.0.0.1", 1, 1000)).toEqual([7, 77, 777]);

    const status = JSON.parse(await ep("status", "--json"));
    const svc = status.services.find((s: { name: string }) => s.name === "echo");
    expect(svc.sockets).toEqual([{ protocol: "tcp", family: 4, pid: echo.pid, fd: echo.fd, cookie: expect.any(Number) }]);
    expect(svc.sockets[0].cookie).toBeGreaterThan(0);
    expect(svc.bindings).toEqual(["7", "77", "777"].map((ports) => ({ protocol: "tcp", prefix: "127.0.0.1/32", ports })));
    expect(BigInt(svc.counters.steered)).toBe(6n); // 3 exchanges + 3 scan hits
    expect(JSON.parse(await ep("bindings", "--json")).map((b: { ports: string }) => b.ports)).toEqual(["7", "77", "777"]);
  }, 30_000);

  test("pinned state outlives its makers; unregister refuses; down removes every program, link and map", async () => {
    const echo = await echoServer(7000);
    await ep("register", "echo", "--pid", String(echo.pid), "--fd", String(echo.fd));
    await ep("bind", "echo", "tcp", "192.0.2.0/24", "100-200");
    const dir = join(ns.bpffs, "edgeproxy", ns.inode);
    expect(readdirSync(dir).sort()).toContain("link");
    expect(text(await exchange("192.0.2.9", 150, "still here"))).toBe("still here");

    await ep("unregister", "echo");
    expect((await exchange("192.0.2.9", 150)).kind).toBe("refused"); // bound, no socket: SK_DROP, not SK_PASS
    await ep("register", "echo", "--pid", String(echo.pid), "--fd", String(echo.fd));
    expect(text(await exchange("192.0.2.9", 150, "back"))).toBe("back");

    const links = () => JSON.parse(Bun.spawnSync(["bpftool", "-j", "link", "show"]).stdout.toString()).filter((l: { netns_ino: number }) => String(l.netns_ino) === ns.inode);
    expect(links()).toHaveLength(1);
    expect(await ep("down")).toContain("removed");
    expect(existsSync(dir)).toBe(false);
    for (let i = 0; i < 100 && links().length; i++) await Bun.sleep(20);
    expect(links()).toEqual([]);
    expect((await exchange("192.0.2.9", 150)).kind).toBe("refused"); // nothing listens there without steering
    expect(await ep("status")).toContain("not loaded");
  }, 30_000);

  test("concurrent binds are serialized and both apply", async () => {
    const echo = await echoServer(7001);
    await ep("register", "echo", "--pid", String(echo.pid), "--fd", String(echo.fd));
    const runs = await Promise.all(Array.from({ length: 6 }, (_, i) => runEdgeproxy(["bind", "echo", "tcp", "192.0.2.0/24", String(1000 + i)])));
    expect(runs.map((r) => r.code)).toEqual([0, 0, 0, 0, 0, 0]);
    const ports = JSON.parse(await ep("bindings", "--json")).map((b: { ports: string }) => Number(b.ports));
    expect(ports).toEqual([1000, 1001, 1002, 1003, 1004, 1005]);
    for (const p of ports) expect(text(await exchange("192.0.2.1", p, "x"))).toBe("x");
  }, 30_000);

  test("bad usage: one line, exit 2; unknown service and absent binding: exit 2 naming them", async () => {
    for (const [args, pattern] of [
      [["bind", "echo", "sctp", "192.0.2.0/24", "80"], /bind protocol: "sctp" is not tcp or udp/],
      [["bind", "echo", "tcp", "192.0.2.0/33", "80"], /prefix length must be 0-32/],
      [["bind", "echo", "tcp", "192.0.2.0/24"], /usage: edgeproxy bind SERVICE tcp\|udp PREFIXES PORTS/],
      [["register", "echo", "--pid", "1"], /needs --pid PID and --fd FD/],
      [["bind", "echo", "tcp", "192.0.2.0/24", "80", "--bpffs"], /bind --bpffs: needs a value \(PATH\)/],
      [["status", "a", "b"], /^edgeproxy: status: usage: edgeproxy status \[SERVICE\]\n$/],
      [["unbind", "nope", "tcp", "192.0.2.0/24", "80"], /not loaded in this network namespace/],
    ] as const) {
      const r = await runEdgeproxy([...args]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(pattern);
    }
    await ep("bind", "--create", "web", "tcp", "192.0.2.0/24", "80");
    const r = await runEdgeproxy(["unbind", "web", "tcp", "192.0.2.0/24", "81"]);
    expect([r.code, r.stderr.trim()]).toEqual([2, "edgeproxy: unbind: service web has no such binding (see edgeproxy bindings)"]);
    const pid = await runEdgeproxy(["register", "web", "--pid", "999999", "--fd", "3"]);
    expect([pid.code, pid.stderr.trim()]).toEqual([2, "edgeproxy: process 999999: no such process"]);
  }, 30_000);

  test("a pinned program of another version is used as it is (status shows both tags) until upgrade-program; incompatible maps are refused", async () => {
    await ep("bind", "--create", "web", "tcp", "192.0.2.0/24", "80");
    const ours = JSON.parse(await ep("status", "--json")).tag;
    const pinDir = join(ns.bpffs, "edgeproxy", ns.inode);
    // Stand in for an older edgeproxy: another sk_lookup program at the pin.
    const dir = mkdtempSync(join(tmpdir(), "ep-old-"));
    const pinOld = () => {
      rmSync(join(pinDir, "prog"));
      expect(Bun.spawnSync(["bpftool", "prog", "load", join(dir, "old.o"), join(pinDir, "prog"), "type", "sk_lookup"]).exitCode).toBe(0);
    };
    try {
      writeFileSync(
        join(dir, "old.bpf.c"),
        `#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nSEC("sk_lookup") int ep_dispatch(struct bpf_sk_lookup *ctx) { return SK_PASS; }\nchar _license[] SEC("license") = "GPL";\n`,
      );
      const arch = process.arch === "arm64" ? "aarch64" : "x86_64";
      expect(Bun.spawnSync(["clang", "-target", "bpf", "-O2", "-g", `-I/usr/include/${arch}-linux-gnu`, "-c", join(dir, "old.bpf.c"), "-o", join(dir, "old.o")]).exitCode).toBe(0);
      pinOld();
      const status = JSON.parse(await ep("status", "--json"));
      expect(status.binaryTag).toBe(ours);
      expect(status.tag).not.toBe(ours);
      expect(await ep("status")).toContain(`(program tag ${status.tag}; this edgeproxy's is ${ours}: 'edgeproxy upgrade-program' switches to it)`);
      await ep("bind", "web", "tcp", "192.0.2.0/24", "81"); // the maps are compatible: control commands work, and do not upgrade
      expect(JSON.parse(await ep("status", "--json")).tag).toBe(status.tag);
      expect(await ep("upgrade-program")).toBe(`dispatcher program upgraded from tag ${status.tag} to ${ours} (maps kept)\n`);
      expect(JSON.parse(await ep("bindings", "--json")).map((b: { ports: string }) => b.ports)).toEqual(["80", "81"]);

      // A pinned map this edgeproxy cannot use (other map_flags), under a program of another version.
      pinOld();
      rmSync(join(pinDir, "ep_groups"));
      const mk = Bun.spawnSync(["bpftool", "map", "create", join(pinDir, "ep_groups"), "type", "hash", "key", "4", "value", "8", "entries", "4096", "name", "ep_groups", "flags", "1"]);
      expect(mk.exitCode).toBe(0);
      for (const [args, pattern] of [
        [["status"], /^edgeproxy: pinned dispatcher \S+: this edgeproxy cannot use its maps: map ep_groups: map_flags 0x1 pinned, 0x0 in this edgeproxy's program; 'edgeproxy down' removes/],
        [["upgrade-program"], /^edgeproxy: upgrade \S+: refused, nothing changed: map ep_groups: map_flags 0x1 pinned, 0x0 in the new program; 'edgeproxy down' removes/],
      ] as const) {
        const r = await runEdgeproxy([...args]);
        expect([r.code, r.stderr.trim().split("\n").length]).toEqual([2, 1]);
        expect(r.stderr).toMatch(pattern);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(await ep("down")).toContain("removed");
  }, 30_000);

  test("status shows a running serve's services with its pid, beside registered ones; its SIGTERM leaves the others", async () => {
    const origin = echoOrigin("127.0.0.1");
    try {
      const echo = await echoServer(7002);
      await ep("register", "ext", "--pid", String(echo.pid), "--fd", String(echo.fd));
      await ep("bind", "ext", "tcp", "192.0.2.0/24", "22");
      const serve = await EdgeproxyProcess.start(["--name", "web", "--ports", "80,443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
      expect(serve.stderr).toContain("dispatcher joined at");
      const status = JSON.parse(await ep("status", "--json"));
      const web = status.services.find((s: { name: string }) => s.name === "web");
      expect(web.sockets.map((s: { pid: number }) => s.pid)).toEqual([serve.pid]);
      expect(text(await exchange("192.0.2.1", 443, "web"))).toBe("web");
      expect(text(await exchange("192.0.2.1", 22, "ext"))).toBe("ext");
      expect(await serve.stop()).toBe(0);
      // serve withdrew only its own service.
      expect(JSON.parse(await ep("status", "--json")).services.map((s: { name: string }) => s.name)).toEqual(["ext"]);
      expect((await exchange("192.0.2.1", 443)).kind).toBe("refused");
      expect(text(await exchange("192.0.2.1", 22, "ext"))).toBe("ext");
    } finally {
      origin.stop(true);
    }
  }, 30_000);
});

test("large --json output arrives whole through a pipe", async () => {
  const ports = Array.from({ length: 3000 }, (_, i) => 10000 + i).join(",");
  await ep("bind", "--create", "big", "tcp", "192.0.2.0/24", ports);
  // A reader that starts late: the pipe fills, and whatever edgeproxy has not flushed when it exits is lost.
  const slow = Bun.spawn(["sh", "-c", `"$0" "$1" bindings --json | (sleep 1; cat)`, process.execPath, MAIN], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(slow.stdout).text();
  expect(await slow.exited).toBe(0);
  expect(out.length).toBeGreaterThan(128 * 1024);
  expect(JSON.parse(out)).toHaveLength(3000);
}, 30_000);
