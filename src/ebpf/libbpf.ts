import { dlopen, JSCallback, FFIType, type Pointer } from "bun:ffi";
import { EdgeError, EnvironmentError } from "../errors";
import { errno, errnoText, libc } from "./libc";
import { libbpfSymbols } from "./symbols";

/*
 * libbpf.so.1 through bun:ffi: the library opened once, its log kept for
 * errors (KernelError), and the checks every call site shares. Maps and
 * pins: src/ebpf/map.ts; programs, objects and links: src/ebpf/object.ts.
 */

/** A libbpf or bpf(2) call failed. Carries the errno and libbpf's (or the verifier's) log. */
export class KernelError extends EdgeError {
  readonly errno: number;
  readonly log: string;

  constructor(where: string, code: number, log = "") {
    const text = errnoText(code);
    super(where, log ? `${text}\n${log.trimEnd()}` : text, "kernel");
    this.errno = Math.abs(code);
    this.log = log;
  }
}

type Libbpf = ReturnType<typeof dlopen<typeof libbpfSymbols>>["symbols"];

let symbols: Libbpf | undefined;
// libbpf's own messages, kept instead of printed so errors can carry them.
const recentLog: string[] = [];
const logBuffer = new Uint8Array(4096);
let printCallback: JSCallback | undefined;

/** libbpf.so.1 (or $EDGEPROXY_LIBBPF), opened on first use; throws EnvironmentError when it is missing. */
export function libbpf(): Libbpf {
  if (symbols) return symbols;
  const path = process.env.EDGEPROXY_LIBBPF || "libbpf.so.1";
  try {
    symbols = dlopen(path, libbpfSymbols).symbols;
  } catch {
    throw new EnvironmentError("load libbpf", `${path} not found: install libbpf 1.x (Debian: apt-get install libbpf1)`);
  }
  // libbpf_print_fn_t is (level, const char *fmt, va_list ap); va_list reaches
  // us as a pointer on x86_64 and aarch64, so vsnprintf can format it.
  printCallback = new JSCallback(
    (level: number, format: Pointer, args: Pointer) => {
      // LIBBPF_WARN 0, LIBBPF_INFO 1, LIBBPF_DEBUG 2: debug lines are noise in an error report.
      if (level >= 2) return 0;
      const n = libc.vsnprintf(logBuffer, logBuffer.length, format, args);
      if (n <= 0) return 0;
      recentLog.push(new TextDecoder().decode(logBuffer.subarray(0, Math.min(n, logBuffer.length - 1))).trimEnd());
      if (recentLog.length > 50) recentLog.shift();
      return 0;
    },
    { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  );
  symbols.libbpf_set_print(printCallback);
  return symbols;
}

/** libbpf's messages since the last call, for error reports. */
export function takeLibbpfLog(): string {
  const text = recentLog.join("\n");
  recentLog.length = 0;
  return text;
}

export function check(where: string, rc: number): void {
  if (rc < 0) throw new KernelError(where, rc, takeLibbpfLog());
}

export function cstr(s: string): Buffer {
  return Buffer.from(`${s}\0`);
}

/** 1 supported, 0 not, negative errno when the probe itself failed (e.g. EPERM). */
export function probeProgramType(type: number): number {
  return libbpf().libbpf_probe_bpf_prog_type(type, null);
}

export function possibleCpus(): number {
  const n = libbpf().libbpf_num_possible_cpus();
  if (n <= 0) throw new KernelError("count possible CPUs", n);
  return n;
}
