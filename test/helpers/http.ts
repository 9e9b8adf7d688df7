// HTTP test peers: an origin that records what edgeproxy sent, a raw client
// (never fetch(): Bun's HTTP client thread stays in the machine's namespace),
// and an in-process http service for what the command line cannot configure yet.
import type { Socket, TCPSocketListener } from "bun";
import { parsePrefix } from "../../src/config/address";
import { POOL_DEFAULTS, type HttpConfig, type PoolConfig, type RouteConfig, type TlsConfig } from "../../src/config/pool";
import type { ServiceConfig } from "../../src/config/service";
import { DEADLINE_DEFAULTS, type Deadlines } from "../../src/config/deadlines";
import { Admission } from "../../src/proxy/admission";
import { CoarseClock } from "../../src/proxy/clock";
import { HttpService } from "../../src/proxy/http/service";

export interface SeenRequest {
  readonly method: string;
  readonly target: string;
  /** Raw header lines as received, "name: value". */
  readonly lines: string[];
  /** Lower-cased name -> values. */
  readonly headers: Map<string, string[]>;
  readonly body: string;
  /** Which origin connection it came on (1, 2, ...). */
  readonly connection: number;
}

export type Answer = string | ((req: SeenRequest) => string);

/**
 * A keep-alive HTTP/1.1 origin on host:port (0: any) that records every
 * request and answers `answer` (default: 200 naming `name`). Understands
 * Content-Length and chunked request bodies.
 */
export function httpOrigin(host: string, name: string, answer?: Answer, port = 0) {
  const seen: SeenRequest[] = [];
  let connections = 0;
  const listener: TCPSocketListener<{ buf: Buffer; id: number }> = Bun.listen<{ buf: Buffer; id: number }>({
    hostname: host,
    port,
    socket: {
      open(s) {
        s.data = { buf: Buffer.alloc(0), id: ++connections };
      },
      data(s, d) {
        s.data.buf = Buffer.concat([s.data.buf, d]);
        for (;;) {
          const b = s.data.buf;
          const end = b.indexOf("\r\n\r\n");
          if (end < 0) return;
          const [line, ...lines] = b.subarray(0, end).toString("latin1").split("\r\n");
          const headers = new Map<string, string[]>();
          for (const l of lines) {
            const i = l.indexOf(":");
            const k = l.slice(0, i).toLowerCase();
            headers.set(k, [...(headers.get(k) ?? []), l.slice(i + 1).trim()]);
          }
          let rest = b.subarray(end + 4);
          let body = "";
          if (headers.get("transfer-encoding")?.[0] === "chunked") {
            let text = rest.toString("latin1");
            const term = text.indexOf("0\r\n\r\n");
            if (term < 0) return;
            let pos = 0;
            for (;;) {
              const nl = text.indexOf("\r\n", pos);
              const size = parseInt(text.slice(pos, nl), 16);
              if (size === 0) break;
              body += text.slice(nl + 2, nl + 2 + size);
              pos = nl + 2 + size + 2;
            }
            const tail = text.indexOf("\r\n\r\n", pos) + 4;
            rest = rest.subarray(tail);
            text = "";
          } else {
            const n = Number(headers.get("content-length")?.[0] ?? 0);
            if (rest.length < n) return;
            body = rest.subarray(0, n).toString("latin1");
            rest = rest.subarray(n);
          }
          s.data.buf = rest;
          const [method, target] = line!.split(" ");
          const req = { method: method!, target: target!, lines, headers, body, connection: s.data.id };
          seen.push(req);
          const a = answer === undefined ? `HTTP/1.1 200 OK\r\ncontent-length: ${name.length}\r\n\r\n${name}` : typeof answer === "string" ? answer : answer(req);
          s.write(a);
        }
      },
    },
  });
  return { listener, seen, connections: () => connections, get port() { return listener.port; } };
}

export interface HttpReply {
  readonly status: number;
  readonly head: string;
  readonly headers: Map<string, string>;
  readonly body: string;
  /** Everything received, for what follows the first response. */
  readonly raw: string;
}

/** Parse the first response of `raw` (Content-Length, chunked or close framing). */
export function parseReply(raw: string): HttpReply {
  const end = raw.indexOf("\r\n\r\n");
  const head = end < 0 ? raw : raw.slice(0, end);
  const [line, ...lines] = head.split("\r\n");
  const headers = new Map<string, string>();
  for (const l of lines) headers.set(l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim());
  let body = end < 0 ? "" : raw.slice(end + 4);
  if (headers.has("content-length")) body = body.slice(0, Number(headers.get("content-length")));
  return { status: Number(line?.split(" ")[1] ?? 0), head, headers, body, raw };
}

/** A minimal http service run in this process (its listener on 127.0.0.1 or ::1, port 0). */
export function inProcessService(o: { pool?: PoolConfig; routes?: RouteConfig[]; http?: Partial<HttpConfig>; tls?: TlsConfig; connectTimeoutMs?: number; idleTimeoutMs?: number; deadlines?: Partial<Deadlines>; family?: 4 | 6 }) {
  const cfg: ServiceConfig = {
    name: "test",
    mode: "http",
    bindings: [{ protocol: "tcp", prefixes: [parsePrefix(o.family === 6 ? "2001:db8::/64" : "192.0.2.0/24", "test")], ports: [{ lo: 1, hi: 65535 }] }],
    ...(o.pool ? { pool: o.pool } : {}),
    connectTimeoutMs: o.connectTimeoutMs ?? 5000,
    idleTimeoutMs: o.idleTimeoutMs ?? 60_000,
    proxyProtocol: "off",
    access: { allow: [], deny: [] },
    acceptProxy: [],
    ...(o.tls ? { tls: o.tls } : {}),
    http: { ...POOL_DEFAULTS.http, routes: o.routes ?? [], ...o.http },
    deadlines: { ...DEADLINE_DEFAULTS, ...o.deadlines },
  };
  const clock = new CoarseClock(50);
  const svc = new HttpService(cfg, clock, new Admission(1000, () => {}));
  const [sock] = svc.listen();
  const port = Number(sock!.address.slice(sock!.address.lastIndexOf(":") + 1));
  return {
    svc,
    host: o.family === 6 ? "::1" : "127.0.0.1",
    port,
    close() {
      svc.close(true);
      clock.close();
    },
  };
}

export const poolOf = (host: string, port: number): PoolConfig => ({ origins: [{ host, port, weight: 1 }], balance: "round-robin", eject: POOL_DEFAULTS.eject });

/** Open a raw connection and keep it: send, read what came, close. */
export async function rawClient(host: string, port: number) {
  let got = "";
  let closed = false;
  let waiter: (() => void) | undefined;
  const s: Socket = await Bun.connect({
    hostname: host,
    port,
    allowHalfOpen: true,
    socket: {
      data(_s, d) {
        got += d.toString("latin1");
        waiter?.();
      },
      end(s) {
        s.end();
      },
      close() {
        closed = true;
        waiter?.();
      },
    },
  });
  return {
    socket: s,
    send: (t: string | Uint8Array) => s.write(t),
    get text() {
      return got;
    },
    get closed() {
      return closed;
    },
    /** Wait until `pred` holds for what arrived (or the connection closed), at most `ms`. */
    async until(pred: (text: string) => boolean, ms = 5000): Promise<string> {
      const deadline = Date.now() + ms;
      while (!pred(got) && !closed && Date.now() < deadline) {
        await new Promise<void>((r) => {
          waiter = r;
          setTimeout(r, Math.max(1, deadline - Date.now()));
        });
      }
      return got;
    },
    close: () => s.end(),
  };
}
