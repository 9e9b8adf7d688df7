import { expect } from "bun:test";
import { readdirSync } from "node:fs";
import { scrape } from "./pools";

/** Wait until `ok()` holds (checked every 20 ms) or `ms` pass; whether it held. */
export async function until(ok: () => Promise<boolean> | boolean, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await ok()) return true;
    await Bun.sleep(20);
  }
  return ok();
}

/** The open descriptors of process `pid` (/proc/PID/fd): a leak shows as more after than before. */
export const fdCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

/**
 * The proxy behind admin socket `admin` (process `pid`) is back where it was: no connection open
 * (connections_active of service "p") and no more descriptors than `fds`, each within 3 s.
 */
export async function settled(admin: string, pid: number, fds: number): Promise<void> {
  expect(await until(async () => (await scrape(admin))("edgeproxy_connections_active") === 0, 3000)).toBe(true);
  const ok = await until(() => fdCount(pid) <= fds, 3000);
  if (!ok) console.log(`descriptors: ${fds} before, now:\n${Bun.spawnSync(["ls", "-l", `/proc/${pid}/fd`]).stdout}`);
  expect(ok).toBe(true);
}
