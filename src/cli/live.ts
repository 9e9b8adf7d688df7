/*
 * `edgeproxy dashboard` and `edgeproxy top`: the live view of a running serve,
 * read from its admin socket (GET /dashboard.json, src/admin/dashboard.ts).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { ConfigError, EdgeError } from "../errors";
import type { DashboardView, ErrorReason } from "../admin/dashboard";
import { parseCount } from "../config/numbers";
import { tokenize, type FlagSpec } from "./flags";
import { askAdmin, pickInstance } from "./instances";
import { CHOOSE_INSTANCE } from "./instance-commands";
import { table } from "./table";

export const LIVE_COMMANDS = ["dashboard", "top"] as const;
export type LiveCommand = (typeof LIVE_COMMANDS)[number];

export const LIVE_FLAGS: Readonly<Record<LiveCommand, readonly FlagSpec[]>> = {
  dashboard: [...CHOOSE_INSTANCE, { name: "--port", value: "PORT", help: "the loopback port (default: a free one)" }],
  top: [...CHOOSE_INSTANCE, { name: "--once", help: "print one snapshot and exit (as when stdout is not a terminal)" }],
};

export interface LiveOptions {
  readonly admin?: string;
  readonly instance?: string;
  /** dashboard: the loopback port; 0 for a free one. */
  readonly port: number;
  readonly once: boolean;
}

/** Parse `edgeproxy dashboard|top [flags]`; ConfigError (exit 2) with the usage line. */
export function parseLive(command: LiveCommand, args: readonly string[]): LiveOptions {
  const specs = LIVE_FLAGS[command];
  const usage = `usage: edgeproxy ${command} ${specs.map((s) => `[${s.name}${s.value ? ` ${s.value}` : ""}]`).join(" ")}`;
  const seen = new Set<string>();
  const o: { admin?: string; instance?: string; port: number; once: boolean } = { port: 0, once: false };
  for (const t of tokenize(args, specs, command)) {
    if ("arg" in t) throw new ConfigError(`${command} ${t.arg}`, usage);
    if (seen.has(t.flag)) throw new ConfigError(`${command} ${t.flag}`, "given twice");
    seen.add(t.flag);
    if (t.flag === "--admin") o.admin = t.value;
    else if (t.flag === "--instance") o.instance = t.value;
    else if (t.flag === "--port") o.port = parseCount(t.value!, `${command} --port`, { min: 0, max: 65535 });
    else if (t.flag === "--once") o.once = true;
  }
  return o;
}

type Print = (text: string) => Promise<void>;

export async function runLive(command: LiveCommand, options: LiveOptions, print: Print): Promise<number> {
  const { socket } = await pickInstance(command, options, "config");
  return command === "dashboard" ? dashboard(socket, options.port, print) : top(socket, options.once, print);
}

async function view(socket: string, command: LiveCommand = "top"): Promise<DashboardView> {
  let res: Response;
  try {
    res = await askAdmin(socket, "/dashboard.json");
  } catch (e) {
    throw new EdgeError(command, `no edgeproxy admin API answers on ${socket} (${(e as { code?: string }).code ?? (e as Error).message}); is serve running with its admin API on?`, "config");
  }
  if (!res.ok) throw new EdgeError(command, `admin API on ${socket} answered HTTP ${res.status} to /dashboard.json (an edgeproxy without the dashboard?)`, "internal");
  return (await res.json()) as DashboardView;
}

function si(v: number, unit: string): string {
  const units = ["", "k", "M", "G", "T"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  const digits = i === 0 && Number.isInteger(v) ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits)}${units[i]}${unit}`;
}

const errorSum = (e: Readonly<Record<string, number>>) => Object.values(e).reduce((a, b) => a + b, 0);

/** One screen of `top`, plain text (the caller adds the terminal's escapes). */
export function renderTop(v: DashboardView): string {
  const lines: string[] = [];
  const at = v.now ? new Date(v.now * 1000).toISOString().slice(11, 19) : "-";
  lines.push(`edgeproxy ${v.version}  pid ${v.pid}${v.workers > 1 ? `  ${v.workers} workers` : ""}  ${at} UTC`);
  // The last sample is the current second; the last ten smooth the totals line.
  const recent = v.samples.slice(-10);
  const avg = (f: (s: DashboardView["samples"][number]) => number) => (recent.length ? recent.reduce((a, s) => a + f(s), 0) / recent.length : 0);
  lines.push(`last ${recent.length} s: ${si(avg((s) => s.connections), "")} conn/s  ${si(avg((s) => s.bytes), "B/s")}  ${si(avg((s) => errorSum(s.errors)), "")} errors/s`);
  lines.push("");
  lines.push(
    ...table(
      ["SERVICE", "MODE", "OPEN", "CONN/S", "BYTES/S", "ERR/S", "CONNECTIONS", "ORIGINS UP"],
      v.services.map((s) => [
        s.name,
        s.mode ? (s.engine ? `${s.mode}/${s.engine}` : s.mode) : "external",
        String(s.active),
        si(s.rates.connections, ""),
        si(s.rates.bytes, "B"),
        si(errorSum(s.rates.errors), ""),
        String(s.totals.connections),
        s.origins.length ? `${s.origins.filter((o) => o.healthy).length}/${s.origins.length}` : "-",
      ]),
    ),
  );
  const reasons = v.reasons.filter((r) => recent.some((s) => s.errors[r as ErrorReason] > 0));
  lines.push("");
  lines.push(reasons.length ? `errors/s by reason (last ${recent.length} s): ${reasons.map((r) => `${r} ${si(avg((s) => s.errors[r]), "")}`).join("  ")}` : `no errors in the last ${recent.length} s`);
  const origins = v.services.flatMap((s) => s.origins.map((o) => [s.name, o.origin, o.healthy ? "healthy" : "DOWN", `${o.up}/${o.endpoints}`, String(o.active)]));
  if (origins.length) {
    lines.push("");
    lines.push(...table(["SERVICE", "ORIGIN", "HEALTH", "ENDPOINTS UP", "OPEN"], origins));
  }
  lines.push("", ...clientLines(v.clients, 10));
  return lines.join("\n") + "\n";
}

/** The busiest clients, at most `rows` of them, under a heading that says over what window. */
export function clientLines(c: DashboardView["clients"], rows: number): string[] {
  if (!c.available || !c.top) return [`busiest clients: unavailable (${c.note})`];
  if (!c.top.length) return [`busiest clients: no connections in the last ${c.windowSeconds} s`];
  return [
    `busiest clients (new connections, last ${c.windowSeconds} s):`,
    ...table(
      ["CLIENT", "CONNECTIONS", "±", "REFUSED", "BYTES"],
      c.top.slice(0, rows).map((x) => [x.address, String(x.connections), x.error ? String(x.error) : "", x.refused ? String(x.refused) : "", si(x.bytes ?? 0, "B")]),
    ),
  ];
}

async function top(socket: string, once: boolean, print: Print): Promise<number> {
  let v = await view(socket);
  // The sampler starts with the first request: rates need a second reading.
  if (v.samples.length === 0) {
    await Bun.sleep(1_100);
    v = await view(socket);
  }
  if (once || !process.stdout.isTTY) {
    await print(renderTop(v));
    return 0;
  }
  const stdin = process.stdin;
  let quit: () => void = () => {};
  const done = new Promise<void>((resolve) => (quit = resolve));
  const onKey = (b: Buffer) => {
    // q, Q, Ctrl-C (raw mode delivers it as a byte, not SIGINT), Ctrl-D.
    if ([0x71, 0x51, 0x03, 0x04].some((k) => b.includes(k))) quit();
  };
  if (stdin.isTTY) {
    stdin.setRawMode(true);
    stdin.on("data", onKey);
    stdin.resume();
  }
  process.on("SIGINT", quit);
  process.on("SIGTERM", quit);
  // The alternate screen keeps the operator's scrollback as it was.
  await print("\x1b[?1049h\x1b[?25l");
  try {
    for (;;) {
      // Raw mode (libuv's) keeps output processing: "\n" still moves to the line's start.
      await print(`\x1b[H\x1b[2J${renderTop(v)}\nq quits`);
      const stop = await Promise.race([done.then(() => true), Bun.sleep(1_000).then(() => false)]);
      if (stop) break;
      try {
        v = await view(socket);
      } catch (e) {
        await print(`\x1b[H\x1b[2J${(e as Error).message}\n`);
        break;
      }
    }
  } finally {
    await print("\x1b[?25h\x1b[?1049l");
    if (stdin.isTTY) {
      stdin.setRawMode(false);
      stdin.off("data", onKey);
      stdin.pause();
    }
  }
  return 0;
}

// Headers of one connection, not of the message (RFC 9110 7.6.1), and the length, recomputed.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"]);
/** Bun's server limits for the forwarder: an idle client is closed after 10 s, bodies are never read (GET only). */
const FORWARD_LIMITS = { idleTimeout: 10, maxRequestBodySize: 1024 } as const;

/**
 * Serve the admin socket's GET routes on 127.0.0.1. Read-only: anything
 * but GET or HEAD is refused (405), so a local user cannot reload, bind or
 * drain through it. The socket is 0600 for a reason, so every route but
 * the page itself needs the random token printed in the URL (after #, which
 * browsers keep to themselves and the page sends as a bearer token).
 */
export function startForwarder(socket: string, port: number, token = randomBytes(16).toString("hex")): { url: string; token: string; stop(): void } {
  const expected = Buffer.from(`Bearer ${token}`);
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({
      hostname: "127.0.0.1",
      port,
      ...FORWARD_LIMITS,
      async fetch(req) {
        if (req.method !== "GET" && req.method !== "HEAD") {
          return Response.json({ error: `edgeproxy dashboard forwards GET only, not ${req.method}` }, { status: 405, headers: { Allow: "GET, HEAD" } });
        }
        const url = new URL(req.url);
        const given = Buffer.from(req.headers.get("authorization") ?? "");
        if (url.pathname !== "/" && !(given.length === expected.length && timingSafeEqual(given, expected))) {
          return Response.json({ error: "missing or wrong bearer token (printed by edgeproxy dashboard)" }, { status: 401, headers: { "WWW-Authenticate": 'Bearer realm="edgeproxy"' } });
        }
        let res: Response;
        try {
          res = await askAdmin(socket, `${url.pathname}${url.search}`, { method: req.method });
        } catch (e) {
          return Response.json({ error: `admin socket ${socket}: ${(e as { code?: string }).code ?? (e as Error).message}` }, { status: 502 });
        }
        const headers = new Headers();
        res.headers.forEach((value, name) => {
          if (!HOP_BY_HOP.has(name)) headers.set(name, value);
        });
        return new Response(res.body, { status: res.status, headers });
      },
    });
  } catch (e) {
    throw new ConfigError(`dashboard --port ${port}`, `cannot listen on 127.0.0.1: ${(e as Error).message}`);
  }
  return { url: `http://127.0.0.1:${server.port}/#token=${token}`, token, stop: () => server.stop(true) };
}

async function dashboard(socket: string, port: number, print: Print): Promise<number> {
  // Checked first, so a stopped serve is one line, not a page of errors.
  await view(socket, "dashboard");
  const fwd = startForwarder(socket, port);
  await print(`edgeproxy dashboard: ${fwd.url}\n(admin socket ${socket}; GET only; Ctrl-C stops)\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", resolve);
    process.once("SIGTERM", resolve);
  });
  fwd.stop();
  return 0;
}
