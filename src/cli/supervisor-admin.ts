import { Hono } from "hono";
import { bodyOf, clientErrorResponse, limitBodies, readBodies, renderAdminRefusals, requireToken, upgradeBody } from "../admin/api";
import { ConfigError, errorLine } from "../errors";
import { METRICS_CONTENT_TYPE } from "../admin/metrics";
import type { StatusSnapshot } from "../admin/backend";
import { totalStatus } from "../admin/total";
import type { Supervisor, WorkerState } from "./supervisor";
import { DRAIN_TIMEOUT_MS } from "./serve";
import { VERSION } from "../version";
import { DashboardSampler, mergeReadings, readStatus, type Reading } from "../admin/dashboard";
import { dashboardRoutes } from "../admin/dashboard-page";

/** What GET /workers (and /status's `workers`) say of one worker. */
export interface WorkerSnapshot {
  readonly index: number;
  readonly pid: number | undefined;
  readonly ready: boolean;
  readonly restarts: number;
  /** Unix seconds. */
  readonly startedAt: number;
  /** Per service: connections (tcp, http) or flows (udp) this worker has open and has had. */
  readonly services: readonly { name: string; active: number; total: number }[];
}

async function ask(w: WorkerState, path: string, init: RequestInit = {}): Promise<Response> {
  if (!w.admin) throw new Error("the admin API is off");
  // A new connection per question: a pooled one may be the one the worker's server is closing as idle at that
  // very moment (Bun.serve's idle timeout), and fetch would fail on it (seen: a reload answered 500 under load).
  const headers = new Headers(init.headers);
  headers.set("connection", "close");
  return fetch(`http://localhost${path}`, { ...init, headers, unix: w.admin } as RequestInit);
}

// Headers of one connection, not of the request (RFC 9110 7.6.1), and the ones fetch sets itself.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "date"]);

const live = (sup: Supervisor) => sup.workers.filter((w) => w.ready && w.admin);

interface WorkerStatus {
  services: { name: string; connections?: { active: number; total: number }; datagrams?: { flowsActive: number; flowsTotal: number } }[];
}

async function snapshot(w: WorkerState): Promise<WorkerSnapshot> {
  let services: WorkerSnapshot["services"] = [];
  if (w.ready) {
    try {
      const s = (await (await ask(w, "/status")).json()) as WorkerStatus;
      services = s.services.map((v) => ({
        name: v.name,
        active: v.connections?.active ?? v.datagrams?.flowsActive ?? 0,
        total: v.connections?.total ?? v.datagrams?.flowsTotal ?? 0,
      }));
    } catch {
      // Restarting or draining: no figures this time.
    }
  }
  return { index: w.index, pid: w.proc?.pid, ready: w.ready, restarts: w.restarts, startedAt: w.startedAt / 1000, services };
}

/**
 * Prometheus text of every worker as one exposition: each sample gains a
 * `worker` label, and a family's samples stay together under one HELP/TYPE
 * (the text format wants a family in one group). Kernel counters are the
 * same in every worker (one dispatcher), so they are taken from one worker only.
 */
export function mergeMetrics(texts: readonly { worker: number; text: string }[]): string {
  const families = new Map<string, { head: string[]; samples: string[] }>();
  const shared = /^edgeproxy_(kernel_|build_info)/;
  // Workers' admin sockets only see what the supervisor's API passed on: its own refusals are the ones that count.
  const own = /^edgeproxy_admin_/;
  for (const { worker, text } of texts) {
    let current: { head: string[]; samples: string[] } | undefined;
    let name = "";
    for (const line of text.split("\n")) {
      if (!line) continue;
      const m = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (m) {
        name = m[2]!;
        if (own.test(name)) {
          current = undefined;
          continue;
        }
        current = families.get(name);
        if (!current) families.set(name, (current = { head: [], samples: [] }));
        if (current.head.length < 2 && !current.head.some((h) => h.startsWith(`# ${m[1]} `))) current.head.push(line);
        continue;
      }
      if (!current) continue;
      if (shared.test(name)) {
        if (worker === texts[0]!.worker) current.samples.push(line);
        continue;
      }
      const brace = line.indexOf("{");
      const space = line.indexOf(" ");
      current.samples.push(
        brace >= 0 && brace < space ? `${line.slice(0, brace + 1)}worker="${worker}",${line.slice(brace + 1)}` : `${line.slice(0, space)}{worker="${worker}"}${line.slice(space)}`,
      );
    }
  }
  return [...families.values()].flatMap((f) => [...f.head, ...f.samples]).join("\n") + "\n";
}

/** The supervisor's admin API: its own routes, the rest answered by a worker (they share one dispatcher). */
export function supervisorApp(sup: Supervisor): Hono {
  const app = new Hono();
  limitBodies(app);
  if (sup.config.admin.kind === "tcp") requireToken(app, sup.config.admin.token);
  readBodies(app);
  app.onError((err, c) => {
    const answer = clientErrorResponse(c, err);
    if (answer) return answer;
    sup.say(`admin: ${c.req.method} ${c.req.path}: ${errorLine(err)}`);
    return c.json({ error: "internal error" }, 500);
  });
  app.get("/healthz", async (c) => {
    if (sup.lost) return c.text(`steering lost: ${sup.lost}`, 503);
    const first = live(sup)[0];
    if (!first) return c.text("no worker is ready", 503);
    // A worker checks the steering it shares with the others now (server/watchdog.ts), not at its next tick.
    // Bounded: a worker that does not answer within a second is not healthy either (onError: 500).
    const res = await ask(first, "/healthz", { signal: AbortSignal.timeout(1000) });
    return res.ok ? c.text("ok") : c.text(await res.text(), 503);
  });
  app.get("/workers", async (c) => c.json(await Promise.all(sup.workers.map(snapshot))));
  app.get("/metrics", async (c) => {
    const texts = await Promise.all(live(sup).map(async (w) => ({ worker: w.index, text: await (await ask(w, "/metrics")).text() })));
    return c.body(mergeMetrics(texts) + renderAdminRefusals(), 200, { "Content-Type": METRICS_CONTENT_TYPE });
  });
  // Each worker counts what it handled: /status and /services add every ready worker's figures up, as /metrics does.
  const total = async (): Promise<StatusSnapshot | undefined> => {
    const statuses = await Promise.all(live(sup).map(async (w) => (await ask(w, "/status")).json() as Promise<StatusSnapshot>));
    return statuses.length ? totalStatus(statuses) : undefined;
  };
  app.get("/status", async (c) => {
    const status = await total();
    if (!status) return c.json({ error: "no worker is ready" }, 503);
    return c.json({ ...status, pid: process.pid, startedAt: sup.startedAt, workers: await Promise.all(sup.workers.map(snapshot)) });
  });
  app.get("/services", async (c) => {
    const status = await total();
    return status ? c.json(status.services) : c.json({ error: "no worker is ready" }, 503);
  });
  app.get("/services/:name", async (c) => {
    const status = await total();
    if (!status) return c.json({ error: "no worker is ready" }, 503);
    const found = status.services.find((s) => s.name === c.req.param("name"));
    return found ? c.json(found) : c.json({ error: `no service named ${c.req.param("name")}` }, 404);
  });
  app.post("/reload", async (c) => {
    const answers = await Promise.all(live(sup).map(async (w) => ({ res: await ask(w, "/reload", { method: "POST" }) })));
    const bad = answers.find((a) => !a.res.ok);
    if (bad) return c.json(await bad.res.json(), bad.res.status as 400);
    const first: { summary?: string; reloaded?: boolean } = answers.length ? ((await answers[0]!.res.json()) as { summary?: string }) : { reloaded: false };
    // The workers applied what they can; the supervisor names what needs new processes (workers, ...).
    const notes = await sup.restartNotes();
    return c.json(notes ? { ...first, summary: `${first.summary ?? "no change"}${notes}` } : first);
  });
  app.get("/instance", (c) =>
    c.json({ instance: sup.config.instance, pid: process.pid, ...(sup.config.source ? { source: sup.config.source } : {}), workers: sup.workers.length, version: VERSION, startedAt: sup.startedAt }),
  );
  app.post("/drain", (c) => {
    void sup.stop("drain");
    return c.json({ draining: true, summary: `pid ${process.pid} and its ${sup.workers.length} workers take no new connections; open ones may finish within ${(sup.config.drainTimeoutMs ?? DRAIN_TIMEOUT_MS) / 1000} s, then they exit` });
  });
  app.post("/upgrade", async (c) => {
    const body = upgradeBody(c);
    if (body.binary !== undefined && typeof body.binary !== "string") return c.json({ error: "upgrade: binary must be a path" }, 400);
    try {
      return c.json({ upgraded: true, summary: await sup.upgrade(body.binary as string | undefined) });
    } catch (e) {
      // A bad request (400), or the new process failed (502).
      return c.json({ error: (e as Error).message }, e instanceof ConfigError ? 400 : 502);
    }
  });
  dashboardRoutes(app, new DashboardSampler(() => workerReadings(sup)));
  // Bindings and services live in the shared dispatcher: any worker answers for all.
  app.all("*", async (c) => {
    const first = live(sup)[0];
    if (!first) return c.json({ error: "no worker is ready" }, 503);
    // Forwarded whole: method, path with its query string (DELETE .../bindings?protocol=... carries its binding there),
    // headers and body; not the hop-by-hop headers (RFC 9110 7.6.1), the length (recomputed) or the
    // bearer token (the supervisor checked it; a worker's socket is private).
    const url = new URL(c.req.url);
    const headers = new Headers();
    c.req.raw.headers.forEach((value, name) => {
      if (!HOP_BY_HOP.has(name) && name !== "authorization") headers.set(name, value);
    });
    const init: RequestInit = { method: c.req.method, headers };
    // Read by readBodies with the API's limit: at most ADMIN_MAX_BODY_BYTES held.
    if (c.req.method !== "GET" && c.req.method !== "HEAD") init.body = bodyOf(c);
    const res = await ask(first, `${url.pathname}${url.search}`, init);
    const back = new Headers();
    res.headers.forEach((value, name) => {
      if (!HOP_BY_HOP.has(name)) back.set(name, value);
    });
    return new Response(res.body, { status: res.status, headers: back });
  });
  return app;
}

/**
 * The dashboard's reading: every ready worker's status, summed (kernel
 * counters from the first only: one dispatcher). A worker that does not
 * answer within a second is left out of this sample.
 */
async function workerReadings(sup: Supervisor): Promise<Reading | undefined> {
  const statuses = await Promise.all(
    live(sup).map(async (w) => {
      try {
        return (await (await ask(w, "/status", { signal: AbortSignal.timeout(1_000) })).json()) as Parameters<typeof readStatus>[0];
      } catch {
        return undefined;
      }
    }),
  );
  // Kernel counters from the first that answered: a missing worker must not make them dip and jump back.
  const answered = statuses.filter((s) => s !== undefined);
  return mergeReadings(
    answered.map((s, i) => readStatus(s, i === 0)),
    process.pid,
  );
}
