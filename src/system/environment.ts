import { readFileSync } from "node:fs";
import { release } from "node:os";
import { EnvironmentError } from "../errors";
import { probeProgramType } from "../ebpf/libbpf";
import { errnoText } from "./libc";

const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;
const CAP_PERFMON = 38;
const CAP_BPF = 39;
const BPF_PROG_TYPE_SK_LOOKUP = 30;

function effectiveCapabilities(): bigint {
  const status = readFileSync("/proc/self/status", "utf8");
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

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
  if (major < 5 || (major === 5 && minor < 14)) {
    throw new EnvironmentError("kernel", `Linux ${release()} is too old: edgeproxy needs Linux 5.14 or later (BPF sk_lookup, reuseport socket migration)`);
  }
  const caps = effectiveCapabilities();
  const has = (c: number) => (caps & (1n << BigInt(c))) !== 0n;
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
