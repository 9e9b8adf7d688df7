import { chmodSync, existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/*
 * What the access log's end-to-end tests (test/access-log*.test.ts) share:
 * how they start edgeproxy, a line's time format, and reading the lines back.
 */

/** edgeproxy with 2 workers: lines from several processes into one file. */
export const WORKERS = ["--workers", "2"];
export const RFC3339_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

export type Line = Record<string, any>;

/** The lines of `file` once `want` of them are there (lines are batched: up to a fifth of a second late), bounded in time. */
export async function linesOf(file: string, want: number, timeoutMs = 5_000): Promise<Line[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const raw = existsSync(file) ? readFileSync(file, "utf8") : "";
    const lines = raw.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Line);
    if (lines.length >= want || Date.now() > until) return lines;
    await Bun.sleep(50);
  }
}

/** A new directory for a log, readable by all (the workers write there). */
export function logDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-accesslog-"));
  chmodSync(dir, 0o755);
  return dir;
}
