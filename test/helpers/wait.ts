import { readdirSync } from "node:fs";

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
