// An origin that misbehaves, on both engines of a tcp service: it accepts
// and resets at once, accepts and closes at once, or never answers the SYN.
// The client must be told at once (or at connect_timeout), the origin error
// counted in its class and blamed on the origin only for a failed connect
// (passive ejection counts consecutive failed connects: an origin that
// accepted did connect), the access log line must say what happened, and
// the proxy must end with no connection open and no descriptor more.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { linesOf, logDir } from "./helpers/accesslog";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { exchange } from "./helpers/net";
import { blackhole } from "./helpers/netns";
import { scrape, workdir, writeConfig } from "./helpers/pools";
import { fdCount, settled as settledAt, until } from "./helpers/wait";

const f = proxyFixture();
const ORIGIN_PORT = 9000;


describe.each(["epoll", "bun"] as const)("an origin that misbehaves (tcp, engine %s)", (engine) => {
  async function start(origin: string, extra = "", eject = 'eject = { failures = 1, base_duration = "30s", duration = "30s" }'): Promise<{ w: ReturnType<typeof workdir>; log: string; fds: number }> {
    const w = workdir();
    const log = join(logDir(), "access.log");
    writeConfig(w, {
      origins: [origin],
      ports: "7000-7010",
      extra: `engine = "${engine}"\naccess_log = "${log}"\n${eject}\n${extra}`,
    });
    f.ep = await EdgeproxyProcess.start(["serve", "--config", w.file]);
    await scrape(w.admin);
    return { w, log, fds: fdCount(f.ep.pid) };
  }

  const settled = (w: ReturnType<typeof workdir>, fds: number) => settledAt(w.admin, f.ep!.pid, fds);

  test("accepted then reset at once: the client is reset, counted as a reset", async () => {
    // A close with unread bytes is an RST (RFC 9293 §3.6.1, RFC 2525 §2.17): the origin stops reading, lets the client's
    // bytes arrive, then closes. A close at accept could be a plain FIN when nothing had arrived yet (seen under load).
    f.servers.push(Bun.listen({ hostname: "127.0.0.1", port: ORIGIN_PORT, socket: { open: (s) => void (s.pause(), setTimeout(() => s.terminate(), 150)), data() {} } }));
    // Not ejected for it here: whether the RST comes before the connect is seen done (a failed connect, ejected) is a race.
    const { w, fds } = await start(`127.0.0.1:${ORIGIN_PORT}`, "", "eject = { failures = 100 }");
    try {
      const outcomes = [];
      for (let i = 0; i < 10; i++) outcomes.push((await exchange("192.0.2.1", 7000 + i, "hello", 3000)).kind);
      expect(outcomes).toEqual(Array(10).fill("reset"));
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "reset" })).toBe(10);
      await settled(w, fds);
    } finally {
      w.done();
    }
  });

  test("refused, after the client's FIN alone (a client that only reads): reset at once, and the log line says the origin refused", async () => {
    const l = Bun.listen({ hostname: "127.0.0.1", port: ORIGIN_PORT, socket: { data() {} } });
    l.stop(true);
    const { w, log, fds } = await start(`127.0.0.1:${ORIGIN_PORT}`);
    try {
      expect((await exchange("192.0.2.1", 7000, "", 3000)).kind).toBe("reset");
      expect((await scrape(w.admin))("edgeproxy_origin_errors_total", { class: "refused" })).toBe(1);
      await settled(w, fds);
      const lines = await linesOf(log, 1);
      expect(lines.map((l) => `${l.event} ${l.reason}`)).toEqual(["origin_error origin_refused"]);
    } finally {
      w.done();
    }
  });

  test("accepted then closed at once: the client gets the FIN, nothing is an error", async () => {
    f.servers.push(Bun.listen({ hostname: "127.0.0.1", port: ORIGIN_PORT, socket: { open: (s) => void s.end(), data() {} } }));
    const { w, fds } = await start(`127.0.0.1:${ORIGIN_PORT}`);
    try {
      for (let i = 0; i < 3; i++) expect((await exchange("192.0.2.1", 7000 + i, "", 3000)).kind).toBe("data");
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "reset" })).toBe(0);
      expect(m("edgeproxy_origin_ejections_total")).toBe(0);
      await settled(w, fds);
    } finally {
      w.done();
    }
  });

  test("an origin that never answers the SYN: reset at connect_timeout, counted, ejected; the engine closes the connect then", async () => {
    blackhole(); // SYNs to 198.51.100.2 go nowhere (helpers/netns.ts)
    const { w, log, fds } = await start("198.51.100.2:80", 'connect_timeout = "400ms"');
    try {
      const t0 = performance.now();
      // The last client sends its FIN alone: the connect's failure, not that FIN, is why its connection ended.
      const rs = await Promise.all([7000, 7001, 7002].map((port) => exchange("192.0.2.1", port, port === 7002 ? "" : "hello", 5000)));
      const ms = performance.now() - t0;
      expect(rs.map((r) => r.kind)).toEqual(["reset", "reset", "reset"]);
      expect(ms).toBeGreaterThan(300);
      expect(ms).toBeLessThan(3000);
      const m = await scrape(w.admin);
      expect(m("edgeproxy_origin_errors_total", { class: "timeout" })).toBe(3);
      expect(m("edgeproxy_origin_ejections_total")).toBeGreaterThanOrEqual(1);
      // Bun.connect gives no handle on a connect under way: its descriptor stays until the kernel gives up (test/origin-faults.test.ts).
      if (engine === "epoll") await settled(w, fds);
      else expect(await until(async () => (await scrape(w.admin))("edgeproxy_connections_active") === 0, 3000)).toBe(true);
      const lines = await linesOf(log, 3);
      expect(lines.map((l) => `${l.event} ${l.reason}`)).toEqual(Array(3).fill("origin_error origin_connect_timeout"));
    } finally {
      w.done();
    }
  });
});
