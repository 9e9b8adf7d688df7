import { expect, test } from "bun:test";
import { errnoError } from "../../engine/httpsocket";
import { originCause } from "./context";

test("originCause: what the origin did is its failure; a descriptor or memory this process lacked is not (local)", () => {
  for (const [errno, kind] of [[111, "refused"], [110, "timeout"], [104, "reset"], [113, "unreachable"], [99, "unreachable"]] as const) {
    const c = originCause(errnoError(errno, "connect"));
    expect(c.kind).toBe(kind);
    expect(c.local).toBeUndefined();
  }
  // The engine's socket(2) and epoll_ctl failures, and Bun's connect errors, carry these codes.
  for (const errno of [24, 23, 105, 12]) {
    const c = originCause(errnoError(errno, "socket"));
    expect(c).toMatchObject({ kind: "other", local: true });
    expect(c.text).toContain("out of resources");
  }
  expect(originCause(Object.assign(new Error("x"), { code: "EMFILE" })).local).toBe(true);
  expect(originCause(new Error("something else")).local).toBeUndefined();
});
