// ep_migrate's member walk (bpf/reuseport.h, ep_reuse_pick and ep_reuse_step)
// on a real reuseport group in a namespace of the test's own: with positions
// empty (their workers full), every newcomer walks on from its hashed
// position to one that is present, however many empty ones lie between, and
// none goes to an empty position's listener. workers-cap.test.ts has the same
// with edgeproxy's workers, where at most one of them is full at a time.
import { expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { dispatcherImage } from "../src/dispatcher/image";
import { attachMigrate, REUSE_PORT } from "../src/proxy/group";
import { exchange, text } from "./helpers/net";
import { dispatcherFixture } from "./helpers/fixture";

const image = await dispatcherImage();
const MEMBERS = 4;

const fx = dispatcherFixture(image);

const fdOf = (l: TCPSocketListener<undefined>) => (l as unknown as { fd: number }).fd;

/** MEMBERS listeners in one group on one port, each answering its index, with ep_migrate attached. */
function group(): number {
  const listen = (i: number, port: number) => Bun.listen({ hostname: "127.0.0.1", port, ...REUSE_PORT, socket: { open: (s) => void s.end(`m${i}`), data() {} } });
  fx.listeners.push(listen(0, 0));
  const port = fx.listeners[0]!.port;
  for (let i = 1; i < MEMBERS; i++) fx.listeners.push(listen(i, port));
  attachMigrate(fdOf(fx.listeners[0]!), { port: () => port, migrateFd: fx.d.migrateFd });
  fx.d.selection.setGroup(4, port, MEMBERS, 1);
  return port;
}

for (const present of [[0], [3], [1, 3], [0, 1, 2]]) {
  test(`positions ${present.join(", ")} of ${MEMBERS} present: every newcomer goes to one of them`, async () => {
    const port = group();
    for (const p of present) fx.d.selection.offer(4, port, p, fdOf(fx.listeners[p]!));
    const got = new Map<string, number>();
    for (let i = 0; i < 120; i++) {
      const name = text(await exchange("127.0.0.1", port, "", 3000));
      got.set(name, (got.get(name) ?? 0) + 1);
    }
    // Each client port hashes to some first position: the absent ones walked on (counted as redirected).
    expect([...got.keys()].sort()).toEqual(present.map((p) => `m${p}`));
    expect(fx.d.selection.counters(1).redirected).toBeGreaterThan(0n);
  });
}

test("no position present: refused in the kernel (counted as full)", async () => {
  const port = group();
  expect(text(await exchange("127.0.0.1", port, "", 3000))).toMatch(/^<(refused|reset)>$/);
  expect(fx.d.selection.counters(1).full).toBeGreaterThan(0n);
});
