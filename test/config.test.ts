// serve --config: many services, access rules in the kernel, the admin API's
// /metrics against real traffic, and live reload under load.
import { describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { DEFAULT_ENGINE, EdgeproxyProcess, runEdgeproxy } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange, text } from "./helpers/net";

const f = proxyFixture();

/** An origin that answers every connection with its name, then echoes. */
function namedOrigin(name: string): TCPSocketListener<undefined> {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void s.write(`${name}:`), data: (s, d) => void s.write(d) } });
  f.servers.push(l);
  return l;
}

function workdir() {
  const dir = mkdtempSync(join(tmpdir(), "ep-config-"));
  return { dir, file: join(dir, "edgeproxy.toml"), admin: join(dir, "admin.sock"), done: () => rmSync(dir, { recursive: true, force: true }) };
}

const service = (name: string, origin: number, bind: string, extra = "") =>
  `[[service]]\nname = "${name}"\norigin = "127.0.0.1:${origin}"\n${extra}\n[[service.bind]]\n${bind}\n`;

async function admin(path: string, route: string, init: RequestInit = {}) {
  // A unix socket is reached by path, whatever the network namespace of fetch's thread.
  return fetch(`http://localhost${route}`, { ...init, unix: path } as RequestInit);
}

/** Send one request line; the origin's greeting tells who answered. */
async function who(host: string, port: number, from?: string): Promise<string> {
  const o = await exchange(host, port, "", 3000, from);
  return o.kind === "refused" ? "refused" : text(o).split(":")[0]!;
}

describe("serve --config", () => {
  test("two services with access rules; /metrics parses and its counters match the traffic sent", async () => {
    const w = workdir();
    try {
      const a = namedOrigin("A");
      const b = namedOrigin("B");
      writeFileSync(
        w.file,
        `[admin]\nsocket = "${w.admin}"\n` +
          service("a", a.port, 'prefixes = ["192.0.2.0/24"]\nports = "1000-1999"', 'allow = ["192.0.2.0/25"]\ndeny = ["192.0.2.66/32"]') +
          service("b", b.port, 'prefixes = ["192.0.2.0/24", "2001:db8::/64"]\nports = [2000, "3000-3999"]'),
      );
      f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
      expect(f.ep.stderr).toContain(`admin API on unix:${w.admin}`);

      expect(await who("192.0.2.1", 1500, "192.0.2.10")).toBe("A"); // allowed
      expect(await who("192.0.2.1", 1501, "192.0.2.11")).toBe("A");
      expect(await who("192.0.2.1", 1500, "192.0.2.66")).toBe("refused"); // denied inside the allowed /25
      expect(await who("192.0.2.1", 1500, "192.0.2.200")).toBe("refused"); // outside every allow
      expect(await who("192.0.2.1", 2000)).toBe("B");
      expect(await who("2001:db8::5", 3999)).toBe("B");
      expect(text(await exchange("192.0.2.7", 3000, "12345"))).toBe("B:12345");

      const res = await admin(w.admin, "/metrics");
      expect(res.headers.get("content-type")).toContain("text/plain; version=0.0.4");
      const families = parsePrometheusTextFormat(await res.text());
      const value = (name: string, labels: Record<string, string>) =>
        families
          .find((m) => m.name === name)!
          .metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value;
      expect(value("edgeproxy_kernel_steered_total", { service: "a" })).toBe("2");
      expect(value("edgeproxy_kernel_drops_total", { service: "a", reason: "denied" })).toBe("2");
      expect(value("edgeproxy_kernel_steered_total", { service: "b" })).toBe("3");
      expect(value("edgeproxy_connections_total", { service: "b" })).toBe("3");
      expect(value("edgeproxy_bytes_total", { service: "b", direction: "client_to_origin" })).toBe("5");
      expect(value("edgeproxy_bytes_total", { service: "b", direction: "origin_to_client" })).toBe("11"); // "B:" x3 + "12345"

      const status = (await (await admin(w.admin, "/status")).json()) as { services: { name: string; bindings: unknown[] }[] };
      expect(status.services.map((s) => [s.name, s.bindings.length])).toEqual([
        ["a", 1],
        ["b", 4],
      ]);
      expect((await admin(w.admin, "/healthz")).status).toBe(200);
      // The probe command the image and the DaemonSet use: ok here, exit 1 where nothing answers.
      expect(await runEdgeproxy(["health", "--admin", w.admin])).toMatchObject({ code: 0, stdout: "ok\n" });
      const none = await runEdgeproxy(["health", "--admin", `${w.admin}.none`]);
      expect(none.code).toBe(1);
      expect(none.stderr).toContain("no edgeproxy admin API answers");
    } finally {
      w.done();
    }
  }, 30_000);

  test("reload under a continuous connection loop: a range added, one removed; no established connection dropped, no new one misdirected", async () => {
    const w = workdir();
    try {
      const a = namedOrigin("A");
      const b = namedOrigin("B");
      const config = (aPorts: string, bPorts: string) =>
        `[admin]\nsocket = "${w.admin}"\n` + service("a", a.port, `prefixes = "192.0.2.0/24"\nports = "${aPorts}"`) + service("b", b.port, `prefixes = "192.0.2.0/24"\nports = "${bPorts}"`);
      writeFileSync(w.file, config("1000-1099", "2000-2099"));
      f.ep = await EdgeproxyProcess.start(["--config", w.file]);

      // Long-lived connections through both services.
      const held = await Promise.all(
        [1000, 2000].map(
          (port) =>
            new Promise<{ send: (s: string) => Promise<string>; end: () => void }>((resolve) => {
              let waiter: ((s: string) => void) | undefined;
              Bun.connect({
                hostname: "192.0.2.1",
                port,
                socket: {
                  open: (s) => resolve({ send: (m) => new Promise((r) => ((waiter = r), s.write(m))), end: () => s.end() }),
                  data: (_s, d) => waiter?.(d.toString()),
                },
              });
            }),
        ),
      );
      await Bun.sleep(50);

      // The loop: until told to stop (bounded to 8 s), connect to every range and record who answered.
      const seen: { port: number; who: string; after: boolean }[] = [];
      let reloaded = false;
      let stop = false;
      const loop = (async () => {
        const t0 = Date.now();
        for (let i = 0; !stop && Date.now() - t0 < 8000; i++) {
          for (const port of [1000 + (i % 100), 2000 + (i % 50), 2050 + (i % 50), 3000 + (i % 100)]) {
            const after = reloaded;
            seen.push({ port, who: await who("192.0.2.1", port), after });
          }
        }
      })();
      await Bun.sleep(300);
      writeFileSync(w.file, config("1000-1099,3000-3099", "2000-2049"));
      const r = await runEdgeproxy(["reload", "--admin", w.admin]);
      expect(r.stdout).toContain("new bindings or rules for a, b");
      reloaded = true;
      await Bun.sleep(300);
      stop = true;
      await loop;

      const expected = (port: number, after: boolean) => {
        if (port < 2000) return "A";
        if (port < 2050) return "B";
        if (port < 2100) return after ? "refused" : "B";
        return after ? "A" : "refused";
      };
      // Before the reload finished, either table is right for the changed ranges; never anything else.
      const wrong = seen.filter((s) => {
        const now = expected(s.port, s.after);
        const then = expected(s.port, true);
        return s.who !== now && !(s.after === false && s.who === then);
      });
      expect(wrong).toEqual([]);
      expect(seen.filter((s) => s.after).length).toBeGreaterThan(20);
      expect(seen.filter((s) => !s.after).length).toBeGreaterThan(20);
      // Established connections survived.
      expect(await held[0]!.send("still")).toBe("still");
      expect(await held[1]!.send("here")).toBe("here");
      for (const h of held) h.end();
    } finally {
      w.done();
    }
  }, 30_000);

  test.each([
    ["an unknown field", 'prefixes = "192.0.2.0/24"\nports = "1000-1099"\nportz = 3', /service "a": bind\[1\]: unknown field "portz"/],
    ["an invalid range", 'prefixes = "192.0.2.0/24"\nports = "5-3"', /service "a": bind\[1\]\.ports: "5-3": range start is above its end/],
    ["an invalid prefix", 'prefixes = "192.0.2.0/33"\nports = "1000"', /service "a": bind\[1\]\.prefixes: "192\.0\.2\.0\/33"/],
    ["the same binding in two services", 'prefixes = "192.0.2.0/24"\nports = "2000-2099"', /tcp 192\.0\.2\.0\/24 2000-2099 is bound by both service a and service b/],
  ])("a bad config (%s) is rejected whole on reload and at start, naming the place; nothing changes", async (_what, aBind, message) => {
    const w = workdir();
    try {
      const a = namedOrigin("A");
      const b = namedOrigin("B");
      const good = `[admin]\nsocket = "${w.admin}"\n` + service("a", a.port, 'prefixes = "192.0.2.0/24"\nports = "1000-1099"') + service("b", b.port, 'prefixes = "192.0.2.0/24"\nports = "2000-2099"');
      const bad = `[admin]\nsocket = "${w.admin}"\n` + service("a", a.port, aBind) + service("b", b.port, 'prefixes = "192.0.2.0/24"\nports = "2000-2099"');
      const badFile = w.file.replace(".toml", "-bad.toml");
      writeFileSync(badFile, bad);
      const start = await runEdgeproxy(["--config", badFile]);
      expect(start.code).toBe(2);
      expect(start.stderr.trim().split("\n")).toHaveLength(1);
      expect(start.stderr).toMatch(message);

      writeFileSync(w.file, good);
      f.ep = await EdgeproxyProcess.start(["--config", w.file]);
      const before = await (await admin(w.admin, "/status")).json();
      writeFileSync(w.file, bad);
      const r = await runEdgeproxy(["reload", "--admin", w.admin]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(message);
      const after = await (await admin(w.admin, "/status")).json();
      type Status = { services: { name: string; bindings: unknown; sockets: unknown }[] };
      const shape = (s: unknown) => (s as Status).services.map(({ name, bindings, sockets }) => ({ name, bindings, sockets }));
      expect(shape(after)).toEqual(shape(before));
      expect(await who("192.0.2.1", 1050)).toBe("A");
      expect(await who("192.0.2.1", 2050)).toBe("B");
      // SIGHUP with the bad file: the same, reported on stderr.
      f.ep.proc.kill("SIGHUP");
      for (let i = 0; i < 50 && !f.ep.stderr.includes("reload rejected"); i++) await Bun.sleep(20);
      expect(f.ep.stderr).toMatch(/reload rejected, nothing changed: /);
      expect(await who("192.0.2.1", 1050)).toBe("A");
    } finally {
      w.done();
    }
  }, 30_000);
});

test("an admin API on a port the services steer is refused", async () => {
  const w = workdir();
  try {
    writeFileSync(
      w.file,
      `[admin]\nlisten = "127.0.0.1:9901"\ntoken = "0123456789abcdef0123"\n` + service("a", 9, 'prefixes = "127.0.0.0/8"\nports = "9000-9999"'),
    );
    const r = await runEdgeproxy(["--config", w.file]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("edgeproxy: admin.listen: 127.0.0.1:9901 lies inside the bindings of service a; the admin API must not be reachable from steered ports");
  } finally {
    w.done();
  }
});

test("a reload that conflicts with bindings made outside the file fails at commit and restores everything", async () => {
  const w = workdir();
  try {
    const a = namedOrigin("A");
    const config = (ports: string) => `[admin]\nsocket = "${w.admin}"\n` + service("a", a.port, `prefixes = "192.0.2.0/24"\nports = "${ports}"`);
    writeFileSync(w.file, config("1000-1099"));
    f.ep = await EdgeproxyProcess.start(["--config", w.file]);
    const other = await runEdgeproxy(["bind", "--create", "other", "tcp", "192.0.2.0/24", "3000-3099"]);
    expect(other.code).toBe(0);
    writeFileSync(w.file, config("1000-1099,3000-3099"));
    const r = await runEdgeproxy(["reload", "--admin", w.admin]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/tcp 192\.0\.2\.0\/24 3000-3099 is bound by both service a and service other/);
    const bindings = JSON.parse((await runEdgeproxy(["bindings", "--json"])).stdout) as { service: string; ports: string }[];
    expect(bindings.map((b) => `${b.service} ${b.ports}`).sort()).toEqual(["a 1000-1099", "other 3000-3099"]);
    expect(await who("192.0.2.1", 1050)).toBe("A");
    expect(await who("192.0.2.1", 3050)).toBe("refused"); // other's binding, no socket
  } finally {
    w.done();
  }
}, 30_000);

test("after a reload gives a service new sockets, the connection cap pauses and resumes those sockets", async () => {
  const w = workdir();
  try {
    const a = namedOrigin("A");
    const a2 = namedOrigin("A2");
    const config = (origin: number) => `max_connections = 3\n[admin]\nsocket = "${w.admin}"\n` + service("a", origin, 'prefixes = "192.0.2.0/24"\nports = "1000-1099"');
    writeFileSync(w.file, config(a.port));
    f.ep = await EdgeproxyProcess.start(["--config", w.file]);
    writeFileSync(w.file, config(a2.port)); // a new origin: the service gets new listening sockets
    expect((await runEdgeproxy(["reload", "--admin", w.admin])).stdout).toContain("new sockets for a");
    await Bun.sleep(700); // the old listeners' grace period
    const held = await Promise.all(
      [1000, 1001, 1002].map(
        (port) => new Promise<import("bun").Socket>((resolve) => Bun.connect({ hostname: "192.0.2.1", port, socket: { data: (s) => resolve(s) } })),
      ),
    );
    expect(await who("192.0.2.1", 1003)).toBe("refused"); // at the cap
    held[0]!.end();
    let back = "";
    for (let i = 0; i < 100 && back !== "A2"; i++) {
      await Bun.sleep(20);
      back = await who("192.0.2.1", 1004);
    }
    expect(back).toBe("A2"); // steering resumed with the new socket, not the closed one
    for (const s of held) s.end();
  } finally {
    w.done();
  }
}, 30_000);

test("connections of a service replaced by reload still get their idle timeout", async () => {
  const w = workdir();
  try {
    const a = namedOrigin("A");
    const a2 = namedOrigin("A2");
    const config = (origin: number) => `[admin]\nsocket = "${w.admin}"\n` + service("a", origin, 'prefixes = "192.0.2.0/24"\nports = "1000-1099"', 'idle_timeout = "600ms"');
    writeFileSync(w.file, config(a.port));
    f.ep = await EdgeproxyProcess.start(["--config", w.file]);
    let closedAt = 0;
    const t0 = performance.now();
    await new Promise<void>((resolve) =>
      Bun.connect({ hostname: "192.0.2.1", port: 1000, socket: { data: () => resolve(), close: () => void (closedAt = performance.now()) } }),
    );
    writeFileSync(w.file, config(a2.port));
    expect((await runEdgeproxy(["reload", "--admin", w.admin])).code).toBe(0);
    for (let i = 0; i < 150 && !closedAt; i++) await Bun.sleep(20);
    expect(closedAt).toBeGreaterThan(0); // closed by the idle timeout, under the old service's settings
    expect(closedAt - t0).toBeLessThan(2500);
  } finally {
    w.done();
  }
}, 30_000);

test("a reload that changes a service's engine gives it new sockets on the other data plane; /status says which; an open connection goes on", async () => {
  const w = workdir();
  try {
    const a = namedOrigin("A");
    const config = (engine: string) => `[admin]\nsocket = "${w.admin}"\n` + service("a", a.port, 'prefixes = "192.0.2.0/24"\nports = "1000-1099"', `engine = "${engine}"`);
    const engineNow = async () => ((await (await admin(w.admin, "/status")).json()) as { services: { name: string; engine?: string }[] }).services.find((s) => s.name === "a")?.engine;
    writeFileSync(w.file, config("epoll"));
    f.ep = await EdgeproxyProcess.start(["--config", w.file]);
    expect(await engineNow()).toBe("epoll");
    let got = "";
    const held = await Bun.connect({ hostname: "192.0.2.1", port: 1000, socket: { data: (_s, d) => void (got += Buffer.from(d).toString()) } });
    held.write("1");
    for (let i = 0; i < 150 && got !== "A:1"; i++) await Bun.sleep(20);
    expect(got).toBe("A:1");

    writeFileSync(w.file, config("bun"));
    const r = await runEdgeproxy(["reload", "--admin", w.admin]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("new sockets for a");
    expect(await engineNow()).toBe("bun");
    // The relay the engine started still runs there; new connections are Bun's.
    held.write("2");
    for (let i = 0; i < 150 && got !== "A:12"; i++) await Bun.sleep(20);
    expect(got).toBe("A:12");
    expect(await who("192.0.2.1", 1001)).toBe("A");
    // auto on a plain relay is the engine again (unless this suite runs with $EDGEPROXY_ENGINE=bun): moved back.
    writeFileSync(w.file, config("auto"));
    expect((await runEdgeproxy(["reload", "--admin", w.admin])).code).toBe(0);
    expect(await engineNow()).toBe(DEFAULT_ENGINE);
    expect(await who("192.0.2.1", 1002)).toBe("A");
    held.end();
  } finally {
    w.done();
  }
}, 30_000);
