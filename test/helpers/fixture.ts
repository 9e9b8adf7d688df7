import { afterEach, beforeEach, expect } from "bun:test";
import type { TCPSocketListener } from "bun";
import { Dispatcher } from "../../src/dispatcher/dispatcher";
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

/** Per-test state of a dispatcher test: the program loaded in the test's own namespace, and the listeners it steers to. */
export interface DispatcherFixture {
  readonly d: Dispatcher;
  /** The test's namespace (its bpffs too). */
  readonly ns: TestNetns;
  readonly listeners: TCPSocketListener<any>[];
}

/**
 * Every test of the calling file runs in a namespace of its own with
 * `image` loaded (Dispatcher.load) and `setup` run; afterwards `teardown`,
 * the listeners stopped, the dispatcher closed, the namespace left.
 */
export function dispatcherFixture(image: Uint8Array, hooks: { setup?: (d: Dispatcher) => void; teardown?: () => void } = {}): DispatcherFixture {
  let ns: TestNetns | undefined;
  let d: Dispatcher | undefined;
  const listeners: TCPSocketListener<any>[] = [];
  beforeEach(() => {
    ns = TestNetns.enter();
    d = Dispatcher.load(image);
    hooks.setup?.(d);
  });
  afterEach(() => {
    try {
      hooks.teardown?.();
    } finally {
      for (const l of listeners.splice(0)) l.stop(true);
      d?.close();
      d = undefined;
      ns?.leave();
    }
  });
  return {
    get d(): Dispatcher {
      if (!d) throw new Error("dispatcherFixture: used outside a test");
      return d;
    },
    get ns(): TestNetns {
      if (!ns) throw new Error("dispatcherFixture: used outside a test");
      return ns;
    },
    listeners,
  };
}
