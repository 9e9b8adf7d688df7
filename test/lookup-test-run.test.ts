// BPF_PROG_TEST_RUN of the dispatcher (what bench/lookup.ts measures with)
// and the batched table writes of apply(), against the real kernel in a
// namespace of the test's own.
import { expect, test } from "bun:test";
import { parseAddress, parsePrefix } from "../src/config/address";
import type { Binding } from "../src/dispatcher/binding";
import * as abi from "../src/dispatcher/abi";
import { Dispatcher } from "../src/dispatcher/dispatcher";
import { dispatcherImage } from "../src/dispatcher/image";
import { programInfo } from "../src/ebpf/object";
import { greeter } from "./helpers/net";
import { dispatcherFixture } from "./helpers/fixture";

const image = await dispatcherImage();

const fx = dispatcherFixture(image);

const bind = (service: number, prefix: string, lo: number, hi: number): Binding => ({ protocol: "tcp", prefix: parsePrefix(prefix), ports: { lo, hi }, service, owner: `s${service}` });
const run = (local: string, port: number) => fx.d.testLookup({ protocol: "tcp", local: parseAddress(local)!, localPort: port, remote: parseAddress("10.0.0.1")!, remotePort: 40000 }, 100);

test("a test run steers a bound address:port to its service's socket, and passes the rest", () => {
  const l = greeter("127.0.0.1", 0, "s1");
  fx.listeners.push(l);
  fx.d.setSocket(1, "tcp", 4, (l as unknown as { fd: number }).fd);
  fx.d.apply([bind(1, "192.0.2.0/24", 1000, 1999)]);
  const hit = run("192.0.2.7", 1500);
  expect(hit.verdict).toBe(1); // SK_PASS
  expect(hit.cookie).toBe(fx.d.socketCookie(1, "tcp", 4)!);
  expect(hit.nsPerRun).toBeGreaterThan(0);
  expect(run("192.0.2.7", 2000)).toMatchObject({ verdict: 1, cookie: 0n });
  expect(run("198.51.100.1", 1500)).toMatchObject({ verdict: 1, cookie: 0n });
});

test("a bound port without a socket is refused (SK_DROP)", () => {
  fx.d.apply([bind(2, "192.0.2.0/24", 80, 80)]);
  expect(run("192.0.2.1", 80)).toMatchObject({ verdict: 0, cookie: 0n });
});

test("apply writes large port tables in one batch, and a second apply replaces them", () => {
  // 20,000 one-port bindings, services alternating: 20,002 table entries.
  const many = Array.from({ length: 20_000 }, (_, i) => bind(1 + (i % 2), "192.0.2.9/32", 10000 + i, 10000 + i));
  const l1 = greeter("127.0.0.1", 0, "s1");
  const l2 = greeter("127.0.0.1", 0, "s2");
  fx.listeners.push(l1, l2);
  fx.d.setSocket(1, "tcp", 4, (l1 as unknown as { fd: number }).fd);
  fx.d.setSocket(2, "tcp", 4, (l2 as unknown as { fd: number }).fd);
  const applied = fx.d.apply(many);
  expect(applied.tables[0]!.ranges.length).toBe(20_002);
  for (const port of [10000, 10001, 19998, 29999]) {
    expect(run("192.0.2.9", port).cookie).toBe(fx.d.socketCookie(1 + ((port - 10000) % 2), "tcp", 4)!);
  }
  expect(run("192.0.2.9", 30000).cookie).toBe(0n);
  fx.d.apply([bind(2, "192.0.2.9/32", 10000, 10000)]);
  expect(run("192.0.2.9", 10000).cookie).toBe(fx.d.socketCookie(2, "tcp", 4)!);
  expect(run("192.0.2.9", 10001).cookie).toBe(0n);
});

test("the tag from a load with one-entry maps is the tag of the full load", () => {
  expect(Dispatcher.programTag(image)).toBe(programInfo(fx.d.program!.fd).tag);
});

test("with many /32 bindings the exact-match hash answers, and shorter prefixes still come from the trie", () => {
  const l1 = greeter("127.0.0.1", 0, "s1");
  const l2 = greeter("127.0.0.1", 0, "s2");
  fx.listeners.push(l1, l2);
  fx.d.setSocket(1, "tcp", 4, (l1 as unknown as { fd: number }).fd);
  fx.d.setSocket(2, "tcp", 4, (l2 as unknown as { fd: number }).fd);
  const hosts = Array.from({ length: 100 }, (_, i) => bind(2, `192.0.2.${i}/32`, 80, 80));
  fx.d.apply([bind(1, "192.0.2.0/24", 1, 65535), ...hosts]);
  const state = abi.decodeState(fx.d.maps.ep_state.lookup(abi.u32(0), new Uint8Array(abi.sizes.ep_state))!);
  expect(state.flags).toBe(abi.EP_STATE_HOSTS);
  const s1 = fx.d.socketCookie(1, "tcp", 4)!;
  const s2 = fx.d.socketCookie(2, "tcp", 4)!;
  expect(run("192.0.2.42", 80).cookie).toBe(s2);
  // The program really asks the hash: with this host's trie entry gone, the hash still finds its table.
  fx.d.maps.ep_prefixes.delete(abi.encodePrefixKey(state.gen, "tcp", parsePrefix("192.0.2.42/32")));
  expect(run("192.0.2.42", 80).cookie).toBe(s2);
  expect(run("192.0.2.42", 81).cookie).toBe(s1); // the /32's table folds in the /24
  expect(run("192.0.2.200", 80).cookie).toBe(s1); // no /32 there: the trie
  // Fewer hosts than the threshold: the flag goes, and the old generation's hash entries with it.
  fx.d.apply([bind(2, "192.0.2.42/32", 80, 80)]);
  expect(abi.decodeState(fx.d.maps.ep_state.lookup(abi.u32(0), new Uint8Array(abi.sizes.ep_state))!).flags).toBe(0);
  expect(fx.d.maps.ep_hosts.keys(24).length).toBe(0);
  expect(run("192.0.2.42", 80).cookie).toBe(s2);
  expect(run("192.0.2.43", 80).cookie).toBe(0n);
});
