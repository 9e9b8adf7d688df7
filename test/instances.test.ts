// Instances (issue 16): every serve is a named instance with an owner record
// in the pins. A second start of the same instance, or one whose bindings
// overlap a live instance's, is refused before it changes anything; instances
// that do not overlap coexist and stop independently; --take-over hands over
// (the older one drains and exits) with no failed connection.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { exchange, greeter, text } from "./helpers/net";
import { instancesFixture } from "./helpers/instances";

const fx = instancesFixture("ep-instances-");
const { origin, serve, origins } = fx;

const flags = (instance: string, name: string, ports: string, to: string) => ["--instance", instance, "--name", name, "--ports", ports, "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin(to)}`];

const answer = async (port: number) => text(await exchange("192.0.2.1", port, "", 3000));

async function status(): Promise<{ services: { name: string; sockets: { cookie: string }[] }[]; instances: { name: string; pid: number; live: boolean }[] }> {
  const r = await runEdgeproxy(["status", "--json"]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

/** Connections to `port` one after another until `until` resolves (at most `max`, for at most 20 s): what each got. */
async function loop(port: number, until: Promise<unknown>, max = 50_000): Promise<string[]> {
  let done = false;
  void until.finally(() => (done = true));
  const got: string[] = [];
  const deadline = Date.now() + 20_000;
  while (!done && got.length < max && Date.now() < deadline) got.push(await answer(port));
  return got;
}

describe("instances", () => {
  test("a second start of the same config is refused in one line, before it changes anything: the first keeps serving", async () => {
    const file = join(fx.dir, "web.toml");
    writeFileSync(file, `[admin]\nsocket = "${join(fx.dir, "admin.sock")}"\n\n[[service]]\nname = "web"\norigins = ["127.0.0.1:${origin("first")}"]\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = "8000-8099"\n`);
    const first = await serve(["--config", file]);
    expect(first.stderr).toContain("instance web");
    const before = await status();
    const again = runEdgeproxy(["--config", file]);
    const during = loop(8050, again, 500);
    const r = await again;
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`instance web (pid ${first.pid}, config ${file}) is running`);
    expect(new Set(await during)).toEqual(new Set(["first"]));
    expect(await answer(8099)).toBe("first");
    const after = await status();
    expect(after.services).toEqual(before.services.map((s) => ({ ...s, counters: expect.anything() })) as never);
    expect(after.instances.map((i) => [i.name, i.pid, i.live])).toEqual([["web", first.pid, true]]);
    expect(await first.stop()).toBe(0);
  }, 30_000);

  test("overlapping bindings: the second instance is refused naming the first, its pid and the binding; the first's traffic is untouched", async () => {
    const a = await serve(flags("a", "web", "8000-8999", "a"));
    const second = runEdgeproxy(flags("b", "api", "8050-8100", "b"));
    const during = loop(8050, second, 500);
    const r = await second;
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr.trim()).toBe(
      `edgeproxy: instance b: refused, nothing changed: instance a (pid ${a.pid}) serves tcp 192.0.2.0/24 ports 8000-8999 (service web), which overlaps tcp 192.0.2.0/24 ports 8050-8100 of service api: stop it first, or start with --take-over to replace it`,
    );
    expect(new Set(await during)).toEqual(new Set(["a"]));
    for (const p of [8000, 8050, 8100, 8999]) expect(await answer(p)).toBe("a");
    // A service name another live instance serves is refused too, whatever the bindings.
    const same = await runEdgeproxy(flags("c", "web", "9000", "c"));
    expect([same.code, same.stderr.trim()]).toEqual([2, `edgeproxy: instance c: refused, nothing changed: instance a (pid ${a.pid}) serves service web already: stop it first, or start with --take-over to replace it`]);
    expect((await status()).instances.map((i) => i.name)).toEqual(["a"]);
  }, 30_000);

  test("two instances that do not overlap coexist; stopping either leaves the other untouched", async () => {
    for (const firstStopped of ["a", "b"]) {
      const a = await serve(flags("a", "web", "8000-8099", "a"));
      const b = await serve(flags("b", "api", "9000-9099", "b"));
      expect([await answer(8000), await answer(9000)]).toEqual(["a", "b"]);
      expect((await status()).instances.map((i) => [i.name, i.live])).toEqual([["a", true], ["b", true]]);
      const [gone, kept, keptPort, gonePort] = firstStopped === "a" ? [a, b, 9000, 8000] : [b, a, 8000, 9000];
      expect(await gone.stop()).toBe(0);
      expect(await answer(keptPort)).toBe(firstStopped === "a" ? "b" : "a");
      expect(await answer(gonePort)).toBe("<refused>");
      const st = await status();
      expect(st.instances.map((i) => i.name)).toEqual([firstStopped === "a" ? "b" : "a"]);
      expect(st.services.map((s) => s.name)).toEqual([firstStopped === "a" ? "api" : "web"]);
      expect(await kept.stop()).toBe(0);
    }
  }, 60_000);

  test("a dead instance's record is recognised (SIGKILL: pid and start time) and removed, with its services, by the next start", async () => {
    const a = await serve(flags("a", "web", "8000-8099", "a"));
    a.proc.kill("SIGKILL");
    await a.proc.exited;
    // Its pins stay (steering outlives a crash): the ports refuse, nothing else gets them.
    expect(await answer(8000)).toBe("<refused>");
    expect((await status()).instances.map((i) => [i.name, i.pid, i.live])).toEqual([["a", a.pid, false]]);
    const b = await serve(flags("b", "api", "8000-8099", "b"));
    expect(await answer(8000)).toBe("b");
    const st = await status();
    expect(st.instances.map((i) => [i.name, i.pid, i.live])).toEqual([["b", b.pid, true]]);
    expect(st.services.map((s) => s.name)).toEqual(["api"]);
  }, 30_000);

  test("a reload that would overlap another live instance is refused in one line; both keep what they had", async () => {
    const file = (name: string, ports: string, to: string) => {
      const path = join(fx.dir, `${name}.toml`);
      writeFileSync(path, `[admin]\nsocket = "${join(fx.dir, `${name}.sock`)}"\n\n[[service]]\nname = "${name}-svc"\norigins = ["127.0.0.1:${origin(to)}"]\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = "${ports}"\n`);
      return path;
    };
    const a = await serve(["--config", file("a", "8000-8099", "a")]);
    await serve(["--config", file("b", "9000-9099", "b")]);
    const before = await status();
    file("b", "8050,9000-9099", "b");
    const r = await runEdgeproxy(["reload", "--admin", join(fx.dir, "b.sock")]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`refused, nothing changed: instance a (pid ${a.pid}, config ${join(fx.dir, "a.toml")}) serves tcp 192.0.2.0/24 ports 8000-8099 (service a-svc), which overlaps tcp 192.0.2.0/24 ports 8050 of service b-svc`);
    expect([await answer(8050), await answer(9000)]).toEqual(["a", "b"]);
    expect((await status()).services).toEqual(before.services.map((s) => ({ ...s, counters: expect.anything() })) as never);
  }, 30_000);

  test("--take-over: the older instance is told, drains and exits; no connection fails under a client loop", async () => {
    // The second old instance has a supervisor: its workers read the record (the supervisor keeps no CAP_BPF) and tell it.
    for (const [instance, service, workers] of [["default", "default", "1"], ["b", "api", "2"]] as const) {
      const a = await serve([...flags("default", "default", "8000-8099", "old"), "--drain-timeout", "5s", "--workers", workers]);
      const refused = await runEdgeproxy(flags(instance, service, "8000-8099", "new"));
      expect(refused.code).toBe(2);
      let takeOver: Promise<EdgeproxyProcess> | undefined;
      const exited = (async () => {
        await Bun.sleep(300);
        takeOver = serve([...flags(instance, service, "8000-8099", "new"), "--take-over"]);
        await takeOver;
        return a.proc.exited;
      })();
      const got = await loop(8050, exited.then(() => Bun.sleep(300)));
      const b = await takeOver!;
      expect(await exited).toBe(0);
      expect(a.stderr).toMatch(workers === "1" ? /took (its bindings )?over: draining/ : /took its bindings over: draining its workers/);
      expect(b.stderr).toContain(`took over from instance default (pid ${a.pid})`);
      const counts = got.reduce((m, g) => m.set(g, (m.get(g) ?? 0) + 1), new Map<string, number>());
      console.log(`take-over (${instance}/${service}): ${[...counts].map(([k, v]) => `${k} ${v}`).join(", ")}`);
      // Every connection was answered, by the old instance and then by the new one.
      expect([...counts.keys()].sort()).toEqual(["new", "old"]);
      expect(got.at(-1)).toBe("new");
      expect((await status()).instances.map((i) => i.name)).toEqual([instance]);
      expect(await b.stop()).toBe(0);
    }
  }, 90_000);

  test("bind on a service that does not exist is an error unless --create", async () => {
    const missing = await runEdgeproxy(["bind", "wbe", "tcp", "192.0.2.0/24", "80"]);
    expect([missing.code, missing.stderr.trim()]).toEqual([2, "edgeproxy: service wbe: no such service: nothing is pinned in this network namespace; --create makes it"]);
    const a = await serve(flags("a", "web", "8000-8099", "a"));
    const typo = await runEdgeproxy(["bind", "wbe", "tcp", "192.0.2.0/24", "80"]);
    expect([typo.code, typo.stderr.trim()]).toEqual([2, "edgeproxy: service wbe: no such service (see edgeproxy status); --create makes it"]);
    expect((await status()).services.map((s) => s.name)).toEqual(["web"]);
    // Onto another live instance's bindings: refused even with --create.
    const steal = await runEdgeproxy(["bind", "--create", "other", "tcp", "192.0.2.1/32", "8010"]);
    expect(steal.code).toBe(2);
    expect(steal.stderr).toContain(`overlaps tcp 192.0.2.0/24 ports 8000-8099 of service web of instance a (pid ${a.pid})`);
    const made = await runEdgeproxy(["bind", "--create", "other", "tcp", "192.0.2.0/24", "80"]);
    expect(made.code).toBe(0);
    expect((await status()).services.map((s) => s.name)).toEqual(["web", "other"]);
    expect(await answer(80)).toBe("<refused>");
    expect(await answer(8010)).toBe("a");
    // The instance's own service takes more bindings by name.
    expect((await runEdgeproxy(["bind", "web", "tcp", "192.0.2.0/24", "8100"])).code).toBe(0);
    expect(await answer(8100)).toBe("a");
  }, 30_000);

  test("bind --take-over is per binding (an unbind takes it away); bind never steers a live instance's TCP admin listener", async () => {
    const plain = greeter("127.0.0.1", 7100, "plain");
    origins.push(plain);
    const file = join(fx.dir, "edge.toml");
    writeFileSync(join(fx.dir, "token"), "secret-token-0123456789\n");
    writeFileSync(file, `[admin]\nlisten = "127.0.0.1:9901"\ntoken_file = "${join(fx.dir, "token")}"\n\n[[service]]\nname = "web"\norigins = ["127.0.0.1:${origin("a")}"]\n[[service.bind]]\nprefixes = "192.0.2.0/24"\nports = "8000-8099"\n`);
    await serve(["--config", file]);
    const bind = async (...args: string[]) => {
      const r = await runEdgeproxy(["bind", "web", "tcp", "127.0.0.1/32", ...args]);
      expect(r.code).toBe(0);
      return r.stdout;
    };
    expect(await bind("7100")).toContain("left alone, already listening");
    expect(await answer7100()).toBe("plain");
    await bind("7100", "--take-over");
    expect(await answer7100()).toBe("a");
    expect((await runEdgeproxy(["unbind", "web", "tcp", "127.0.0.1/32", "7100"])).code).toBe(0);
    expect(await answer7100()).toBe("plain");
    // Not sticky: the service's next binding leaves the listener alone again.
    expect(await bind("7100")).toContain("left alone, already listening");
    expect(await answer7100()).toBe("plain");
    // The admin listener (the instance's record names it) is refused on every change path, --take-over or not.
    const before = (await status()).services;
    const r = await runEdgeproxy(["bind", "--create", "x", "tcp", "127.0.0.0/8", "9900-9902", "--take-over"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^edgeproxy: bind x: tcp 127\.0\.0\.0\/8 ports 9900-9902 would steer the admin API of instance edge \(pid \d+\) on 127\.0\.0\.1:9901; .*nothing changed$/);
    expect((await status()).services).toEqual(before.map((s) => ({ ...s, counters: expect.anything() })) as never);
    // Still its own: /healthz answers there (fetch's thread is not in this test's netns: a raw exchange).
    const health = text(await exchange("127.0.0.1", 9901, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 3000));
    expect(health).toStartWith("HTTP/1.1 200");
  }, 30_000);
});

const answer7100 = async () => text(await exchange("127.0.0.1", 7100, "", 3000));
