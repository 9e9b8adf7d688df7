import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TEST_RUN_OPTS_SIZE } from "./object";

// BpfProgram.testRun fills struct bpf_test_run_opts by offset: check them against libbpf's header.
test("struct bpf_test_run_opts layout matches libbpf's bpf.h", () => {
  const dir = mkdtempSync(join(tmpdir(), "ep-opts-"));
  try {
    writeFileSync(
      join(dir, "opts.c"),
      `#include <stdio.h>
#include <stddef.h>
#include <bpf/bpf.h>
#define O(f) offsetof(struct bpf_test_run_opts, f)
int main(void) {
  printf("%zu %zu %zu %zu %zu %zu %zu %zu\\n", sizeof(struct bpf_test_run_opts), O(ctx_in), O(ctx_out), O(ctx_size_in), O(ctx_size_out), O(retval), O(repeat), O(duration));
  return 0;
}`,
    );
    const cc = Bun.spawnSync(["clang", "-o", join(dir, "opts"), join(dir, "opts.c")]);
    expect(cc.stderr.toString()).toBe("");
    expect(Bun.spawnSync([join(dir, "opts")]).stdout.toString().trim()).toBe(`${TEST_RUN_OPTS_SIZE} 32 40 48 52 56 60 64`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
