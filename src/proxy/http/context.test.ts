import { expect, test } from "bun:test";
import { errnoError } from "../../engine/httpsocket";
import { originCause } from "./context";

test("originCause: what the origin did is its failure; a descriptor, memory or local port this host lacked is not (local)", () => {
  for (const [errno, kind] of [[111, "refused"], [110, "timeout"], [104, "reset"], [113, "unreachable"], [101, "unreachable"]] as const) {
    const c = originCause(errnoError(errno, "connect"));
    expect(c.kind).toBe(kind);
    expect(c.local).toBeUndefined();
  }
  // The engine's socket(2) and epoll_ctl failures, and Bun's connect errors, carry these codes.
  for (const [errno, local] of [[24, "descriptors"], [23, "descriptors"], [105, "memory"], [12, "memory"]] as const) {
    const c = originCause(errnoError(errno, "socket"));
    expect(c).toMatchObject({ kind: "other", local });
    expect(c.text).toContain("out of resources");
  }
  // connect(2) with every ephemeral port to that origin in use (net.ipv4.ip_local_port_range).
  expect(originCause(errnoError(99, "connect"))).toMatchObject({ kind: "other", local: "ports", text: "this proxy is out of local ports to the origin (EADDRNOTAVAIL)" });
  expect(originCause(Object.assign(new Error("x"), { code: "EMFILE" })).local).toBe("descriptors");
  expect(originCause(new Error("something else")).local).toBeUndefined();
});
