import { afterEach, beforeEach, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "../errors";
import type { AdminBackend } from "./backend";
import { sampleStatus } from "./fixture";
import { loopback, startAdminServer, type AdminServer } from "./server";

const backend: AdminBackend = {
  status: sampleStatus,
  addBinding() {},
  removeBinding: () => false,
  async reload() {},
};

let dir: string;
const open: AdminServer[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "edgeproxy-admin-"));
});
afterEach(() => {
  for (const s of open.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function start(config: Parameters<typeof startAdminServer>[1]): Promise<AdminServer> {
  const s = await startAdminServer(backend, config);
  open.push(s);
  return s;
}

const get = (path: string, url = "http://localhost/healthz") => fetch(url, { unix: path });

test("unix socket: 0600 in a new 0700 directory, served, removed on close", async () => {
  const path = join(dir, "run", "edgeproxy", "admin.sock");
  const s = await start({ kind: "unix", path });
  expect(s.address).toBe(`unix:${path}`);
  expect(statSync(path).isSocket()).toBe(true);
  expect(statSync(path).mode & 0o777).toBe(0o600);
  expect(statSync(join(dir, "run", "edgeproxy")).mode & 0o777).toBe(0o700);
  const r = await get(path);
  expect(r.status).toBe(200);
  expect(await r.text()).toBe("ok");
  const m = await get(path, "http://localhost/metrics");
  expect(await m.text()).toContain("edgeproxy_build_info");
  s.close();
  expect(existsSync(path)).toBe(false);
  s.close(); // idempotent
});

test("a stale socket file is replaced", async () => {
  const path = join(dir, "admin.sock");
  // A socket whose server was killed: the file stays, nobody listens.
  const script = `Bun.listen({ unix: ${JSON.stringify(path)}, socket: { data() {} } }); console.log("up");`;
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe" });
  await child.stdout.getReader().read(); // "up"
  child.kill("SIGKILL");
  await child.exited;
  expect(statSync(path).isSocket()).toBe(true);
  const s = await start({ kind: "unix", path });
  expect((await get(path)).status).toBe(200);
  s.close();
});

test("a live server on the socket is not displaced", async () => {
  const path = join(dir, "admin.sock");
  await start({ kind: "unix", path });
  const second = startAdminServer(backend, { kind: "unix", path });
  await expect(second).rejects.toThrow(/another server is listening/);
  await expect(second).rejects.toBeInstanceOf(ConfigError);
  expect((await get(path)).status).toBe(200); // the first one still answers
});

test("a regular file at the socket path is left alone", async () => {
  const path = join(dir, "admin.sock");
  writeFileSync(path, "precious");
  await expect(startAdminServer(backend, { kind: "unix", path })).rejects.toThrow(/not a socket/);
  expect(await Bun.file(path).text()).toBe("precious");
});

test("tcp: loopback only, token required and enforced", async () => {
  await expect(startAdminServer(backend, { kind: "tcp", host: "0.0.0.0", port: 0, token: "t" })).rejects.toThrow(ConfigError);
  await expect(startAdminServer(backend, { kind: "tcp", host: "localhost", port: 0, token: "t" })).rejects.toThrow(/loopback/);
  await expect(startAdminServer(backend, { kind: "tcp", host: "127.0.0.1", port: 0, token: "" })).rejects.toThrow(/token/);
  const s = await start({ kind: "tcp", host: "127.0.0.1", port: 0, token: "tok" });
  expect(s.address).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  expect((await fetch(`${s.address}/healthz`)).status).toBe(200);
  expect((await fetch(`${s.address}/status`)).status).toBe(401);
  expect((await fetch(`${s.address}/status`, { headers: { Authorization: "Bearer tok" } })).status).toBe(200);
  s.close();
  s.close();
});

test("off is a no-op", async () => {
  const s = await startAdminServer(backend, { kind: "off" });
  expect(s.address).toBe("off");
  s.close();
});

test("loopback literals", () => {
  expect(loopback("127.0.0.1")).toBe("127.0.0.1");
  expect(loopback("127.8.9.10")).toBe("127.8.9.10");
  expect(loopback("::1")).toBe("::1");
  expect(loopback("[0:0::1]")).toBe("::1");
  for (const h of ["10.0.0.1", "0.0.0.0", "::", "localhost", "127.1", "::ffff:127.0.0.1", "::1%lo"]) {
    expect(loopback(h)).toBeUndefined();
  }
});
