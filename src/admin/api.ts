import { createHash, timingSafeEqual } from "node:crypto";
import { Hono, type Context } from "hono";
import { ConfigError } from "../errors";
import type { AdminBackend, ServiceSnapshot } from "./backend";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics";

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
class HttpError extends Error {
  constructor(
    readonly status: 400 | 401 | 404,
    message: string,
  ) {
    super(message);
  }
}

/** Every route of `app` but /healthz needs `Authorization: Bearer <token>`. */
export function requireToken(app: Hono, token: string): void {
  const expected = digest(token);
  app.use("*", async (c, next) => {
    if (c.req.path === "/healthz") return next();
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
 * JSON bodies: kernel counters (bigint) are decimal strings, so a u64 survives
 * any JSON parser; every other count is a JSON number; a histogram's +Inf
 * bucket bound is the string "+Inf". Errors are `{"error": "<one line>"}`.
 */
export function createAdminApp(backend: AdminBackend, options: AdminAppOptions = {}): Hono {
  const app = new Hono();
  const log = options.log ?? ((line: string) => console.error(line));

  if (options.token !== undefined) requireToken(app, options.token);

  app.get("/healthz", (c) => c.text("ok"));

  app.get("/metrics", (c) => c.body(renderMetrics(backend.status()), 200, { "Content-Type": METRICS_CONTENT_TYPE }));

  app.get("/status", (c) => json(c, backend.status()));

  app.get("/services", (c) => json(c, backend.status().services));

  app.get("/services/:name", (c) => json(c, service(backend, c.req.param("name"))));

  app.get("/services/:name/bindings", (c) => json(c, service(backend, c.req.param("name")).bindings));

  app.post("/services/:name/bindings", async (c) => {
    const name = c.req.param("name");
    service(backend, name);
    const b = bindingInput(await jsonBody(c));
    backend.addBinding(name, b.protocol, b.prefix, b.ports);
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
    const body = (await c.req.json().catch(() => ({}))) as { binary?: unknown };
    if (body.binary !== undefined && typeof body.binary !== "string") throw new ConfigError("upgrade", "binary must be a path");
    try {
      return json(c, { upgraded: true, summary: await backend.upgrade(body.binary as string | undefined) });
    } catch (e) {
      // The new process failed (not this request): 502, with its reason.
      if (e instanceof ConfigError) throw e;
      return c.json({ error: oneLine((e as Error).message) }, 502);
    }
  });

  app.notFound((c) => c.json({ error: `no route ${c.req.method} ${c.req.path}` }, 404));

  app.onError((err, c) => {
    if (err instanceof HttpError) return c.json({ error: err.message }, err.status);
    if (err instanceof ConfigError) return c.json({ error: oneLine(err.message) }, 400);
    log(`admin: ${c.req.method} ${c.req.path}: ${err.stack ?? err.message}`);
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

async function jsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text();
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

function jsonReplacer(_key: string, v: unknown): unknown {
  if (typeof v === "bigint") return v.toString();
  if (v === Infinity) return "+Inf";
  return v;
}
