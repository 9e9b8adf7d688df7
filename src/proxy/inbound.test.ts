import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { endNames, socketEnds, socketNames } from "./inbound";

/*
 * The access log reads a plain connection's ends as the text of the kernel's
 * sockaddr bytes (socketNames) instead of parsing Bun's getters (socketEnds): both must write the same "ip:port"
 * (RFC 3986 §3.2.2 brackets for IPv6, IPv4-mapped addresses unmapped).
 */

/** Accept one real loopback connection from `connectHost` to a listener on `listenHost` and hand back both readings of its ends. */
async function accepted(listenHost: string, connectHost: string): Promise<{ names: unknown; parsed: unknown }> {
  const got = Promise.withResolvers<{ names: unknown; parsed: unknown }>();
  const server = Bun.listen({
    hostname: listenHost,
    port: 0,
    socket: {
      open(s: Socket<undefined>) {
        const names = socketNames(s);
        const ends = socketEnds(s);
        got.resolve({ names, parsed: ends && endNames(ends) });
        s.end();
      },
      data() {},
    },
  });
  const client = await Bun.connect({ hostname: connectHost, port: server.port, socket: { data() {} } });
  try {
    return await got.promise;
  } finally {
    client.end();
    server.stop(true);
  }
}

describe("socketNames", () => {
  test("IPv4: the same text as the parsed ends", async () => {
    const { names, parsed } = await accepted("127.0.0.1", "127.0.0.1");
    expect(names).toMatchObject(parsed as object);
    expect((names as { client: string }).client).toMatch(/^127\.0\.0\.1:\d+$/);
    expect((names as { edge: string }).edge).toMatch(/^127\.0\.0\.1:\d+$/);
    // The HTTP code's X-Forwarded-For address, without asking Bun (a getpeername) again.
    expect((names as { clientIp: string }).clientIp).toBe("127.0.0.1");
  });

  test("IPv6: bracketed, the same text as the parsed ends", async () => {
    const { names, parsed } = await accepted("::1", "::1");
    expect(names).toMatchObject(parsed as object);
    expect((names as { client: string }).client).toMatch(/^\[::1\]:\d+$/);
    expect((names as { clientIp: string }).clientIp).toBe("::1");
  });

  test("IPv4 on a dual-stack listener: unmapped, the same text as the parsed ends", async () => {
    const { names, parsed } = await accepted("::", "127.0.0.1");
    expect(names).toMatchObject(parsed as object);
    expect((names as { client: string }).client).toMatch(/^127\.0\.0\.1:\d+$/);
    expect((names as { clientIp: string }).clientIp).toBe("127.0.0.1");
  });
});
