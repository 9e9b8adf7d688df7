import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { capabilities } from "./capabilities";

test("capabilities() reads the calling thread's sets as /proc/thread-self/status shows them (both capget words, the ambient set)", () => {
  const status = readFileSync("/proc/thread-self/status", "utf8");
  const get = (k: string) => BigInt(`0x${new RegExp(`^${k}:\\s*([0-9a-f]+)$`, "m").exec(status)![1]}`);
  expect(capabilities()).toEqual({ effective: get("CapEff"), permitted: get("CapPrm"), inheritable: get("CapInh"), ambient: get("CapAmb") });
});
