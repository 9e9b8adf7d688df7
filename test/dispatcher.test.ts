// The dispatcher against the real kernel: the real BPF program, attached in a
// namespace of each test's own, with real connections.
import { describe, expect, test } from "bun:test";
import { parsePrefix } from "../src/config/address";
import { parsePorts } from "../src/config/ports";
import type { Binding } from "../src/dispatcher/binding";
import { dispatcherImage } from "../src/dispatcher/image";
import { exchange, greeter, text } from "./helpers/net";
import { dispatcherFixture } from "./helpers/fixture";

const image = await dispatcherImage();

function bind(service: number, prefix: string, ports: string, protocol: "tcp" | "udp" = "tcp"): Binding {
  return { protocol, prefix: parsePrefix(prefix), ports: parsePorts(ports)[0]!, service, owner: `s${service}` };
}


/** A service socket that names itself to every client. */
function service(id: number, family: 4 | 6 = 4): void {
  const l = greeter(family === 4 ? "127.0.0.1" : "::1", 0, `s${id}`);
  fx.listeners.push(l);
  fx.d.setSocket(id, "tcp", family, (l as unknown as { fd: number }).fd);
}

const fx = dispatcherFixture(image);

const who = async (host: string, port: number) => text(await exchange(host, port));

describe("dispatcher in the kernel", () => {
  test("precedence: longest prefix, then narrowest range, with fall-back to a broader binding", async () => {
    for (const id of [1, 2, 3, 4]) service(id);
    fx.d.apply([
      bind(1, "192.0.2.0/24", "1-65535"),
      bind(2, "192.0.2.128/25", "1-1000"),
      bind(3, "192.0.2.0/24", "80-90"),
      bind(4, "192.0.2.200/32", "443"),
    ]);
    fx.d.attach();
    expect(await who("192.0.2.1", 5000)).toBe("s1");
    expect(await who("192.0.2.129", 500)).toBe("s2"); // longest prefix
    expect(await who("192.0.2.129", 5000)).toBe("s1"); // /25 does not cover 5000: fall back to the /24
    expect(await who("192.0.2.1", 85)).toBe("s3"); // narrowest range at the same prefix
    expect(await who("192.0.2.129", 85)).toBe("s2"); // a longer prefix beats a narrower range
    expect(await who("192.0.2.200", 443)).toBe("s4");
    expect(await who("192.0.2.200", 444)).toBe("s2"); // /32 covers only 443
    expect(await who("192.0.2.200", 4444)).toBe("s1");
  });

  test("no binding: SK_PASS, the ordinary listener answers (or nothing does)", async () => {
    service(1);
    const ordinary = [greeter("192.0.2.10", 3000, "ordinary-port"), greeter("127.0.0.1", 1500, "ordinary-prefix")];
    fx.listeners.push(...ordinary);
    fx.d.apply([bind(1, "192.0.2.0/24", "1000-2000")]);
    fx.d.attach();
    expect(await who("192.0.2.10", 1500)).toBe("s1");
    expect(await who("192.0.2.10", 3000)).toBe("ordinary-port"); // outside the range
    expect(await who("127.0.0.1", 1500)).toBe("ordinary-prefix"); // outside the prefix
    expect((await exchange("192.0.2.10", 2001)).kind).toBe("refused");
    const c0 = fx.d.counters(0);
    expect(c0.lookups).toBe(3n); // unmatched lookups are counted under service 0
    expect(c0.steered).toBe(0n);
  });

  test("binding without a socket: refused (SK_DROP), never another socket; counters say so", async () => {
    service(1);
    // An ordinary listener on a bound port must not get the connection when the service has no socket.
    fx.listeners.push(greeter("192.0.2.5", 7000, "bystander"));
    fx.d.apply([bind(1, "192.0.2.0/24", "7000"), bind(2, "192.0.2.0/24", "7001-7002")]);
    fx.d.attach();
    expect(await who("192.0.2.5", 7000)).toBe("s1");
    fx.d.removeSocket(1, "tcp", 4);
    expect((await exchange("192.0.2.5", 7000)).kind).toBe("refused");
    expect((await exchange("192.0.2.5", 7001)).kind).toBe("refused");
    const c1 = fx.d.counters(1);
    const c2 = fx.d.counters(2);
    expect([c1.lookups, c1.steered, c1.missingSocket, c1.assignError]).toEqual([2n, 1n, 1n, 0n]);
    expect([c2.lookups, c2.steered, c2.missingSocket]).toEqual([1n, 0n, 1n]);
  });

  test("a socket that closes leaves its binding refusing, not falling through", async () => {
    service(1);
    fx.d.apply([bind(1, "192.0.2.0/24", "1-65535")]);
    fx.d.attach();
    expect(await who("192.0.2.1", 22)).toBe("s1");
    fx.listeners.pop()!.stop(true); // the kernel removes a closed socket from the SOCKMAP
    await Bun.sleep(20);
    expect((await exchange("192.0.2.1", 22)).kind).toBe("refused");
    expect(fx.d.counters(1).missingSocket).toBe(1n);
  });

  test("IPv6 prefixes and the family split", async () => {
    service(1, 4);
    service(2, 6);
    fx.d.apply([bind(1, "192.0.2.0/24", "1-65535"), bind(2, "2001:db8::/64", "1-65535"), bind(3, "2001:db8::/64", "53", "udp")]);
    fx.d.attach();
    expect(await who("2001:db8::1", 1)).toBe("s2");
    expect(await who("2001:db8::ffff", 65535)).toBe("s2");
    expect(await who("192.0.2.3", 65535)).toBe("s1");
    expect(await who("2001:db8::1", 53)).toBe("s2"); // the udp binding does not touch tcp
  });

  test("apply swaps the whole binding set at once and can be repeated", async () => {
    service(1);
    service(2);
    fx.d.attach();
    expect((await exchange("192.0.2.1", 80)).kind).toBe("refused");
    fx.d.apply([bind(1, "192.0.2.0/24", "80")]);
    expect(await who("192.0.2.1", 80)).toBe("s1");
    fx.d.apply([bind(2, "192.0.2.0/24", "80"), bind(1, "192.0.2.0/24", "81")]);
    expect(await who("192.0.2.1", 80)).toBe("s2");
    expect(await who("192.0.2.1", 81)).toBe("s1");
    fx.d.apply([]);
    expect((await exchange("192.0.2.1", 80)).kind).toBe("refused");
    // A rejected set leaves the live one in place.
    fx.d.apply([bind(1, "192.0.2.0/24", "90")]);
    expect(() => fx.d.apply([bind(1, "192.0.2.0/24", "90"), bind(2, "192.0.2.0/24", "90")])).toThrow(/bound by both/);
    expect(await who("192.0.2.1", 90)).toBe("s1");
  });

  test("access rules: denied sources are refused in the kernel and counted, allowed ones pass", async () => {
    service(1);
    service(2);
    const p = (s: string) => parsePrefix(s);
    fx.d.apply(
      [bind(1, "192.0.2.0/24", "80"), bind(2, "192.0.2.0/24", "81")],
      [
        { service: 1, allow: [p("192.0.2.0/25")], deny: [p("192.0.2.66/32")] }, // allow list: default deny
        { service: 2, allow: [], deny: [p("192.0.2.128/25")] }, // deny list only: default allow
      ],
    );
    fx.d.attach();
    const from = async (src: string, port: number) => text(await exchange("192.0.2.1", port, "", 5000, src));
    expect(await from("192.0.2.10", 80)).toBe("s1");
    expect(await from("192.0.2.66", 80)).toBe("<refused>"); // the longer deny inside the allow
    expect(await from("192.0.2.200", 80)).toBe("<refused>"); // matches no allow
    expect(await from("192.0.2.10", 81)).toBe("s2");
    expect(await from("192.0.2.200", 81)).toBe("<refused>");
    expect(fx.d.counters(1).denied).toBe(2n);
    expect(fx.d.counters(1).steered).toBe(1n);
    expect(fx.d.counters(2).denied).toBe(1n);
    // Rules change with the bindings, atomically: dropping them lets everyone in.
    fx.d.apply([bind(1, "192.0.2.0/24", "80")]);
    expect(await from("192.0.2.200", 80)).toBe("s1");
  });

  test("close() detaches and is idempotent", async () => {
    service(1);
    fx.d.apply([bind(1, "192.0.2.0/24", "1-65535")]);
    fx.d.attach();
    expect(await who("192.0.2.1", 9)).toBe("s1");
    fx.d.close();
    fx.d.close();
    expect((await exchange("192.0.2.1", 9)).kind).toBe("refused");
  });
});
