import { afterEach, beforeEach } from "bun:test";
import type { TCPSocketListener } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess } from "./edgeproxy";
import { greeter } from "./net";
import { TestNetns } from "./netns";

/** Per-test state of a file whose tests run whole instances: its namespace, a directory, the serves and origins it started. */
export interface InstancesFixture {
  readonly ns: TestNetns;
  /** A new directory per test (configs, sockets, pid files), removed after it. */
  readonly dir: string;
  readonly started: EdgeproxyProcess[];
  readonly origins: TCPSocketListener<undefined>[];
  /** An origin that answers every connection with `name`; its port. */
  origin(name: string): number;
  /** A serve started with `args` (ready), stopped after the test. */
  serve(args: string[]): Promise<EdgeproxyProcess>;
}

/**
 * Every test of the calling file runs in a namespace of its own with a
 * directory named from `prefix`; afterwards the serves it started that still
 * run are stopped (SIGTERM, by pid), its origins stopped, the directory removed.
 */
export function instancesFixture(prefix: string): InstancesFixture {
  let ns: TestNetns | undefined;
  let dir = "";
  const started: EdgeproxyProcess[] = [];
  const origins: TCPSocketListener<undefined>[] = [];
  beforeEach(() => {
    ns = TestNetns.enter();
    dir = mkdtempSync(join(tmpdir(), prefix));
  });
  afterEach(async () => {
    try {
      for (const ep of started.splice(0)) if (ep.proc.exitCode === null) await ep.stop();
      for (const o of origins.splice(0)) o.stop(true);
      rmSync(dir, { recursive: true, force: true });
    } finally {
      ns?.leave();
    }
  });
  return {
    get ns(): TestNetns {
      if (!ns) throw new Error("instancesFixture: used outside a test");
      return ns;
    },
    get dir(): string {
      return dir;
    },
    started,
    origins,
    origin(name: string): number {
      const o = greeter("127.0.0.1", 0, name);
      origins.push(o);
      return o.port;
    },
    async serve(args: string[]): Promise<EdgeproxyProcess> {
      const ep = await EdgeproxyProcess.start(args);
      started.push(ep);
      return ep;
    },
  };
}
