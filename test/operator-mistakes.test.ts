// Operator mistakes against running instances: each is refused in one line
// (exit 2, or a 4xx from the admin API) and leaves what runs exactly as it was.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { EdgeproxyProcess, MAIN, runEdgeproxy } from "./helpers/edgeproxy";
import { connect, type Socket } from "node:net";
import { exchange, text } from "./helpers/net";
import { instancesFixture } from "./helpers/instances";
import { parseReply, rawClient } from "./helpers/http";

const fx = instancesFixture("ep-mistakes-");
const { origin, serve, started } = fx;

const flags = (instance: string, ports: string, to: string) => ["--instance", instance, "--name", instance, "--ports", ports, "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin(to)}`, "--workers", "1"];
const answer = async (port: number) => text(await exchange("192.0.2.1", port, "", 3000));

/** A request to instance `name`'s admin socket. */
function admin(name: string, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`http://edgeproxy${path}`, {
    method,
    unix: join(fx.ns.runDir, `${name}.sock`),
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "Content-Type": "application/json" } }),
  } as RequestInit);
}

async function bindingsOf(service: string): Promise<string[]> {
  const r = await runEdgeproxy(["bindings", "--json"]);
  expect(r.code).toBe(0);
  const all = JSON.parse(r.stdout) as { service: string; protocol: string; prefix: string; ports: string }[];
  return all.filter((b) => b.service === service).map((b) => `${b.protocol} ${b.prefix} ${b.ports}`);
}

describe("the admin API changes only its own instance's services", () => {
  test("instance a's API cannot add to, or withdraw, instance b's bindings: 400 naming the owner, b keeps serving", async () => {
    await serve(flags("a", "8000-8099", "from-a"));
    await serve(flags("b", "9000-9099", "from-b"));
    expect(await answer(9050)).toBe("from-b");
    const before = await bindingsOf("b");

    const withdraw = await admin("a", "DELETE", `/services/b/bindings?${new URLSearchParams({ protocol: "tcp", prefix: "192.0.2.0/24", ports: "9000-9099" })}`);
    expect(withdraw.status).toBe(400);
    const { error } = (await withdraw.json()) as { error: string };
    expect(error).toBe("service b: not served by instance a: it is instance b's (its own admin API changes it: --instance b); nothing changed");
    expect((await admin("a", "DELETE", "/services/b/bindings", { protocol: "tcp", prefix: "192.0.2.0/24", ports: "9000-9099" })).status).toBe(400);
    expect((await admin("a", "POST", "/services/b/bindings", { protocol: "tcp", prefix: "192.0.2.0/24", ports: "7000" })).status).toBe(400);

    expect(await bindingsOf("b")).toEqual(before);
    expect(await answer(9050)).toBe("from-b");
    expect(await answer(8050)).toBe("from-a");
    // b's own API still does it.
    expect((await admin("b", "POST", "/services/b/bindings", { protocol: "tcp", prefix: "192.0.2.0/24", ports: "7000" })).status).toBe(201);
    expect(await answer(7000)).toBe("from-b");
  });

  test("a udp binding of a tcp service is refused, as in a config file, and nothing changes", async () => {
    await serve(flags("a", "8000-8099", "from-a"));
    const before = await bindingsOf("a");
    const r = await admin("a", "POST", "/services/a/bindings", { protocol: "udp", prefix: "192.0.2.0/24", ports: "7001" });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { error: string }).error).toBe("service a: protocol: a tcp service binds tcp only; nothing changed");
    expect(await bindingsOf("a")).toEqual(before);
  });
});

/**
 * Start edgeproxy with the startup trace, send `signal` the moment it says it
 * reached `phase`, and wait for ready or exit (15 s). What it wrote, and how it ended if it did.
 */
async function signalWhileStarting(args: string[], signal: NodeJS.Signals, phase: string): Promise<{ proc: Bun.Subprocess<"ignore", "pipe", "pipe">; stderr: () => string; exit?: string }> {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "../src/main.ts"), ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: { ...process.env, EDGEPROXY_START_TRACE: "1" } });
  let err = "";
  let sent = false;
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) {
      err += decoder.decode(chunk);
      if (!sent && err.includes(phase)) {
        sent = true;
        proc.kill(signal);
      }
    }
  })();
  const deadline = Date.now() + 15_000;
  while (!err.includes("edgeproxy: ready") && proc.exitCode === null && proc.signalCode === null && Date.now() < deadline) await Bun.sleep(10);
  expect(sent).toBe(true);
  if (proc.exitCode !== null || proc.signalCode !== null) {
    await reading;
    return { proc, stderr: () => err, exit: `${proc.exitCode ?? proc.signalCode}` };
  }
  return { proc, stderr: () => err };
}

describe("signals while starting", () => {
  for (const workers of ["1", "2"]) {
    test(`SIGHUP after the dispatcher is pinned, before ready (--workers ${workers}): held, and the reload done once ready; nothing dies half-started`, async () => {
      const file = join(fx.dir, "web.toml");
      await Bun.write(file, `[[service]]\nname = "web"\norigin = "127.0.0.1:${origin("web")}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8000"]\n`);
      const r = await signalWhileStarting(["--config", file, "--workers", workers], "SIGHUP", "dispatcher loaded");
      // Before: killed by SIGHUP (one worker: the process; two: a worker, failing the start) with its pins left behind.
      expect(r.exit).toBeUndefined();
      expect(await answer(8000)).toBe("web");
      const deadline = Date.now() + 5000;
      while (!r.stderr().includes("reloaded") && Date.now() < deadline) await Bun.sleep(20);
      expect(r.stderr()).toContain(`reloaded ${file}: no change`);
      r.proc.kill("SIGTERM");
      expect(await r.proc.exited).toBe(0);
      expect((await runEdgeproxy(["status"])).stdout).toContain("is not loaded");
    });
  }
});

describe("read-only mounts", () => {
  const serveFlags = ["--instance", "a", "--ports", "8000", "--prefix", "192.0.2.0/24", "--workers", "1"];
  const sh = (...cmd: string[]) => expect(Bun.spawnSync(cmd).exitCode).toBe(0);

  test("a read-only bpffs: one line naming the mount and the remount, not a chown that cannot help; exit 2", async () => {
    sh("mount", "-o", "remount,ro", fx.ns.bpffs);
    try {
      for (const args of [serveFlags, ["bind", "web", "tcp", "192.0.2.0/24", "80", "--create"]]) {
        const r = await runEdgeproxy(args);
        expect(r.code).toBe(2);
        expect(r.stderr.trim().split("\n")).toHaveLength(1);
        expect(r.stderr).toContain(`is on a read-only mount (EROFS), no owner or mode makes it writable: mount -o remount,rw ${fx.ns.bpffs}`);
        expect(r.stderr).not.toContain("chown");
      }
    } finally {
      sh("mount", "-o", "remount,rw", fx.ns.bpffs);
    }
  });

  test("an admin socket directory on a read-only mount: one line naming it; exit 2, nothing pinned", async () => {
    const ro = join(fx.dir, "ro");
    sh("mkdir", ro);
    sh("mount", "-t", "tmpfs", "-o", "ro", "tmpfs", ro);
    try {
      const r = await runEdgeproxy(serveFlags, { EDGEPROXY_RUN_DIR: ro });
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toContain(`admin socket ${ro}/a.sock: ${ro} is on a read-only mount (EROFS)`);
      expect(r.stderr).not.toContain("chown");
      expect((await runEdgeproxy(["status"])).stdout).toContain("is not loaded");
    } finally {
      sh("umount", ro);
    }
  });
});

describe("out of descriptors", () => {
  test("idle clients filling the descriptor table through the admin TCP listener: the steering check skips its look, never calls the steering lost", async () => {
    const file = join(fx.dir, "web.toml");
    const token = "0123456789abcdef0123";
    await Bun.write(file, `[admin]\nlisten = "127.0.0.1:9901"\ntoken = "${token}"\n\n[[service]]\nname = "web"\norigin = "127.0.0.1:${origin("web")}"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8000"]\n`);
    // 400 descriptors, so a few hundred connections (which need no token) use them all up.
    const ep = await serveWith(["--config", file, "--workers", "1"], ["sh", "-c", 'ulimit -n 400 && exec "$0" "$@"', process.execPath, MAIN]);
    expect(await answer(8000)).toBe("web");
    const flood: Socket[] = [];
    try {
      for (let i = 0; i < 500; i++) flood.push(connect(9901, "127.0.0.1").on("error", () => {}));
      // Several watchdog ticks (250 ms) while nothing can be opened. Before: "steering lost: <bpffs>/edgeproxy was removed", drained, exit 1.
      await Bun.sleep(2000);
      expect(ep.proc.exitCode).toBeNull();
      expect(ep.stderr).not.toContain("steering lost");
      expect(ep.stderr).toContain("steering check skipped: this process is out of descriptors");
    } finally {
      for (const s of flood) s.destroy();
    }
    // The flood gone, it serves and says healthy (the listener's pause after EMFILE is a sweep interval).
    const deadline = Date.now() + 10_000;
    let last = "";
    while (Date.now() < deadline && (last = await answer(8000).catch(() => "")) !== "web") await Bun.sleep(100);
    expect(last).toBe("web");
    // (fetch's own thread is not in the test's namespace: a raw client on this thread.)
    const client = await rawClient("127.0.0.1", 9901);
    client.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const health = parseReply(await client.until((t) => t.includes("\r\n\r\n")));
    expect(health.status).toBe(200);
    expect(ep.stderr).not.toContain("steering lost");
  });
});

async function serveWith(args: string[], command: string[]): Promise<EdgeproxyProcess> {
  const ep = await EdgeproxyProcess.start(args, {}, command);
  started.push(ep);
  return ep;
}

describe("while draining", () => {
  test("a draining process takes no binding or reload: 4xx, nothing changed, no 201 for a change its withdrawal undoes", async () => {
    const file = join(fx.dir, "web.toml");
    await Bun.write(file, `[[service]]\nname = "web"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8000"]\n`);
    const ep = await serve(["--config", file, "--workers", "1", "--drain-timeout", "5s"]);
    // An open connection (the built-in responder echoes) keeps the drain going.
    const held = await rawClient("192.0.2.1", 8000);
    held.send("hold\n");
    expect(await held.until((t) => t.includes("hold"))).toContain("hold");
    const sock = join(fx.ns.runDir, "web.sock");
    const call = (method: string, path: string, body?: unknown) =>
      fetch(`http://edgeproxy${path}`, { method, unix: sock, ...(body === undefined ? {} : { body: JSON.stringify(body) }) } as RequestInit);
    expect((await call("POST", "/drain")).status).toBe(200);
    const reloaded = await call("POST", "/reload");
    expect(reloaded.status).toBe(400);
    expect(((await reloaded.json()) as { error: string }).error).toBe(`admin: pid ${ep.pid} is draining (POST /drain): nothing changed`);
    const bound = await call("POST", "/services/web/bindings", { protocol: "tcp", prefix: "192.0.2.0/24", ports: "8001" });
    expect(bound.status).toBeGreaterThanOrEqual(400);
    expect(bound.status).toBeLessThan(500);
    ep.proc.kill("SIGHUP");
    const deadline = Date.now() + 3000;
    while (!ep.stderr.includes("SIGHUP: not reloaded") && Date.now() < deadline) await Bun.sleep(20);
    expect(ep.stderr).toContain("SIGHUP: not reloaded, this process is stopping (POST /drain)");
    expect(ep.stderr).not.toContain(`reloaded ${file}`);
    held.close();
    expect(await ep.proc.exited).toBe(0);
  });
});

describe("pid files", () => {
  test("a second instance given the first's --pid-file is refused in one line; the file keeps naming the first", async () => {
    const pidFile = join(fx.dir, "edgeproxy.pid");
    const a = await serve([...flags("a", "8000-8099", "from-a"), "--pid-file", pidFile]);
    expect((await Bun.file(pidFile).text()).trim()).toBe(String(a.pid));
    // Before: b wrote its pid over a's (a's service manager would follow b) and removed the file when it stopped.
    const r = await runEdgeproxy([...flags("b", "9000-9099", "from-b"), "--pid-file", pidFile]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`--pid-file: ${pidFile} names pid ${a.pid}, the leader of live instance a: each instance needs a pid file of its own (nothing changed)`);
    expect((await Bun.file(pidFile).text()).trim()).toBe(String(a.pid));
    expect(await answer(8050)).toBe("from-a");
  });
});

describe("SIGTERM while draining", () => {
  for (const workers of ["1", "2"]) {
    test(`stops at once, cutting what is open, instead of waiting out the drain timeout (--workers ${workers})`, async () => {
      const ep = await serve(["--instance", "a", "--ports", "8000", "--prefix", "192.0.2.0/24", "--workers", workers, "--drain-timeout", "30s"]);
      const held = await rawClient("192.0.2.1", 8000);
      held.send("hold\n");
      expect(await held.until((t) => t.includes("hold"))).toContain("hold");
      ep.proc.kill("SIGQUIT");
      const deadline = Date.now() + 5000;
      while (!ep.stderr.includes("draining: no new connections") && Date.now() < deadline) await Bun.sleep(20);
      expect(ep.stderr).toContain("draining: no new connections");
      // Before: the SIGTERM was taken as already stopping, and the process waited for the held connection up to 30 s.
      const t0 = Date.now();
      ep.proc.kill("SIGTERM");
      const code = await Promise.race([ep.proc.exited, Bun.sleep(5000).then(() => "still running")]);
      expect(code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(ep.stderr).toContain("SIGTERM while draining (SIGQUIT): cutting the open connections now");
      expect(await held.until(() => false, 2000)).toBe("hold\n");
      expect(held.closed).toBe(true);
    });
  }
});

describe("a config file turned FIFO", () => {
  test("SIGHUP to a supervisor: the reload is refused and the re-read for its restart notes does not wait for a writer", async () => {
    const file = join(fx.dir, "web.toml");
    await Bun.write(file, `[[service]]\nname = "web"\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = ["8000"]\n`);
    const ep = await serve(["--config", file, "--workers", "2"]);
    expect(Bun.spawnSync(["sh", "-c", `rm "$0" && mkfifo "$0"`, file]).exitCode).toBe(0);
    ep.proc.kill("SIGHUP");
    const deadline = Date.now() + 5000;
    while ((ep.stderr.match(/reload rejected/g) ?? []).length < 2 && Date.now() < deadline) await Bun.sleep(20);
    expect(ep.stderr).toContain("cannot re-read config file: a FIFO");
    // Before: the supervisor's own re-read (restart notes) waited on the FIFO for a writer; a writer now would be read by it.
    const writer = Bun.spawn(["sh", "-c", 'exec 3>"$0"; sleep 1', file], { stdout: "ignore", stderr: "ignore" });
    const opened = await Promise.race([writer.exited.then(() => "opened"), Bun.sleep(3000).then(() => "no reader")]);
    if (opened !== "opened") writer.kill();
    expect(opened).toBe("no reader");
    ep.proc.kill("SIGTERM");
    expect(await ep.proc.exited).toBe(0);
  });
});
