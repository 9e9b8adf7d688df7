import { expect, test } from "bun:test";
import { ConfigError, EnvironmentError } from "../errors";
import { ADMIN_LINGER_BYTES, ADMIN_MAX_BODY_BYTES, createAdminApp, HttpError, readBody } from "./api";
import type { AdminBackend, BindingSnapshot, StatusSnapshot } from "./backend";
import { sampleStatus } from "./fixture";

// An in-memory backend over the fixture; bindings are mutable, reload does what `next` says.
class FakeBackend implements AdminBackend {
  readonly base = sampleStatus();
  readonly bindings = new Map(this.base.services.map((s) => [s.name, [...s.bindings]]));
  reloads = 0;
  next: "ok" | "config" | "crash" = "ok";
  statusError: Error | undefined;

  status(): StatusSnapshot {
    if (this.statusError) throw this.statusError;
    return { ...this.base, services: this.base.services.map((s) => ({ ...s, bindings: this.bindings.get(s.name)! })) };
  }
  private list(service: string): BindingSnapshot[] {
    const l = this.bindings.get(service);
    if (!l) throw new ConfigError(`service ${service}`, "no such service");
    return l;
  }
  addBinding(service: string, protocol: string, prefix: string, ports: string): void {
    if (protocol !== "tcp" && protocol !== "udp") throw new ConfigError("binding", `unknown protocol ${protocol}\nsecond line`);
    const l = this.list(service);
    if (!l.some((b) => b.protocol === protocol && b.prefix === prefix && b.ports === ports)) l.push({ protocol, prefix, ports });
  }
  removeBinding(service: string, protocol: string, prefix: string, ports: string): boolean {
    const l = this.list(service);
    const i = l.findIndex((b) => b.protocol === protocol && b.prefix === prefix && b.ports === ports);
    if (i < 0) return false;
    l.splice(i, 1);
    return true;
  }
  async reload(): Promise<void> {
    this.reloads++;
    if (this.next === "config") throw new ConfigError("edgeproxy.toml:3", "bad prefix");
    if (this.next === "crash") throw new EnvironmentError("bpf", "map update failed");
  }
}

function setup(token?: string) {
  const backend = new FakeBackend();
  const logged: string[] = [];
  const app = createAdminApp(backend, { token, log: (l) => logged.push(l) });
  const req = (path: string, init?: RequestInit) => app.request(path, init);
  const send = (method: string, path: string, body?: unknown) =>
    app.request(path, { method, body: typeof body === "string" ? body : JSON.stringify(body), headers: { "Content-Type": "application/json" } });
  return { backend, app, req, send, logged };
}

// Response.json() is typed unknown; these tests look into the bodies freely.
async function json(r: Response | Promise<Response>): Promise<any> {
  return (await r).json();
}

const BINDING: BindingSnapshot = { protocol: "tcp", prefix: "203.0.113.0/24", ports: "8000-8999" };

test("healthz, metrics and status", async () => {
  const { req } = setup();
  const h = await req("/healthz");
  expect(h.status).toBe(200);
  expect(await h.text()).toBe("ok");
  const m = await req("/metrics");
  expect(m.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  expect(await m.text()).toContain('edgeproxy_kernel_lookups_total{service="web"} 18446744073709551615\n');
  const s = await req("/status");
  expect(s.headers.get("content-type")).toStartWith("application/json");
  const body = await json(s);
  expect(body.unmatchedLookups).toBe("9007199254740993");
  expect(body.services[0].kernel.lookups).toBe("18446744073709551615");
  expect(body.services[0].connections.total).toBe(7);
  expect(body.services[0].connections.duration.buckets.at(-1)).toEqual({ le: "+Inf", count: 5 });
  expect(body.services[1].connections).toBeUndefined();
});

test("services, one service, its bindings; unknown service is 404", async () => {
  const { req } = setup();
  expect((await json(req("/services"))).map((s: { name: string }) => s.name)).toEqual(["web", "ext"]);
  expect((await json(req("/services/ext"))).kernel.steered).toBe(9);
  expect(await json(req("/services/web/bindings"))).toEqual([{ protocol: "tcp", prefix: "192.0.2.0/24", ports: "80" }]);
  for (const path of ["/services/nope", "/services/nope/bindings"]) {
    const r = await req(path);
    expect(r.status).toBe(404);
    expect((await json(r)).error).toContain("nope");
  }
});

test("add and remove a binding", async () => {
  const { backend, send, req } = setup();
  const add = await send("POST", "/services/web/bindings", BINDING);
  expect(add.status).toBe(201);
  expect(await json(add)).toEqual(BINDING);
  expect(backend.bindings.get("web")).toContainEqual(BINDING);
  expect((await send("POST", "/services/web/bindings", { ...BINDING, ports: 443 })).status).toBe(201);
  expect(backend.bindings.get("web")).toContainEqual({ ...BINDING, ports: "443" });

  const del = await send("DELETE", "/services/web/bindings", BINDING);
  expect(del.status).toBe(204);
  expect(await del.text()).toBe("");
  expect(backend.bindings.get("web")).not.toContainEqual(BINDING);
  const again = await send("DELETE", "/services/web/bindings", BINDING);
  expect(again.status).toBe(404);

  const q = new URLSearchParams({ ...BINDING, ports: "443" });
  expect((await req(`/services/web/bindings?${q}`, { method: "DELETE" })).status).toBe(204);
  expect((await send("POST", "/services/nope/bindings", BINDING)).status).toBe(404);
  expect((await send("DELETE", "/services/nope/bindings", BINDING)).status).toBe(404);
});

test("bad input is 400 with a one-line error", async () => {
  const { send } = setup();
  const cases: [unknown, string][] = [
    ["{not json", "bad JSON"],
    ["", "expected a JSON body"],
    [[1, 2], "expected a JSON object"],
    [{ protocol: "tcp", prefix: "10.0.0.0/8" }, '"ports"'],
    [{ ...BINDING, prefix: 5 }, '"prefix"'],
    [{ ...BINDING, protocol: "sctp" }, "binding: unknown protocol sctp"],
    [{ ...BINDING, port: "80" }, 'binding: unknown field "port" (did you mean "ports"?)'],
    [{ ...BINDING, owner: "b" }, 'binding: unknown field "owner" (known: protocol, prefix, ports)'],
  ];
  for (const [body, message] of cases) {
    const r = await send("POST", "/services/web/bindings", body);
    expect(r.status).toBe(400);
    const { error } = await json(r);
    expect(error).toContain(message);
    expect(error).not.toContain("\n");
  }
  expect((await send("DELETE", "/services/web/bindings", { protocol: "tcp" })).status).toBe(400);
});

test("reload: 200, 400 on a config error, 500 without details otherwise", async () => {
  const { backend, send, logged } = setup();
  expect((await send("POST", "/reload")).status).toBe(200);
  backend.next = "config";
  const bad = await send("POST", "/reload");
  expect(bad.status).toBe(400);
  expect(await json(bad)).toEqual({ error: "edgeproxy.toml:3: bad prefix" });
  backend.next = "crash";
  const crash = await send("POST", "/reload");
  expect(crash.status).toBe(500);
  const text = await crash.text();
  expect(JSON.parse(text)).toEqual({ error: "internal error" });
  expect(text).not.toContain("map update");
  expect(backend.reloads).toBe(3);
  expect(logged.join("\n")).toContain("map update failed");
});

test("a throwing backend is a 500 on any route", async () => {
  const { backend, req } = setup();
  backend.statusError = new TypeError("boom");
  const r = await req("/status");
  expect(r.status).toBe(500);
  expect(await r.text()).not.toContain("boom");
});

test("unknown routes are 404 JSON", async () => {
  const { req } = setup();
  const r = await req("/nope");
  expect(r.status).toBe(404);
  expect((await json(r)).error).toContain("/nope");
  expect((await req("/status", { method: "PUT" })).status).toBe(404);
});

test("with a token every route but /healthz needs it", async () => {
  const { req } = setup("s3cret-token");
  expect((await req("/healthz")).status).toBe(200);
  for (const auth of [undefined, "Bearer wrong", "Bearer s3cret-token2", "Basic s3cret-token", "s3cret-token"]) {
    const headers: Record<string, string> = auth ? { Authorization: auth } : {};
    for (const path of ["/metrics", "/status", "/services", "/nope"]) {
      const r = await req(path, { headers });
      expect(r.status).toBe(401);
      expect(r.headers.get("www-authenticate")).toStartWith("Bearer");
    }
    expect((await req("/reload", { method: "POST", headers })).status).toBe(401);
  }
  const ok = { headers: { Authorization: "Bearer s3cret-token" } };
  expect((await req("/status", ok)).status).toBe(200);
  expect((await req("/metrics", ok)).status).toBe(200);
  expect((await req("/nope", ok)).status).toBe(404);
});

test("request bodies: a declared Content-Length over 4 MiB is refused before a byte is read, with 413, one JSON line and Connection: close; then at most the linger is drained", async () => {
  const { backend, app } = setup("0123456789abcdef");
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled++;
      c.enqueue(new Uint8Array(64 << 10));
    },
  });
  const r = await app.request("/services/web/bindings", {
    method: "POST",
    body,
    headers: { "Content-Length": String(100 << 20), Authorization: "Bearer 0123456789abcdef" },
    duplex: "half",
  } as RequestInit);
  expect(r.status).toBe(413);
  expect(r.headers.get("connection")).toBe("close");
  // Answered before the body was read: a stream starts one pull on its own; nothing more was asked for.
  expect(pulled).toBeLessThanOrEqual(1);
  const text = await r.text();
  expect(text).not.toContain("\n");
  expect(JSON.parse(text)).toEqual({ error: `request body larger than ${ADMIN_MAX_BODY_BYTES >> 20} MiB; the admin API takes small JSON objects` });
  // The lingering close (RFC 9112 §9.6) drained and dropped at most ADMIN_LINGER_BYTES (and the chunk crossing it) before the answer ended.
  expect(pulled).toBeGreaterThan(1);
  expect(pulled * (64 << 10)).toBeLessThanOrEqual(ADMIN_LINGER_BYTES + (128 << 10));
  expect(backend.bindings.get("web")!.length).toBe(1);
  // Even without the token: the size is checked first, and says nothing about the API.
  const anonymous = await app.request("/status", { method: "POST", body: "x", headers: { "Content-Length": String(5 << 20) } });
  expect(anonymous.status).toBe(413);
});

test("request bodies without a length (chunked) are counted as they arrive and refused just past the limit", async () => {
  const { backend, app } = setup();
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent >= 100 << 20) return c.close();
      sent += 256 << 10;
      c.enqueue(new Uint8Array(256 << 10).fill(0x20));
    },
  });
  const r = await app.request("/services/web/bindings", { method: "POST", body, duplex: "half" } as RequestInit);
  expect(r.status).toBe(413);
  // Refused just past the limit: the chunk that crossed it (plus what the stream had queued).
  expect(sent).toBeLessThanOrEqual(ADMIN_MAX_BODY_BYTES + (1 << 20));
  expect((await json(r)).error).toMatch(/^request body larger than 4 MiB/);
  // Then the lingering close drained and dropped at most ADMIN_LINGER_BYTES more before the answer ended.
  expect(sent).toBeLessThanOrEqual(ADMIN_MAX_BODY_BYTES + ADMIN_LINGER_BYTES + (1 << 20));
  expect(backend.bindings.get("web")!.length).toBe(1);
});

test("readBody: small bodies pass whole; a body that stalls is refused with 408", async () => {
  const ok = await readBody(new Request("http://x/", { method: "POST", body: JSON.stringify(BINDING) }));
  expect(JSON.parse(ok)).toEqual(BINDING);
  const stalled = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode("{"));
    },
  });
  const req = new Request("http://x/", { method: "POST", body: stalled, duplex: "half" } as RequestInit);
  const t0 = performance.now();
  const e: unknown = await readBody(req, ADMIN_MAX_BODY_BYTES, 200).catch((x: unknown) => x);
  expect(e).toBeInstanceOf(HttpError);
  expect((e as HttpError).status).toBe(408);
  expect(performance.now() - t0).toBeLessThan(2_000);
});

test("instance and drain: answered by a leader, 404 in a worker (no identity, no drain)", async () => {
  const worker = setup();
  expect((await worker.req("/instance")).status).toBe(404);
  expect((await worker.send("POST", "/drain")).status).toBe(404);
  const backend = new FakeBackend();
  let drained = 0;
  const leader = createAdminApp(
    Object.assign(backend, {
      identity: () => ({ instance: "web", pid: 42, source: "/etc/ep/web.toml", workers: 1 }),
      drain: () => `pid 42 drains (${++drained})`,
    }),
  );
  expect(await json(leader.request("/instance"))).toEqual({ instance: "web", pid: 42, source: "/etc/ep/web.toml", workers: 1 });
  expect(await json(leader.request("/drain", { method: "POST" }))).toEqual({ draining: true, summary: "pid 42 drains (1)" });
  expect((await leader.request("/drain")).status).toBe(404);
});
