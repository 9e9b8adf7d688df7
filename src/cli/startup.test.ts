import { expect, test } from "bun:test";
import { describeStartup, type StartupFacts } from "./startup";

const worker = (fd: number, createdPins: boolean, told: string[] = []): StartupFacts => ({
  bindings: ["service web (tcp): tcp 192.0.2.0/24 ports 80 -> 127.0.0.1:9000"],
  sockets: [
    { service: "web", family: 4, address: "127.0.0.1:40000", fd },
    { service: "web", family: 6, address: "[::1]:40001", fd: fd + 1 },
  ],
  pinDir: "/sys/fs/bpf/edgeproxy/4026531840",
  createdPins,
  maxConnections: 4975,
  maxFlows: 0,
  skipped: [],
  instance: "web",
  told,
});

test("one process: its lines as they always were", () => {
  expect(describeStartup([worker(12, true)])).toEqual([
    "service web (tcp): tcp 192.0.2.0/24 ports 80 -> 127.0.0.1:9000",
    "service web: ipv4 socket 127.0.0.1:40000 (fd 12)",
    "service web: ipv6 socket [::1]:40001 (fd 13)",
    "dispatcher created and pinned at /sys/fs/bpf/edgeproxy/4026531840",
    "at most 4975 open connections",
    "instance web",
  ]);
});

test("workers: each line once for the instance; sockets name every worker's fd; the cap is the sum of the shares; created by whichever worker did", () => {
  expect(describeStartup([worker(12, false), worker(14, true, ["old (pid 42)"])])).toEqual([
    "service web (tcp): tcp 192.0.2.0/24 ports 80 -> 127.0.0.1:9000",
    "service web: ipv4 socket 127.0.0.1:40000 in each of 2 workers (fds 12, 14)",
    "service web: ipv6 socket [::1]:40001 in each of 2 workers (fds 13, 15)",
    "dispatcher created and pinned at /sys/fs/bpf/edgeproxy/4026531840",
    "at most 9950 (4975 + 4975 in 2 workers) open connections",
    "instance web: took over from instance old (pid 42), told to drain and exit",
  ]);
  expect(describeStartup([])).toEqual([]);
});
