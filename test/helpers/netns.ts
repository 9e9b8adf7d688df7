import { closeSync, mkdtempSync, openSync, readlinkSync, rmdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { libc } from "../../src/ebpf/libc";

const CLONE_NEWNET = 0x40000000;

function sh(cmd: string[]): void {
  const p = Bun.spawnSync(cmd, { stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${p.stderr.toString().trim()}`);
}

/** Test addresses, routed to lo inside every test namespace (RFC 5737 / RFC 3849 documentation ranges). */
export const TEST_V4 = "192.0.2.0/24";
export const TEST_V6 = "2001:db8::/64";

/**
 * A fresh network namespace for the calling (JS) thread, so the test's
 * sockets and every process it spawns live there, never in the machine's
 * own namespace. Namespaces are per thread (unshare(2), setns(2)); Bun runs
 * JavaScript on the main thread, whose namespace /proc/self/ns/net shows,
 * so a child edgeproxy attaches to this namespace too.
 */
export class TestNetns {
  private readonly home: number;
  private left = false;
  readonly inode: string;
  /** A bpffs instance of this test's own, passed to children as $EDGEPROXY_BPFFS. */
  bpffs = "";
  /** A run directory of this test's own for admin sockets, passed to children as $EDGEPROXY_RUN_DIR. */
  runDir = "";
  private outerRunDir: string | undefined;
  private shadowed = false;

  private constructor(home: number) {
    this.home = home;
    this.inode = readlinkSync(`/proc/thread-self/ns/net`).replace(/\D/g, "");
  }

  static enter(): TestNetns {
    // Pinned state goes to a bpffs mounted by the test; mounts must stay out of the machine's namespace.
    // `bun run test` runs `unshare --mount bun test`: our parent is still in the original namespace.
    if (readlinkSync("/proc/self/ns/mnt") === readlinkSync(`/proc/${process.ppid}/ns/mnt`)) {
      throw new Error("kernel tests need a private mount namespace: run them with `bun run test`");
    }
    const home = openSync(`/proc/thread-self/ns/net`, "r");
    if (libc.unshare(CLONE_NEWNET) !== 0) {
      closeSync(home);
      throw new Error("unshare(CLONE_NEWNET) failed: tests need root (CAP_SYS_ADMIN)");
    }
    const ns = new TestNetns(home);
    try {
      sh(["ip", "link", "set", "lo", "up"]);
      sh(["ip", "route", "add", "local", TEST_V4, "dev", "lo"]);
      sh(["ip", "-6", "route", "add", "local", TEST_V6, "dev", "lo"]);
      ns.bpffs = mkdtempSync(join(tmpdir(), "ep-bpffs-"));
      sh(["mount", "-t", "bpf", "bpf", ns.bpffs]);
      // Also over /sys/fs/bpf (in this private mount namespace only), so a child
      // that misses $EDGEPROXY_BPFFS still cannot reach the machine's bpffs.
      sh(["mount", "--bind", ns.bpffs, "/sys/fs/bpf"]);
      ns.shadowed = true;
      process.env.EDGEPROXY_BPFFS = ns.bpffs;
      // Serves put their admin socket in the run directory by default: never the machine's /run/edgeproxy.
      ns.runDir = mkdtempSync(join(tmpdir(), "ep-run-"));
      ns.outerRunDir = process.env.EDGEPROXY_RUN_DIR;
      process.env.EDGEPROXY_RUN_DIR = ns.runDir;
    } catch (e) {
      ns.leave();
      throw e;
    }
    return ns;
  }

  /** Back to the namespace we came from; the test namespace dies with its last user. Idempotent. */
  leave(): void {
    if (this.left) return;
    this.left = true;
    if (this.shadowed) Bun.spawnSync(["umount", "/sys/fs/bpf"]);
    if (this.runDir) {
      if (this.outerRunDir === undefined) delete process.env.EDGEPROXY_RUN_DIR;
      else process.env.EDGEPROXY_RUN_DIR = this.outerRunDir;
      rmSync(this.runDir, { recursive: true, force: true });
    }
    if (this.bpffs) {
      delete process.env.EDGEPROXY_BPFFS;
      Bun.spawnSync(["umount", this.bpffs]);
      rmdirSync(this.bpffs);
    }
    const rc = libc.setns(this.home, CLONE_NEWNET);
    closeSync(this.home);
    if (rc !== 0) throw new Error("setns back to the original network namespace failed");
  }
}

/** Run fn in a namespace of its own. */
export async function inNetns<T>(fn: (ns: TestNetns) => Promise<T>): Promise<T> {
  const ns = TestNetns.enter();
  try {
    return await fn(ns);
  } finally {
    ns.leave();
  }
}

export function ip(...args: string[]): void {
  sh(["ip", ...args]);
}

/**
 * An address in the calling test's namespace whose packets go nowhere: a
 * veth whose peer is down, with a static neighbour entry so no ARP fails
 * first. A connect to it is never answered (its SYNs vanish), as with a
 * firewall that drops. Its address (198.51.100.2, RFC 5737 TEST-NET-2).
 */
export function blackhole(): string {
  ip("link", "add", "blackhole0", "type", "veth", "peer", "name", "blackhole1");
  ip("link", "set", "blackhole0", "up");
  ip("addr", "add", "198.51.100.1/24", "dev", "blackhole0");
  ip("neigh", "add", "198.51.100.2", "lladdr", "02:00:00:00:00:02", "dev", "blackhole0");
  return "198.51.100.2";
}
