// The live view (issue 17 item 2): GET / and /dashboard.json on a real
// edgeproxy with two workers in its own netns, after real traffic; the page
// rendered by headless Chromium (a screenshot in test-output/, the rendered
// DOM checked); `edgeproxy top --once`; `edgeproxy dashboard`'s forwarder.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_ENGINE, EdgeproxyProcess, MAIN, ROOT, runEdgeproxy } from "./helpers/edgeproxy";
import { echoOrigin, exchange, pool, text } from "./helpers/net";
import { proxyFixture } from "./helpers/fixture";
import type { DashboardView } from "../src/admin/dashboard";

const f = proxyFixture();
const OUT = join(ROOT, "test-output");
const CHROMIUM = Bun.which("chromium") ?? Bun.which("chromium-browser");

const N = 40;
const M = 5;
// The busiest clients: N connections from two source addresses, A more than B; the broken service's M from 192.0.2.1.
const A = "192.0.2.101";
const B = "192.0.2.102";
const FROM_A = 28;
const PAYLOAD = "x".repeat(1000);

/**
 * curl (in this netns: Bun's fetch runs on a thread of its own, in the
 * machine's namespace, so TCP requests from this test go through curl);
 * status, headers and body.
 */
async function curl(url: string, args: string[] = []): Promise<{ status: number; headers: string; body: string }> {
  const proc = Bun.spawn(["curl", "-sS", "--max-time", "10", "-D", "-", ...args, url], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`curl ${url} exited ${code}: ${err}`);
  const split = out.indexOf("\r\n\r\n");
  const headers = out.slice(0, split);
  return { status: Number(/^HTTP\/[\d.]+ (\d+)/.exec(headers)?.[1]), headers: headers.toLowerCase(), body: out.slice(split + 4) };
}

async function dashboardJson(admin: string): Promise<DashboardView> {
  const res = await fetch("http://localhost/dashboard.json", { unix: admin } as RequestInit);
  expect(res.status).toBe(200);
  return (await res.json()) as DashboardView;
}

/** Run chromium headless on `url` with `extra` (--screenshot=..., --dump-dom); its stdout. Bounded at 60 s. */
async function chromium(url: string, extra: string[]): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), "ep-chromium-"));
  try {
    const args = [CHROMIUM!, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", `--user-data-dir=${profile}`, "--window-size=1280,900",
      // Lets the page's scripts run (its first fetch and render) before the capture; network waits do not count against it.
      "--virtual-time-budget=4000", ...extra, url];
    const proc = Bun.spawn(args, { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => proc.kill("SIGKILL"), 60_000);
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    if (code !== 0) throw new Error(`chromium exited ${code}: ${err.slice(-2000)}`);
    return out;
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

describe("dashboard", () => {
  test("traffic shows in /dashboard.json's samples, the page renders it in Chromium, top --once prints it, the forwarder is GET-only", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-dashboard-"));
    const admin = join(dir, "admin.sock");
    const children: ReturnType<typeof Bun.spawn>[] = [];
    try {
      const origin = echoOrigin("127.0.0.1");
      f.servers.push(origin);
      // Two services: "web" to an echo origin, "broken" to a port nobody listens on (its connections are origin errors).
      const config = join(dir, "edgeproxy.toml");
      writeFileSync(
        config,
        `workers = 2\n[admin]\nsocket = "${admin}"\n\n` +
          `[[service]]\nname = "web"\norigins = ["127.0.0.1:${origin.port}"]\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "7000-7009"\n\n` +
          `[[service]]\nname = "broken"\norigins = ["127.0.0.1:9"]\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "7100"\n`,
      );
      f.ep = await EdgeproxyProcess.start(["--config", config]);

      // The first request starts the sampler: its first reading is before the traffic.
      const before = await dashboardJson(admin);
      expect(before.workers).toBe(2);
      const results = await pool(
        Array.from({ length: N }, (_, i) => i),
        8,
        async (i) => text(await exchange("192.0.2.1", 7000 + (i % 10), PAYLOAD, 5000, i < FROM_A ? A : B)) === PAYLOAD,
      );
      expect(results.filter((ok) => !ok)).toHaveLength(0);
      for (let i = 0; i < M; i++) expect((await exchange("192.0.2.1", 7100, "", 5000, "192.0.2.1")).kind).not.toBe("data");
      await Bun.sleep(2_500);
      const v = await dashboardJson(admin);
      expect(v.samples.length).toBeGreaterThanOrEqual(2);
      for (const s of v.samples) expect(s.dt).toBeGreaterThan(0);
      // The rates integrate back to exactly what was sent: N + M connections, N * 1000 bytes each way (the broken service's clients send nothing).
      const integral = (g: (s: DashboardView["samples"][number]) => number) => v.samples.reduce((a, s) => a + g(s) * s.dt, 0);
      expect(integral((s) => s.connections)).toBeCloseTo(N + M, 6);
      expect(integral((s) => s.bytes)).toBeCloseTo(2 * N * PAYLOAD.length, 3);
      expect(Math.max(...v.samples.map((s) => s.connections))).toBeGreaterThan(0);
      // The broken service's connections, as origin errors and nothing else.
      expect(integral((s) => s.errors.origin)).toBeCloseTo(M, 6);
      expect(integral((s) => Object.values(s.errors).reduce((a, b) => a + b, 0))).toBeCloseTo(M, 6);
      expect(v.services.map((s) => s.name)).toEqual(["web", "broken"]);
      expect(v.services[1]!.totals.errors.origin).toBe(M);
      const svc = v.services[0]!;
      expect(svc.totals.connections).toBe(N);
      expect(svc.bindings).toEqual(["tcp 192.0.2.0/24 7000-7009"]);
      // Which data plane serves it, from the workers' /status (engine = "auto": epoll for a plain tcp relay).
      expect(v.services.map((s) => [s.mode, s.engine])).toEqual([["tcp", DEFAULT_ENGINE], ["tcp", DEFAULT_ENGINE]]);
      expect(svc.origins).toEqual([{ origin: `127.0.0.1:${origin.port}`, healthy: true, up: 1, endpoints: 1, active: 0 }]);
      // Both workers' counts added up per address (fewer addresses than counters: exact), busiest first;
      // bytes both ways of the connections that closed (the broken service's clients sent none).
      expect(v.clients.available).toBe(true);
      expect(v.clients.top).toEqual([
        { address: A, connections: FROM_A, refused: 0, error: 0, bytes: FROM_A * 2 * PAYLOAD.length },
        { address: B, connections: N - FROM_A, refused: 0, error: 0, bytes: (N - FROM_A) * 2 * PAYLOAD.length },
        { address: "192.0.2.1", connections: M, refused: 0, error: 0, bytes: 0 },
      ]);
      expect(v.clients.note).toContain("each of 2 workers");

      // The page: self-contained (no URL it would load), served without a token on the unix socket.
      const page = await (await fetch("http://localhost/", { unix: admin } as RequestInit)).text();
      expect(page).toContain('fetch("dashboard.json"');
      expect(page).not.toMatch(/\b(src|href)=|https?:\/\/|@import|url\(/);

      // top --once: one snapshot, the service's totals.
      const top = await runEdgeproxy(["top", "--once", "--admin", admin]);
      expect(top.stderr).toBe("");
      expect(top.code).toBe(0);
      expect(top.stdout).toContain("CONN/S");
      expect(top.stdout).toMatch(new RegExp(`^${svc.name}\\s+tcp/${DEFAULT_ENGINE}\\s+0\\s+\\S+\\s+\\S+\\s+\\S+\\s+${N}\\s+1/1\\s*$`, "m"));
      expect(top.stdout).toContain(`127.0.0.1:${origin.port}`);
      expect(top.stdout).toMatch(new RegExp(`^broken\\s+tcp/${DEFAULT_ENGINE}\\s+0\\s+\\S+\\s+\\S+\\s+\\S+\\s+${M}\\s+`, "m"));
      expect(top.stdout).not.toContain("\x1b");
      expect(top.stdout).toMatch(new RegExp(`^CLIENT\\s+CONNECTIONS.*\n${A.replaceAll(".", "\\.")}\\s+${FROM_A}\\s+56\\.0kB\n${B.replaceAll(".", "\\.")}\\s+${N - FROM_A}\\s+24\\.0kB\n192\\.0\\.2\\.1\\s+${M}\\s+0B$`, "m"));
      // Without --once, stdout not a terminal: one snapshot as well (no escapes, it exits).
      const piped = await runEdgeproxy(["top", "--admin", admin]);
      expect(piped.code).toBe(0);
      expect(piped.stdout).toContain("CONN/S");
      expect(piped.stdout).not.toContain("\x1b");

      // On a terminal (script(1)'s pty): the alternate screen, refreshed each second; q quits and restores the terminal.
      for (const key of ["q", "\x03"]) {
        const tty = Bun.spawn(["script", "-qec", `${process.execPath} ${MAIN} top --admin ${admin}`, "/dev/null"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
        children.push(tty);
        const screen = new Response(tty.stdout).text();
        await Bun.sleep(2_500);
        tty.stdin.write(key);
        await tty.stdin.flush();
        const timer = setTimeout(() => tty.kill("SIGKILL"), 10_000);
        expect(await tty.exited).toBe(0);
        clearTimeout(timer);
        const shown = await screen;
        expect(shown.startsWith("\x1b[?1049h")).toBe(true);
        expect(shown.split("\x1b[H\x1b[2J").length).toBeGreaterThanOrEqual(3); // refreshed at least once
        expect(shown).toContain("broken");
        expect(shown.trimEnd().endsWith("\x1b[?25h\x1b[?1049l")).toBe(true);
      }

      // edgeproxy dashboard: the loopback forwarder.
      const fwd = Bun.spawn([process.execPath, MAIN, "dashboard", "--admin", admin], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
      children.push(fwd);
      const reader = fwd.stdout.getReader();
      let printed = "";
      const deadline = Date.now() + 15_000;
      while (!/#token=\w+/.test(printed) && Date.now() < deadline) {
        const { value, done } = await Promise.race([reader.read(), Bun.sleep(deadline - Date.now()).then(() => ({ value: undefined, done: true }))]);
        if (done) break;
        printed += new TextDecoder().decode(value);
      }
      const url = /(http:\/\/127\.0\.0\.1:\d+\/)#token=(\w+)/.exec(printed);
      expect(url).not.toBeNull();
      const [full, base, token] = url!;
      const auth = ["-H", `Authorization: Bearer ${token}`];
      expect((await curl(base!)).status).toBe(200); // the page itself needs no token
      expect((await curl(`${base}dashboard.json`)).status).toBe(401);
      expect((await curl(`${base}dashboard.json`, ["-H", "Authorization: Bearer wrong"])).status).toBe(401);
      const viaFwd = JSON.parse((await curl(`${base}dashboard.json`, auth)).body) as DashboardView;
      expect(viaFwd.services[0]!.totals.connections).toBe(N);
      expect(viaFwd.services[1]!.totals.errors.origin).toBe(M);
      expect((await curl(`${base}metrics`, auth)).body).toContain("edgeproxy_connections_total{");
      for (const method of ["POST", "DELETE", "PUT"]) {
        const res = await curl(`${base}drain`, [...auth, "-X", method]);
        expect(res.status).toBe(405);
        expect(res.headers).toContain("allow: get, head");
      }
      // The refused POST /drain did not reach the serve: it still answers.
      expect((await fetch("http://localhost/healthz", { unix: admin } as RequestInit)).status).toBe(200);

      if (!CHROMIUM) throw new Error("chromium is not installed (build/setup.sh installs it)");
      mkdirSync(OUT, { recursive: true });
      const shot = join(OUT, "dashboard.png");
      rmSync(shot, { force: true });
      await chromium(full!, [`--screenshot=${shot}`]);
      expect(existsSync(shot)).toBe(true);
      expect(statSync(shot).size).toBeGreaterThan(20_000);
      // What the browser rendered: the service row with its totals, chart lines drawn from the samples, no error.
      const dom = await chromium(full!, ["--dump-dom"]);
      expect(dom).toContain(`<td>${svc.name}</td><td>tcp/${DEFAULT_ENGINE}</td>`);
      expect(dom).toContain(`<td class="n">${N}</td>`);
      expect(dom).toMatch(/<path d="M[\d.]+ [\d.]+L/);
      expect(dom).toContain("2 workers");
      expect(dom).toMatch(/<i style="background:#[0-9a-f]+"><\/i>origin<\/span>/);
      // The busiest clients' table, in order.
      expect(dom).toContain("<th>client address</th>");
      const rows = [...dom.matchAll(/<tr><td>(192\.0\.2\.\d+)<\/td><td class="n">(\d+)<\/td>/g)].map((m) => [m[1], Number(m[2])]);
      expect(rows).toEqual([[A, FROM_A], [B, N - FROM_A], ["192.0.2.1", M]]);
      expect(dom).toContain(`<td class="n">56.0kB</td>`);
      expect(dom).toContain("counted at accept by each of 2 workers");
      expect(dom).toContain('<span id="err"></span>');
      expect(dom).toContain(">-60 s</text>");

      fwd.kill("SIGINT");
      expect(await fwd.exited).toBe(0);
    } finally {
      for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
