// Control commands find the running instance (issue 16 items 5, 8, 9): every
// serve answers on <run dir>/<instance>.sock by default; reload, upgrade,
// health, status and drain pick the only live one or take --instance; a pid
// file and sd_notify follow an in-place upgrade; the supervisor forwards
// admin requests whole and names what a reload cannot apply.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import { NotifyReceiver } from "./helpers/notify";

const f = proxyFixture();

/** Running (a zombie child of an exited leader counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

async function gone(pid: number, ms = 15_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid) && Date.now() < deadline) await Bun.sleep(20);
  return !alive(pid);
}

/** Stop an upgrade's successor (not our child: by pid) and wait for it. */
async function stopPid(pid: number): Promise<void> {
  if (alive(pid)) process.kill(pid, "SIGTERM");
  expect(await gone(pid)).toBe(true);
}

const runDir = () => process.env.EDGEPROXY_RUN_DIR!;
const successorOf = (stdout: string) => Number(/new edgeproxy pid (\d+) serves/.exec(stdout)?.[1]);

function configFile(dir: string, name: string, top: string, ports: string): string {
  const path = join(dir, `${name}.toml`);
  writeFileSync(path, `${top}\n[[service]]\nname = "${name}"\norigin = "127.0.0.1:${ports.split(":")[1]}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["${ports.split(":")[0]}"]\n`);
  return path;
}

describe("control commands without --admin", () => {
  test("a flag-started serve: health, status, reload (no file: one line), upgrade, drain find it in the run directory", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--ports", "7000-7009", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--drain-timeout", "2s"]);
    const socket = join(runDir(), "default.sock");
    expect(f.ep.stderr).toContain(`admin API on unix:${socket}`);
    expect(statSync(socket).mode & 0o777).toBe(0o600);

    expect(await runEdgeproxy(["health"])).toMatchObject({ code: 0, stdout: "ok\n", stderr: "" });
    const status = await runEdgeproxy(["status"]);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`instance default: pid ${f.ep.pid}, 1 worker(s), started from flags, admin socket ${socket}`);

    const reload = await runEdgeproxy(["reload"]);
    expect(reload.code).toBe(2);
    expect(reload.stderr.trim().split("\n")).toHaveLength(1);
    expect(reload.stderr).toContain("there is no file to re-read");

    const up = await runEdgeproxy(["upgrade"]);
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    const next = successorOf(up.stdout);
    // Where the successor runs and where it logs, in one line (here: the pipe the test reads).
    expect(up.stdout.trim().split("\n")).toHaveLength(1);
    expect(up.stdout).toMatch(new RegExp(`serves and logs to pid ${f.ep.pid}'s stderr \\((pipe|socket):\\[\\d+\\]\\)`));
    try {
      // The old process says it in its own log too (a terminal that started it learns where the successor went).
      expect(f.ep.stderr).toContain(`edgeproxy: new edgeproxy pid ${next} serves and logs to`);
      expect(text(await exchange("192.0.2.9", 7003, "after upgrade"))).toBe("after upgrade");
      expect(await gone(f.ep.pid)).toBe(true);
      // The successor took the socket over: the commands now find it.
      expect((await runEdgeproxy(["status", "--json"])).stdout).toContain(`"pid":${next}`);
      const drain = await runEdgeproxy(["drain"]);
      expect(drain).toMatchObject({ code: 0, stderr: "" });
      expect(drain.stdout).toContain(`draining: pid ${next} takes no new connections`);
      expect(await gone(next)).toBe(true);
      expect(existsSync(socket)).toBe(false);
    } finally {
      await stopPid(next);
    }
  }, 60_000);

  test("a config-started serve (its socket named after the file): health, status, reload, upgrade", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-inst-"));
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      const file = configFile(dir, "web", "", `7000-7009:${origin.port}`);
      f.ep = await EdgeproxyProcess.start(["--config", file]);
      const socket = join(runDir(), "web.sock");
      expect(f.ep.stderr).toContain(`admin API on unix:${socket}`);
      expect(await runEdgeproxy(["health"])).toMatchObject({ code: 0, stdout: "ok\n" });
      expect((await runEdgeproxy(["status"])).stdout).toContain(`instance web: pid ${f.ep.pid}, 1 worker(s), config ${file}, admin socket ${socket}`);
      const reload = await runEdgeproxy(["reload"]);
      expect(reload).toMatchObject({ code: 0, stdout: "reloaded: no change\n", stderr: "" });
      const up = await runEdgeproxy(["upgrade"]);
      expect(up.code).toBe(0);
      const next = successorOf(up.stdout);
      try {
        expect(await gone(f.ep.pid)).toBe(true);
        expect(text(await exchange("192.0.2.9", 7001, "web"))).toBe("web");
        expect(await runEdgeproxy(["health", "--instance=web"])).toMatchObject({ code: 0, stdout: "ok\n" });
      } finally {
        await stopPid(next);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("two live instances: a command without --instance lists them in one line, exit 2; --instance picks one", async () => {
    const origin = echoOrigin("127.0.0.1");
    f.servers.push(origin);
    const start = (name: string, ports: string) =>
      EdgeproxyProcess.start(["--instance", name, "--name", name, "--ports", ports, "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`]);
    f.ep = await start("a", "7000-7009");
    const b = await start("b", "7100-7109");
    try {
      for (const command of ["health", "reload", "upgrade", "drain"]) {
        const r = await runEdgeproxy([command]);
        expect(r.code).toBe(2);
        expect(r.stdout).toBe("");
        expect(r.stderr).toBe(
          `edgeproxy: ${command}: 2 live instances: a (pid ${f.ep.pid}, ${join(runDir(), "a.sock")}), b (pid ${b.pid}, ${join(runDir(), "b.sock")}); choose one with --instance NAME\n`,
        );
      }
      expect(await runEdgeproxy(["health", "--instance", "b"])).toMatchObject({ code: 0, stdout: "ok\n" });
      expect(await runEdgeproxy(["health", "--instance=c"])).toMatchObject({ code: 1 });
      expect((await runEdgeproxy(["reload", "--instance=a"])).stderr).toContain("there is no file to re-read");
      // status shows the whole namespace and both instances; --instance only that one's services.
      const all = await runEdgeproxy(["status"]);
      expect(all.stdout).toContain(`instance a: pid ${f.ep.pid}`);
      expect(all.stdout).toContain(`instance b: pid ${b.pid}`);
      const onlyB = JSON.parse((await runEdgeproxy(["status", "--json", "--instance", "b"])).stdout);
      expect(onlyB.services.map((s: { name: string }) => s.name)).toEqual(["b"]);
      expect(onlyB.answering.map((i: { instance: string }) => i.instance)).toEqual(["b"]);
      expect(onlyB.instances.map((i: { name: string }) => i.name)).toEqual(["b"]);
      // Draining one leaves the other serving.
      expect((await runEdgeproxy(["drain", "--instance", "b"])).code).toBe(0);
      expect(await gone(b.pid)).toBe(true);
      expect(text(await exchange("192.0.2.9", 7005, "a serves"))).toBe("a serves");
      expect(await runEdgeproxy(["health"])).toMatchObject({ code: 0, stdout: "ok\n" });
    } finally {
      await b.stop();
    }
  }, 60_000);
});

describe("under a service manager", () => {
  test.each([1, 2])("--workers %d: --pid-file and sd_notify (READY, MAINPID, STOPPING) follow an in-place upgrade", async (workers) => {
    const dir = mkdtempSync(join(tmpdir(), "ep-notify-"));
    // An abstract name, as systemd may give; the workers must not speak on it.
    const notify = new NotifyReceiver(`@ep-test-notify-${process.pid}-${Date.now()}`);
    let next = 0;
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      const pidFile = join(dir, "edgeproxy.pid");
      f.ep = await EdgeproxyProcess.start(
        ["--workers", String(workers), "--pid-file", pidFile, "--ports", "7000-7009", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--drain-timeout", "2s"],
        { NOTIFY_SOCKET: notify.name },
      );
      const first = f.ep.pid;
      expect(readFileSync(pidFile, "utf8")).toBe(`${first}\n`);
      await notify.waitFor((m) => m.includes("READY=1") && m.includes(`MAINPID=${first}`));

      const up = await runEdgeproxy(["upgrade"]);
      expect(up.code).toBe(0);
      next = successorOf(up.stdout);
      expect(up.stdout).toContain(`pid ${first} ${workers > 1 ? "and its workers drain" : "drains"}`);
      // The successor says it serves, and the old supervisor hands the unit over to it.
      await notify.waitFor((m) => m.includes("READY=1") && m.includes(`MAINPID=${next}`));
      await notify.waitFor((m) => m.startsWith(`MAINPID=${next}\n`));
      expect(readFileSync(pidFile, "utf8")).toBe(`${next}\n`);
      expect(await gone(first)).toBe(true);
      // The old one left without removing the successor's pid file or saying STOPPING=1.
      expect(readFileSync(pidFile, "utf8")).toBe(`${next}\n`);
      expect(notify.drain().filter((m) => m.includes("STOPPING=1"))).toEqual([]);
      // Only the two leaders ever spoke (never a worker).
      const pids = new Set(notify.messages.flatMap((m) => [.../MAINPID=(\d+)/.exec(m)?.slice(1) ?? []]).map(Number));
      expect([...pids].sort()).toEqual([first, next].sort());

      expect(text(await exchange("192.0.2.9", 7002, "successor"))).toBe("successor");
      process.kill(next, "SIGTERM");
      expect(await gone(next)).toBe(true);
      await notify.waitFor((m) => m.includes("STOPPING=1"));
      expect(existsSync(pidFile)).toBe(false);
    } finally {
      if (next) await stopPid(next);
      notify.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("through the supervisor", () => {
  test("admin requests are forwarded whole (a DELETE's query string); reload names a changed workers count", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-sup-"));
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      const file = configFile(dir, "web", "workers = 2", `7000-7009:${origin.port}`);
      f.ep = await EdgeproxyProcess.start(["--config", file]);
      const socket = join(runDir(), "web.sock");
      const api = (path: string, init: RequestInit = {}) => fetch(`http://localhost${path}`, { ...init, unix: socket } as RequestInit);

      const add = await api("/services/web/bindings", { method: "POST", body: JSON.stringify({ protocol: "tcp", prefix: "192.0.2.0/24", ports: "7500" }) });
      expect(add.status).toBe(201);
      expect(text(await exchange("192.0.2.9", 7500, "added"))).toBe("added");
      const del = await api("/services/web/bindings?protocol=tcp&prefix=192.0.2.0/24&ports=7500", { method: "DELETE" });
      expect(del.status).toBe(204);
      expect((await exchange("192.0.2.9", 7500, "gone", 2000)).kind).toBe("refused");
      // A GET's query string too: Hono routes ignore it, but it reaches the worker.
      expect((await api("/services/web?x=1")).status).toBe(200);

      writeFileSync(file, readFileSync(file, "utf8").replace("workers = 2", "workers = 3"));
      const r = await runEdgeproxy(["reload"]);
      expect(r).toMatchObject({ code: 0, stderr: "" });
      expect(r.stdout).toBe("reloaded: no change; not applied, need a restart or 'edgeproxy upgrade': workers 2 → 3\n");
      const workers = (await (await api("/workers")).json()) as unknown[];
      expect(workers).toHaveLength(2);
      // SIGHUP says the same in the log.
      f.ep.proc.kill("SIGHUP");
      const deadline = Date.now() + 5_000;
      while (!f.ep.stderr.includes("workers 2 → 3") && Date.now() < deadline) await Bun.sleep(20);
      expect(f.ep.stderr).toContain("reload; not applied, need a restart or 'edgeproxy upgrade': workers 2 → 3");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
