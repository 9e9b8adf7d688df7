// The command line of the standalone relays (bench/epoll-relay.ts,
// uring-relay.ts, sockmap-relay.ts): --listen and --origin, IPv4:port each,
// and a relay's own string options. A bad one is one line and exit 2.
import { parseArgs } from "node:util";
import type { Endpoint } from "../src/system/sockaddr";

export interface RelayArgs {
  readonly listen: Endpoint;
  /** --listen as given, for the ready line the bench waits for. */
  readonly listenText: string;
  readonly origin: Endpoint;
  /** The relay's own options (`extra`), as given or their defaults. */
  readonly values: Readonly<Record<string, string | undefined>>;
}

export function relayArgs(name: string, extra: Record<string, { type: "string"; default?: string }> = {}): RelayArgs {
  const fail = (why: string): never => {
    console.error(`${name}: ${why}`);
    process.exit(2);
  };
  let values: Record<string, string | boolean | (string | boolean)[] | undefined> = {};
  try {
    values = parseArgs({ options: { listen: { type: "string" }, origin: { type: "string" }, ...extra } }).values;
  } catch (e) {
    fail((e as Error).message);
  }
  const endpoint = (what: "listen" | "origin"): Endpoint => {
    const s = values[what];
    const m = typeof s === "string" ? /^(\d+)\.(\d+)\.(\d+)\.(\d+):(\d+)$/.exec(s) : null;
    if (!m) return fail(`--${what} wants IPv4:port, got ${JSON.stringify(s)}`);
    return { family: 4, addr: new Uint8Array(m.slice(1, 5).map(Number)), port: Number(m[5]) };
  };
  const listen = endpoint("listen");
  return { listen, listenText: values.listen as string, origin: endpoint("origin"), values: values as Record<string, string | undefined> };
}
