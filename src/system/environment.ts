import { accessSync, constants, existsSync, readdirSync, readFileSync, statfsSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { release } from "node:os";
import { EnvironmentError } from "../errors";
import { probeProgramType } from "../ebpf/libbpf";
import { errnoText } from "./libc";
import { CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, capBit, capabilities } from "./capabilities";

const BPF_PROG_TYPE_SK_LOOKUP = 30;

/** The oldest kernel edgeproxy starts on (checkEnvironment; --help and the man page say it too). */
export const MIN_KERNEL: readonly [number, number] = [5, 14];
export const MIN_KERNEL_TEXT = `${MIN_KERNEL[0]}.${MIN_KERNEL[1]}`;

/** [major, minor] of the running kernel. */
export function kernelVersion(text = release()): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/**
 * Fail early, with one line each, when edgeproxy cannot work here: kernel
 * older than 5.14 (BPF sk_lookup arrived in 5.9, Documentation/bpf/prog_sk_lookup.rst;
 * migrating a closing listener's queue within its reuseport group, which
 * workers and upgrades rely on, in 5.14: BPF_SK_REUSEPORT_SELECT_OR_MIGRATE),
 * missing CAP_BPF / CAP_NET_ADMIN / CAP_PERFMON (netns links need
 * CAP_NET_ADMIN; loading needs CAP_BPF, or CAP_SYS_ADMIN before 5.8; without
 * CAP_PERFMON the verifier refuses ep_dispatch: "pointer arithmetic with it
 * prohibited for !root", seen running as a non-root user), or no libbpf.so.1.
 */
export function checkEnvironment(): void {
  const [major, minor] = kernelVersion();
  if (major < MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor < MIN_KERNEL[1])) {
    throw new EnvironmentError("kernel", `Linux ${release()} is too old: edgeproxy needs Linux ${MIN_KERNEL_TEXT} or later (BPF sk_lookup, reuseport socket migration)`);
  }
  const caps = capabilities().effective;
  const has = (c: number) => (caps & capBit(c)) !== 0n;
  const missing = [
    ...(has(CAP_BPF) || has(CAP_SYS_ADMIN) ? [] : ["CAP_BPF"]),
    ...(has(CAP_NET_ADMIN) ? [] : ["CAP_NET_ADMIN"]),
    ...(has(CAP_PERFMON) || has(CAP_SYS_ADMIN) ? [] : ["CAP_PERFMON"]),
  ];
  if (missing.length) {
    throw new EnvironmentError("privileges", `missing ${missing.join(", ")}: run as root or grant them (e.g. setcap cap_bpf,cap_net_admin,cap_perfmon+ep edgeproxy)`);
  }
  const probe = probeProgramType(BPF_PROG_TYPE_SK_LOOKUP);
  if (probe === 0) {
    // A container runtime's default seccomp profile may refuse bpf() to a process
    // without CAP_SYS_ADMIN (podman 4.3's does), which the probe cannot tell apart.
    const filtered = /^Seccomp:\s*2$/m.test(readFileSync("/proc/self/status", "utf8"));
    const hint = filtered ? `, or a seccomp filter refuses bpf() (in a container: --security-opt seccomp=unconfined or a profile that allows bpf)` : "";
    throw new EnvironmentError("kernel", `Linux ${release()} does not support BPF sk_lookup programs (CONFIG_BPF_SYSCALL, CONFIG_NET)${hint}`);
  }
  if (probe < 0) throw new EnvironmentError("kernel", `cannot probe for BPF sk_lookup support: ${errnoText(probe)}`);
}

const BPF_FS_MAGIC = 0xcafe4a11; // <linux/magic.h>

function isBpffs(path: string): boolean {
  try {
    return statfsSync(path).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Pinned state is read and written by whoever runs edgeproxy: every part of
 * it that exists must be readable and writable by this user (directories
 * searchable too). Checked before anything is changed, so a root-owned
 * <bpffs>/edgeproxy met by a non-root user with the capabilities is one line
 * naming the path and the fix, not an EACCES halfway through a start.
 */
export function checkPinAccess(root: string, dir: string): void {
  const { R_OK, W_OK, X_OK } = constants;
  // Before the first start only bpffs is there; when it is not mounted yet (ensureBpffs mounts it), its mount point says nothing.
  const paths = existsSync(root) ? [root, ...(existsSync(dir) ? [dir] : [])] : isBpffs(dirname(root)) ? [dirname(root)] : [];
  const check = (path: string): void => {
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) return;
    try {
      accessSync(path, st.isDirectory() ? R_OK | W_OK | X_OK : R_OK | W_OK);
    } catch (e) {
      // No owner or mode makes a read-only mount writable: chown would fail too (access(2): EROFS).
      if ((e as NodeJS.ErrnoException).code === "EROFS") throw readOnly(path, `mount -o remount,rw ${dirname(root)}, or point --bpffs / $EDGEPROXY_BPFFS at a writable bpffs`);
      const uid = process.getuid?.() ?? 0;
      const gid = process.getgid?.() ?? 0;
      const owner = `owned by uid ${st.uid}, mode 0${(st.mode & 0o7777).toString(8)}`;
      const fix = existsSync(root) ? `chown -R ${uid}:${gid} ${root}` : `mkdir ${root} && chown ${uid}:${gid} ${root}`;
      throw new EnvironmentError("permission", `${path} is not ${st.isDirectory() ? "writable" : "readable and writable"} for uid ${uid} (${owner}): ${fix}, or run edgeproxy as its owner`);
    }
  };
  for (const p of paths) check(p);
  if (existsSync(dir)) for (const entry of readdirSync(dir)) check(join(dir, entry));
}

/** `path` is on a read-only mount (EROFS): one line naming it and `fix`. */
function readOnly(path: string, fix: string): EnvironmentError {
  return new EnvironmentError("permission", `${path} is on a read-only mount (EROFS), no owner or mode makes it writable: ${fix}`);
}

/**
 * A permission error from the file system (EACCES, EPERM with a path) as one
 * line naming the path, for whatever a check before did not foresee.
 */
export function permissionProblem(e: unknown): EnvironmentError | undefined {
  const err = e as { code?: string; path?: string; syscall?: string };
  if (!(e instanceof Error) || (err.code !== "EACCES" && err.code !== "EPERM") || !err.path) return undefined;
  const uid = process.getuid?.() ?? 0;
  return new EnvironmentError("permission", `${err.syscall ?? "access"} ${err.path}: ${err.code === "EACCES" ? "permission denied" : "operation not permitted"} for uid ${uid}: make it accessible to this user (chown/chmod), or run edgeproxy as its owner`);
}

/**
 * The admin socket's directory must exist or be creatable, and be writable,
 * for this user: checked before anything starts (a supervisor's workers
 * included), so it is one line naming the directory and the fix.
 */
export function checkSocketDirectory(socket: string): void {
  const dir = dirname(socket);
  let at = dir;
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at);
  try {
    accessSync(at, constants.W_OK | constants.X_OK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EROFS") throw readOnly(`admin socket ${socket}: ${at}`, "put the admin socket on a writable file system ($EDGEPROXY_RUN_DIR or --admin PATH)");
    const uid = process.getuid?.() ?? 0;
    const st = statSync(at);
    const owner = `owned by uid ${st.uid}, mode 0${(st.mode & 0o7777).toString(8)}`;
    const fix = at === dir ? `chown ${uid} ${dir}` : `install -d -o ${uid} -m 0700 ${dir}`;
    throw new EnvironmentError("permission", `admin socket ${socket}: ${at} is not writable for uid ${uid} (${owner}): ${fix}, or put the admin socket in a directory this user owns`);
  }
}
