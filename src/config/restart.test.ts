import { expect, test } from "bun:test";
import { parseConfig } from "./file";
import { describeRestart, restartNeeded } from "./restart";

const file = (top: string) => `${top}\n[[service]]\nname = "web"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = [80]\n`;

test("reload names every setting it cannot apply, and only those", () => {
  const a = parseConfig(file("workers = 2"), "/etc/ep/web.toml");
  expect(restartNeeded(a, parseConfig(file("workers = 2"), "/etc/ep/web.toml"))).toEqual([]);
  const b = parseConfig(file('workers = 3\ninstance = "edge"\nmax_connections = 10\ndrain_timeout = "5s"\n[admin]\nenabled = false'), "/etc/ep/web.toml");
  const changes = restartNeeded(a, b);
  expect(changes).toEqual(["instance web → edge", "workers 2 → 3", "drain_timeout default → 5000 ms", "max_connections default → 10", `admin ${(a.admin as { path: string }).path} → off`]);
  expect(describeRestart(changes)).toStartWith("; not applied, need a restart or 'edgeproxy upgrade': instance web → edge, workers 2 → 3");
  expect(describeRestart([])).toBe("");
});
