import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as abi from "./abi";
import { reuseGroupId } from "./reuseabi";
import * as sabi from "./sourceabi";

// Compile a host program against the real header and compare what it prints.
test("abi.ts matches bpf/dispatcher.h", () => {
  const dir = mkdtempSync(join(tmpdir(), "ep-abi-"));
  try {
    const src = join(dir, "abi.c");
    const field = (k: string) => {
      const [s, f] = k.split(".");
      return `printf("\\"${k}\\": %zu,\\n", offsetof(struct ${s}, ${f}));`;
    };
    const code = `#include <stdio.h>
#include <stddef.h>
#include <linux/bpf.h>
#include "dispatcher.h"
int main(void) {
  printf("{\\n");
  ${Object.keys(abi.sizes).map((s) => `printf("\\"${s}\\": %zu,\\n", sizeof(struct ${s}));`).join("\n  ")}
  ${Object.keys(abi.offsets).map(field).join("\n  ")}
  printf("\\"EP_MAX_SERVICES\\": %d, \\"EP_RANGES_PER_GEN\\": %d, \\"EP_SOCKET_SLOTS\\": %d, \\"EP_PREFIX_KEY_HEADER_BITS\\": %d,\\n",
    EP_MAX_SERVICES, EP_RANGES_PER_GEN, EP_SOCKET_SLOTS, EP_PREFIX_KEY_HEADER_BITS);
  printf("\\"EP_ACCESS_KEY_HEADER_BITS\\": %d, \\"EP_MAX_ACCESS_RULES\\": %d, \\"EP_SERVICE_HAS_RULES\\": %d, \\"EP_SERVICE_DEFAULT_DENY\\": %d, \\"EP_SERVICE_TAKE_OVER\\": %d, \\"EP_VERDICT_ALLOW\\": %d, \\"EP_VERDICT_DENY\\": %d,\\n",
    EP_ACCESS_KEY_HEADER_BITS, EP_MAX_ACCESS_RULES, EP_SERVICE_HAS_RULES, EP_SERVICE_DEFAULT_DENY, EP_SERVICE_TAKE_OVER, EP_VERDICT_ALLOW, EP_VERDICT_DENY);
  printf("\\"EP_STATE_HOSTS\\": %d,\\n", EP_STATE_HOSTS);
  printf("\\"EP_SOURCE_OWNERS\\": %d, \\"EP_SOURCE_OP_ADD\\": %d, \\"EP_SOURCE_OP_RECLAIM\\": %d, \\"EP_SOURCE_OP_RATE\\": %d, \\"EP_SOURCE_LIMIT_EXEMPT\\": %d,\\n", EP_SOURCE_OWNERS, EP_SOURCE_OP_ADD, EP_SOURCE_OP_RECLAIM, EP_SOURCE_OP_RATE, EP_SOURCE_LIMIT_EXEMPT);
  printf("\\"EP_REUSE_MAX_MEMBERS\\": %d, \\"EP_REUSE_MAX_ENTRIES\\": %d, \\"EP_REUSE_TIERS\\": %d, \\"group\\": %u,\\n", EP_REUSE_MAX_MEMBERS, EP_REUSE_MAX_ENTRIES, EP_REUSE_TIERS, ep_reuse_group_id(1, 7000));
  printf("\\"EP_SOCKET_MEMBERS\\": %d, \\"member\\": %u,\\n", EP_SOCKET_MEMBERS, ep_member_key(ep_socket_slot(7, 1, 1), 3));
  printf("\\"slot\\": %u}\\n", ep_socket_slot(7, 1, 1));
  return 0;
}`;
    writeFileSync(src, code);
    const bin = join(dir, "abi");
    const cc = Bun.spawnSync(["clang", "-I", join(import.meta.dir, "../../bpf"), "-o", bin, src]);
    expect(cc.stderr.toString()).toBe("");
    const got = JSON.parse(Bun.spawnSync([bin]).stdout.toString());
    expect(got).toEqual({
      ...abi.sizes,
      ...abi.offsets,
      EP_MAX_SERVICES: abi.EP_MAX_SERVICES,
      EP_RANGES_PER_GEN: abi.EP_RANGES_PER_GEN,
      EP_SOCKET_SLOTS: abi.EP_SOCKET_SLOTS,
      EP_PREFIX_KEY_HEADER_BITS: abi.EP_PREFIX_KEY_HEADER_BITS,
      EP_ACCESS_KEY_HEADER_BITS: abi.EP_ACCESS_KEY_HEADER_BITS,
      EP_MAX_ACCESS_RULES: abi.EP_MAX_ACCESS_RULES,
      EP_SERVICE_HAS_RULES: abi.EP_SERVICE_HAS_RULES,
      EP_SERVICE_DEFAULT_DENY: abi.EP_SERVICE_DEFAULT_DENY,
      EP_SERVICE_TAKE_OVER: abi.EP_SERVICE_TAKE_OVER,
      EP_VERDICT_ALLOW: abi.EP_VERDICT_ALLOW,
      EP_VERDICT_DENY: abi.EP_VERDICT_DENY,
      EP_SOCKET_MEMBERS: abi.EP_SOCKET_MEMBERS,
      EP_STATE_HOSTS: abi.EP_STATE_HOSTS,
      EP_SOURCE_OWNERS: abi.EP_SOURCE_OWNERS,
      EP_SOURCE_OP_ADD: abi.EP_SOURCE_OP_ADD,
      EP_SOURCE_OP_RECLAIM: abi.EP_SOURCE_OP_RECLAIM,
      EP_SOURCE_OP_RATE: abi.EP_SOURCE_OP_RATE,
      EP_SOURCE_LIMIT_EXEMPT: abi.EP_SOURCE_LIMIT_EXEMPT,
      EP_REUSE_MAX_MEMBERS: abi.EP_REUSE_MAX_MEMBERS,
      EP_REUSE_MAX_ENTRIES: abi.EP_REUSE_MAX_ENTRIES,
      EP_REUSE_TIERS: abi.EP_REUSE_TIERS,
      group: reuseGroupId(6, 7000),
      member: abi.memberKey(abi.socketSlot(7, "udp", 6), 3),
      slot: abi.socketSlot(7, "udp", 6),
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("encodePortRanges lays struct ep_port_range out back to back, little-endian", () => {
  const b = abi.encodePortRanges([{ start: 1, service: 2 }, { start: 0x10203, service: 7 }]);
  expect([...b]).toEqual([1, 0, 0, 0, 2, 0, 0, 0, 3, 2, 1, 0, 7, 0, 0, 0]);
});

test("writeSourceKey masks the address to the grouping prefix (IPv6 /64, IPv4 /24) and zero-fills the rest", () => {
  const v6 = sabi.encodeSourceKey({ service: 0x0102, addr: Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8]), prefixLen: 64 });
  expect([...v6]).toEqual([2, 1, 0, 0, 10, 64, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0]);
  const v4 = sabi.encodeSourceKey({ service: 3, addr: Uint8Array.from([192, 0, 2, 77]), prefixLen: 20 });
  expect([...v4]).toEqual([3, 0, 0, 0, 2, 20, 0, 0, 192, 0, 0, 0, ...new Array(12).fill(0)]);
  // A prefix longer than the family's address is the full address.
  expect([...sabi.encodeSourceKey({ service: 3, addr: Uint8Array.from([192, 0, 2, 77]), prefixLen: 64 })].slice(4, 12)).toEqual([2, 32, 0, 0, 192, 0, 2, 77]);
});

test("encodeSourceLimit / decodeSourceLimit round-trip struct ep_source_limit, little-endian", () => {
  const x = { connections: 0x01020304, prefixV4: 32, prefixV6: 56, flags: abi.EP_SOURCE_LIMIT_EXEMPT, rateIntervalNs: 100_000_000n, rateToleranceNs: 0x0102030405n };
  const b = sabi.encodeSourceLimit(x);
  expect([...b.subarray(0, 8)]).toEqual([4, 3, 2, 1, 32, 56, 1, 0]);
  expect([...b.subarray(16, 24)]).toEqual([5, 4, 3, 2, 1, 0, 0, 0]);
  expect(sabi.decodeSourceLimit(b)).toEqual(x);
});

test("writeSourceOp fills op, owner, a signed delta and clears result; decodeLimitCounters sums CPUs", () => {
  const b = new Uint8Array(abi.sizes.ep_source_op).fill(0xee);
  sabi.writeSourceOp(b, abi.EP_SOURCE_OP_ADD, 5, -1);
  expect([...b.subarray(24)]).toEqual([1, 0, 0, 0, 5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
  b[36] = 7;
  expect(sabi.sourceOpResult(b)).toBe(7);
  const perCpu = new Uint8Array(abi.sizes.ep_limit_counters * 2);
  const v = new DataView(perCpu.buffer);
  v.setBigUint64(0, 1n, true);
  v.setBigUint64(8, 2n, true);
  v.setBigUint64(16, 10n, true);
  v.setBigUint64(24, 20n, true);
  expect(sabi.decodeLimitCounters(perCpu, 2)).toEqual({ connections: 11n, rate: 22n });
});
