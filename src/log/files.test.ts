import { expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AccessLogConfig } from "../config/service";
import { serviceLog } from "./access";
import { retainAccessLogs, sweepAccessLogs } from "./files";

/** This process's descriptors open on `path` (/proc/self/fd). */
const openOn = (path: string): number =>
  readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false;
    }
  }).length;

/** Wait (bounded) until `path` holds `text`. */
async function written(path: string, text: string): Promise<void> {
  for (let i = 0; i < 100 && !readFileSync(path, "utf8").includes(text); i++) await Bun.sleep(20);
  expect(readFileSync(path, "utf8")).toContain(text);
}

test("a file no service names after a reload is closed once idle, kept while named or while lines wait, opened again by a late line", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ep-logfile-"));
  try {
    const path = join(dir, "old.log");
    const config: AccessLogConfig = { path, sample: 1, connect: false, bufferBytes: 1 << 20 };
    const log = serviceLog("web", config)!;
    log.emit({ event: "first" });
    await written(path, '"first"');
    expect(openOn(path)).toBe(1);

    // Named by the running config: never closed, however idle.
    retainAccessLogs([path], 0);
    expect(sweepAccessLogs()).toBe(false);
    expect(openOn(path)).toBe(1);

    // No longer named, but a line waits for its write: kept until it is written and the file is idle.
    log.emit({ event: "waiting" });
    retainAccessLogs([join(dir, "new.log")], 0);
    expect(openOn(path)).toBe(1);
    await written(path, '"waiting"');
    for (let i = 0; i < 100 && sweepAccessLogs(); i++) await Bun.sleep(20);
    expect(openOn(path)).toBe(0);

    // A removed service's connection ends late: its line opens the path again, and is written.
    log.emit({ event: "late" });
    await written(path, '"late"');
    expect(readFileSync(path, "utf8").trim().split("\n").map((l) => JSON.parse(l).event)).toEqual(["first", "waiting", "late"]);
    for (let i = 0; i < 100 && sweepAccessLogs(); i++) await Bun.sleep(20);
    expect(openOn(path)).toBe(0);
  } finally {
    retainAccessLogs([]);
    rmSync(dir, { recursive: true, force: true });
  }
});
