import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NotifyReceiver } from "../../test/helpers/notify";
import { ConfigError } from "../errors";
import { checkPidFile, logsOf, removePidFile, sdNotify, writePidFile } from "./supervision";

const dir = mkdtempSync(join(tmpdir(), "ep-supervision-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("sd_notify", () => {
  test.each([join(dir, "notify.sock"), `@ep-notify-test-${process.pid}`])("reaches a unix datagram socket at %s", (name) => {
    const r = new NotifyReceiver(name);
    try {
      expect(sdNotify("READY=1\nMAINPID=42", name)).toBeUndefined();
      expect(r.drain()).toEqual(["READY=1\nMAINPID=42"]);
    } finally {
      r.close();
    }
  });
  test("unset: nothing to do; unusable: one reason, never a throw", () => {
    expect(sdNotify("READY=1", "")).toBeUndefined();
    expect(sdNotify("READY=1", "vsock:2:1234")).toContain("not a unix socket");
    expect(sdNotify("READY=1", join(dir, "nobody.sock"))).toContain("ENOENT");
  });
});

describe("pid file", () => {
  test("written whole, removed only while it names us", () => {
    const path = join(dir, "ep.pid");
    checkPidFile(path);
    writePidFile(path, 1234);
    expect(readFileSync(path, "utf8")).toBe("1234\n");
    removePidFile(path, 999);
    expect(existsSync(path)).toBe(true);
    removePidFile(path, 1234);
    expect(existsSync(path)).toBe(false);
  });
  test("a FIFO or a device is no pid file: read neither at start nor at exit (a FIFO's read waits for a writer, /dev/zero's never ends)", () => {
    const fifo = join(dir, "fifo.pid");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    // In a child, bounded: a read that hangs would hold this thread for good.
    const script = `const s = require(${JSON.stringify(import.meta.dir + "/supervision")}); for (const p of ${JSON.stringify([fifo, "/dev/zero"])}) { s.refuseOthersPidFile(p, "b", [{ name: "a", pid: 1, pidns: 1n, live: true }], 1n); s.removePidFile(p, 1); } console.log("done");`;
    const r = Bun.spawnSync([process.execPath, "-e", script], { timeout: 5000 });
    expect(r.stdout.toString()).toBe("done\n");
    expect(existsSync(fifo)).toBe(true);
  });
  test("a missing or unwritable directory is refused at start", () => {
    expect(() => checkPidFile(join(dir, "no/such/ep.pid"))).toThrow(ConfigError);
    writeFileSync(join(dir, "file"), "");
    expect(() => checkPidFile(join(dir, "file/ep.pid"))).toThrow(ConfigError);
  });
});

describe("logsOf: where a successor logs, in words", () => {
  test("a terminal (a pty, as a foreground serve's), and an inherited pipe", async () => {
    // script(1) gives its command a pseudo-terminal, as a shell's terminal would.
    const p = Bun.spawn(["script", "-qfec", "sleep 5", "/dev/null"], { stdin: "pipe", stdout: "ignore", stderr: "ignore" });
    try {
      let child = 0;
      for (let i = 0; i < 100 && !child; i++) {
        await Bun.sleep(20);
        child = Number(readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, "utf8").trim().split(" ")[0] || 0);
      }
      expect(logsOf(child)).toMatch(/^the terminal \/dev\/pts\/\d+, where Ctrl-C no longer stops it once this process has exited$/);
    } finally {
      p.kill("SIGKILL");
      await p.exited;
    }
    const piped = Bun.spawn(["sleep", "5"], { stderr: "pipe" });
    try {
      expect(logsOf(piped.pid)).toMatch(/^pid \d+'s stderr \((pipe|socket):\[\d+\]\)$/);
    } finally {
      piped.kill("SIGKILL");
      await piped.exited;
    }
  });
});
