// edgeproxy defaults to one worker process per CPU. Most tests are about one
// data plane and read its figures from one process, so they run one worker
// unless they ask for more (--workers N, as test/workers.test.ts does).
process.env.EDGEPROXY_WORKERS ??= "1";

// Serves get an admin socket in $EDGEPROXY_RUN_DIR (default /run/edgeproxy)
// by default: tests never touch the machine's. Kernel tests set one of their
// own per test (TestNetns); this one catches everything else. Bun.spawn passes
// children the environment the test process started with, not process.env,
// so `bun run test` sets it before bun starts; this covers a bare `bun test`.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
if (!process.env.EDGEPROXY_RUN_DIR) {
  const dir = mkdtempSync(join(tmpdir(), "ep-run-"));
  process.env.EDGEPROXY_RUN_DIR = dir;
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
}
