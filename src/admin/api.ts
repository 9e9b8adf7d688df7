import { createHash, timingSafeEqual } from "node:crypto";
import { jsonReplacer } from "../json";
import { Hono, type Context } from "hono";
import { ConfigError, errorLine } from "../errors";
import { Fields } from "../config/schema";
import type { AdminBackend, ServiceSnapshot } from "./backend";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics";
import { DashboardSampler, readStatus } from "./dashboard";
import { dashboardRoutes } from "./dashboard-page";

/** Options of createAdminApp. */
export interface AdminAppOptions {
  /** When set, every route but /healthz needs `Authorization: Bearer <token>`. */
  readonly token?: string;
  /** Where 5xx causes go (the client only sees "internal error"); default console.error. */
  readonly log?: (line: string) => void;
}

interface BindingInput {
  protocol: string;
  prefix: string;
  ports: string;
}

// An error whose status and one-line message go to the client as is.
export class HttpError extends Error {
  constructor(
    readonly status: 400 | 401 | 404 | 408 | 413,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The largest admin request body. Every body the API takes is a small JSON
 * object (a binding, an upgrade's binary path): a few hundred bytes.
 */
export const ADMIN_MAX_BODY_BYTES = 4 << 20;
/** How long a request body may take to arrive, whole: a local client sends 4 MiB in milliseconds. */
export const ADMIN_BODY_TIMEOUT_MS = 10_000;

// Requests this process's admin API refused for their body, by reason: every limit is counted.
const refusals = { too_large: 0, timeout: 0 };

/** edgeproxy_admin_requests_refused_total, this process's (a supervisor renders its own, not its workers'). */
export function renderAdminRefusals(): string {
  return [
    "# HELP edgeproxy_admin_requests_refused_total Admin API requests refused for their body: too_large (over 4 MiB, 413), timeout (not received within 10 s, 408).",
    "# TYPE edgeproxy_admin_requests_refused_total counter",
    ...Object.entries(refusals).map(([reason, n]) => `edgeproxy_admin_requests_refused_total{reason="${reason}"} ${n}`),
    "",
  ].join("\n");
}

const tooLarge = () => {
  refusals.too_large++;
  return new HttpError(413, `request body larger than ${ADMIN_MAX_BODY_BYTES >> 20} MiB; the admin API takes small JSON objects`);
};

/**
 * A request's body as text, read as it arrives and refused past `maxBytes`:
 * at once on its Content-Length, else (chunked) as soon as the bytes counted
 * pass it, so the API never holds more than `maxBytes` of one request
 * (buffering it whole let five 100 MB uploads grow the supervisor by 600 MB).
 * A body that has not arrived within `timeoutMs` is refused with 408.
 */
export async function readBody(req: Request, maxBytes = ADMIN_MAX_BODY_BYTES, timeoutMs = ADMIN_BODY_TIMEOUT_MS): Promise<string> {
  const length = req.headers.get("content-length");
  if (length !== null && Number(length) > maxBytes) throw tooLarge();
  if (!req.body) return "";
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  let timer: Timer | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      refusals.timeout++;
      reject(new HttpError(408, `request body not received within ${timeoutMs / 1000} s`));
    }, timeoutMs);
  });
  try {
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), deadline]);
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) throw tooLarge();
      chunks.push(value);
    }
  } catch (e) {
    // Over the limit, the rest is left to the answer's lingering drain (refusal); a stalled body is dropped.
    if (e instanceof HttpError && e.status === 413) reader.releaseLock();
    else reader.cancel().catch(() => {});
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

const bodies = new WeakMap<Request, string>();

/**
 * Refuse a declared Content-Length over the limit before anything else runs,
 * the token check included (the answer says nothing about the API).
 */
export function limitBodies(app: Hono): void {
  app.use("*", async (c, next) => {
    const length = c.req.header("content-length");
    if (length !== undefined && Number(length) > ADMIN_MAX_BODY_BYTES) throw tooLarge();
    return next();
  });
}

/**
 * Read every request's body, with readBody's limit and deadline, before any
 * route runs: routes that ignore their body are bounded as well as those that
 * use it. Registered after the token check, so only an authenticated client
 * makes the API hold a body. Routes take it with bodyOf.
 */
export function readBodies(app: Hono): void {
  app.use("*", async (c, next) => {
    bodies.set(c.req.raw, await readBody(c.req.raw));
    return next();
  });
}

/** The body readBodies read ("" when there was none). */
export function bodyOf(c: Context): string {
  return bodies.get(c.req.raw) ?? "";
}

/**
 * The answer to an error a request caused (HttpError, ConfigError): its
 * status and one-line JSON message; undefined for anything else (a bug).
 * A refused body is not read whole: the connection closes after the answer
 * (a body that is too large gets a short lingering drain first, refusal()).
 */
export function clientErrorResponse(c: Context, err: Error): Response | undefined {
  if (err instanceof HttpError) {
    if (err.status === 413) return refusal(c.req.raw, err);
    if (err.status === 408) c.header("Connection", "close");
    return c.json({ error: err.message }, err.status);
  }
  if (err instanceof ConfigError) return c.json({ error: oneLine(err.message) }, 400);
  return undefined;
}

/**
 * After a 413, at most this much more of the body is read and dropped, for at
 * most this long, before the connection closes (refusal()).
 */
export const ADMIN_LINGER_BYTES = 1 << 20;
export const ADMIN_LINGER_MS = 1_000;

/**
 * A 413 that the client gets to read. Bun's server answers every
 * "Expect: 100-continue" with 100 Continue before a handler runs (it cannot
 * be turned off, even for a Content-Length over its own maxRequestBodySize),
 * so a client such as curl is sending the body when the refusal is decided.
 * Closing at once with the body still arriving makes the client's next write
 * fail (EPIPE on the unix socket, a reset over TCP) and curl gives up before
 * reading the answer it already holds (exit 55; the last status it saw is the
 * interim 100). RFC 9112 §9.6 asks for a lingering close: the answer goes out
 * first (a stream, so it is written at once), then up to ADMIN_LINGER_BYTES more
 * of the body are read and dropped, for at most ADMIN_LINGER_MS, and only
 * then does the answer end and the connection close. Nothing is held: the
 * bytes drained are discarded as they arrive.
 */
function refusal(req: Request, err: HttpError): Response {
  const answer = new TextEncoder().encode(JSON.stringify({ error: err.message }));
  const headers = { "Content-Type": "application/json", Connection: "close" };
  const body = req.body && !req.body.locked ? req.body : null;
  if (!body) return new Response(answer, { status: err.status, headers });
  // The drain starts when the answer has been taken (by Bun's server: written), and ends the answer.
  const stream = new ReadableStream<Uint8Array>({
    start(out) {
      out.enqueue(answer);
    },
    async pull(out) {
      await drain(body, ADMIN_LINGER_BYTES, ADMIN_LINGER_MS);
      out.close();
    },
  });
  return new Response(stream, { status: err.status, headers });
}

/** Read and drop up to `maxBytes` of `body`, for at most `ms`; then cancel the rest. Never throws. */
async function drain(body: ReadableStream<Uint8Array>, maxBytes: number, ms: number): Promise<void> {
  const reader = body.getReader();
  let timer: Timer | undefined;
  const deadline = new Promise<{ done: true }>((resolve) => (timer = setTimeout(() => resolve({ done: true }), ms)));
  let total = 0;
  try {
    while (total <= maxBytes) {
      const r = await Promise.race([reader.read(), deadline]);
      if (r.done) break;
      total += r.value?.byteLength ?? 0;
    }
  } catch {
    // The client went away: nothing left to linger for.
  } finally {
    clearTimeout(timer);
    reader.cancel().catch(() => {});
  }
}

/** Every route of `app` but /healthz and / (the dashboard's page, which holds no figures) needs `Authorization: Bearer <token>`. */
export function requireToken(app: Hono, token: string): void {
  const expected = digest(token);
  app.use("*", async (c, next) => {
    if (c.req.path === "/healthz" || (c.req.path === "/" && c.req.method === "GET")) return next();
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer (.+)$/i.exec(header);
    // Comparing fixed-size digests keeps the time independent of where, and whether lengths, differ.
    if (!match || !timingSafeEqual(digest(match[1]!), expected)) {
      c.header("WWW-Authenticate", 'Bearer realm="edgeproxy"');
      return c.json({ error: "missing or wrong bearer token" }, 401);
    }
    return next();
  });
}

/**
 * The admin HTTP API over an AdminBackend.
 *
 * JSON bodies (src/json.ts): kernel counters (bigint) are JSON numbers up to
 * 2^53 and decimal strings above, so a u64 survives any JSON parser; every
 * other count is a JSON number; a histogram's +Inf
 * bucket bound is the string "+Inf". Errors are `{"error": "<one line>"}`.
 */
export function createAdminApp(backend: AdminBackend, options: AdminAppOptions = {}): Hono {
  const app = new Hono();
  const log = options.log ?? ((line: string) => console.error(line));

  limitBodies(app);
  if (options.token !== undefined) requireToken(app, options.token);
  readBodies(app);

  app.get("/healthz", (c) => {
    const bad = backend.health?.();
    return bad ? c.text(bad, 503) : c.text("ok");
  });

  app.get("/metrics", async (c) => {
    await backend.fresh?.();
    return c.body(renderMetrics(backend.status()) + renderAdminRefusals(), 200, { "Content-Type": METRICS_CONTENT_TYPE });
  });

  app.get("/status", async (c) => {
    await backend.fresh?.();
    return json(c, backend.status());
  });

  dashboardRoutes(app, new DashboardSampler(() => readStatus(backend.status())));

  app.get("/services", async (c) => {
    await backend.fresh?.();
    return json(c, backend.status().services);
  });

  app.get("/services/:name", (c) => json(c, service(backend, c.req.param("name"))));

  app.get("/services/:name/bindings", (c) => json(c, service(backend, c.req.param("name")).bindings));

  app.post("/services/:name/bindings", async (c) => {
    const name = c.req.param("name");
    service(backend, name);
    const b = bindingInput(await jsonBody(c));
    await backend.addBinding(name, b.protocol, b.prefix, b.ports);
    return json(c, b, 201);
  });

  app.delete("/services/:name/bindings", async (c) => {
    const name = c.req.param("name");
    service(backend, name);
    const q = c.req.query();
    const fromQuery = "protocol" in q || "prefix" in q || "ports" in q;
    const b = bindingInput(fromQuery ? q : await jsonBody(c));
    if (!backend.removeBinding(name, b.protocol, b.prefix, b.ports)) {
      throw new HttpError(404, `service ${name} has no binding ${b.protocol} ${b.prefix} ports ${b.ports}`);
    }
    return c.body(null, 204);
  });

  app.post("/reload", async (c) => {
    const summary = await backend.reload();
    return json(c, { reloaded: true, ...(summary ? { summary } : {}) });
  });

  app.post("/upgrade", async (c) => {
    if (!backend.upgrade) throw new HttpError(404, "this process cannot be upgraded through its admin API (a worker: ask its supervisor)");
    const body = upgradeBody(c);
    if (body.binary !== undefined && typeof body.binary !== "string") throw new ConfigError("upgrade", "binary must be a path");
    try {
      return json(c, { upgraded: true, summary: await backend.upgrade(body.binary as string | undefined) });
    } catch (e) {
      // The new process failed (not this request): 502, with its reason.
      if (e instanceof ConfigError) throw e;
      return c.json({ error: oneLine((e as Error).message) }, 502);
    }
  });

  app.get("/instance", (c) => {
    if (!backend.identity) throw new HttpError(404, "a worker: ask its supervisor");
    return json(c, backend.identity());
  });

  app.post("/drain", (c) => {
    if (!backend.drain) throw new HttpError(404, "this process cannot be drained through its admin API (a worker: ask its supervisor)");
    return json(c, { draining: true, summary: backend.drain() });
  });

  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));

  app.onError((err, c) => {
    const answer = clientErrorResponse(c, err);
    if (answer) return answer;
    log(`admin: ${c.req.method} ${c.req.path}: ${errorLine(err)}`);
    return c.json({ error: "internal error" }, 500);
  });

  return app;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

function oneLine(s: string): string {
  return s.split("\n", 1)[0]!;
}

function service(backend: AdminBackend, name: string): ServiceSnapshot {
  const found = backend.status().services.find((s) => s.name === name);
  if (!found) throw new HttpError(404, `no service named ${name}`);
  return found;
}

/** POST /upgrade's optional body {binary}: no body, or one that is not JSON, asks for no binary, as before. */
export function upgradeBody(c: Context): { binary?: unknown } {
  const text = bodyOf(c);
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === "object" && v !== null ? (v as { binary?: unknown }) : {};
  } catch {
    return {};
  }
}

function jsonBody(c: Context): unknown {
  const text = bodyOf(c);
  if (text.trim() === "") throw new HttpError(400, "expected a JSON body {protocol, prefix, ports}");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `bad JSON body: ${oneLine((e as Error).message)}`);
  }
}

function bindingInput(body: unknown): BindingInput {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpError(400, "expected a JSON object {protocol, prefix, ports}");
  }
  const o = body as Record<string, unknown>;
  // As in a config file (its own check, with its "did you mean"), an unknown field is an error: a misspelt one must not be dropped unnoticed.
  Fields.of(o, "binding", ".", ["protocol", "prefix", "ports"]);
  const field = (k: keyof BindingInput): string => {
    const v = o[k];
    // A single port may come as a JSON number.
    if (k === "ports" && typeof v === "number" && Number.isInteger(v)) return String(v);
    if (typeof v !== "string" || v === "") throw new HttpError(400, `missing or non-string field "${k}"`);
    return v;
  };
  return { protocol: field("protocol"), prefix: field("prefix"), ports: field("ports") };
}

function json(c: Context, value: unknown, status: 200 | 201 = 200): Response {
  return c.body(JSON.stringify(value, jsonReplacer), status, { "Content-Type": "application/json; charset=utf-8" });
}

