import { afterEach, beforeEach, expect } from "bun:test";
import type { TCPSocketListener } from "bun";
import type { EdgeproxyProcess } from "./edgeproxy";
import { TestNetns } from "./netns";

/** Per-test state of a proxy test: its namespace, its edgeproxy and the servers it started. */
export interface ProxyFixture {
  ep: EdgeproxyProcess | undefined;
  readonly servers: TCPSocketListener<any>[];
}

/**
 * Every test of the calling file runs in a namespace of its own; afterwards
 * its edgeproxy must exit 0 on SIGTERM and its servers are stopped.
 */
export function proxyFixture(): ProxyFixture {
  const f: ProxyFixture = { ep: undefined, servers: [] };
  let ns: TestNetns | undefined;
  beforeEach(() => {
    ns = TestNetns.enter();
  });
  afterEach(async () => {
    try {
      if (f.ep) expect(await f.ep.stop()).toBe(0);
    } finally {
      f.ep = undefined;
      for (const s of f.servers.splice(0)) s.stop(true);
      ns?.leave();
    }
  });
  return f;
}
