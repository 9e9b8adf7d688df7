// The libbpf binding's failure reports, against the real kernel.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KernelError } from "../src/ebpf/libbpf";
import { BpfObject } from "../src/ebpf/object";
import { TestNetns } from "./helpers/netns";

let dir: string;
let ns: TestNetns;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "ep-ebpf-"));
  ns = TestNetns.enter();
});

afterAll(() => {
  ns.leave();
  rmSync(dir, { recursive: true, force: true });
});

function compile(name: string, source: string): Uint8Array {
  const src = join(dir, `${name}.bpf.c`);
  writeFileSync(src, source);
  const arch = process.arch === "arm64" ? "aarch64" : "x86_64";
  const cc = Bun.spawnSync(["clang", "-target", "bpf", "-O2", "-g", `-I/usr/include/${arch}-linux-gnu`, "-c", src, "-o", `${src}.o`], { stderr: "pipe" });
  if (cc.exitCode !== 0) throw new Error(cc.stderr.toString());
  return new Uint8Array(readFileSync(`${src}.o`));
}

test("a program the verifier rejects: what failed, the errno text and the verifier's log", () => {
  const image = compile(
    "bad",
    `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("sk_lookup")
int bad(struct bpf_sk_lookup *ctx) {
  return *(volatile __u32 *)((char *)ctx + 4096); /* far outside the context */
}
char _license[] SEC("license") = "GPL";`,
  );
  const obj = BpfObject.open(image);
  try {
    obj.program("bad");
    let err: unknown;
    try {
      obj.load();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    const k = err as KernelError;
    expect(k.message).toStartWith("load BPF object: Permission denied (EACCES)");
    expect(k.errno).toBe(13);
    expect(k.fault).toBe("kernel");
    expect(k.log).toContain("invalid bpf_context access");
  } finally {
    obj.close();
    obj.close();
  }
});

test("an object that is not ELF: a clear error, not a crash", () => {
  let err: unknown;
  try {
    BpfObject.open(new Uint8Array([1, 2, 3, 4]));
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(KernelError);
  expect((err as KernelError).message).toMatch(/^open BPF object: /);
});

test("use after close is an error, not a dangling pointer", () => {
  const obj = BpfObject.open(compile("ok", `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("sk_lookup") int ok(struct bpf_sk_lookup *ctx) { return SK_PASS; }
char _license[] SEC("license") = "GPL";`));
  const prog = obj.program("ok");
  obj.load();
  expect(prog.fd).toBeGreaterThan(0);
  obj.close();
  expect(() => prog.fd).toThrow(/used after close/);
});
