import { join } from "node:path";
import { ROOT } from "./edgeproxy";

/** bpf/dispatcher.bpf.c built as build/build.ts builds it, plus -D`define` (see EP_TEST_* in the source), into `dir`. */
export function compileDispatcherVariant(dir: string, define: string): string {
  const arch = process.arch === "arm64" ? "aarch64" : "x86_64";
  const out = join(dir, `${define}.o`);
  const cc = Bun.spawnSync(
    ["clang", "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", `-I/usr/include/${arch}-linux-gnu`, `-D${define}`, "-c", join(ROOT, "bpf/dispatcher.bpf.c"), "-o", out],
    { stderr: "pipe" },
  );
  if (cc.exitCode !== 0) throw new Error(`clang -D${define}: ${cc.stderr}`);
  return out;
}
