import type { Socket } from "bun";
import { Hono } from "hono";
import { unmapAddress } from "../config/address";
import { VERSION } from "../version";
import { Outbox } from "./outbox";
import type { Protocol, Session } from "./pipelineapi";

/*
 * The embedded default service: an HTTP request gets a small page (JSON with
 * Accept: application/json) naming the original destination and the client;
 * any other bytes are echoed back, like the sk_lookup demos' echo servers.
 */

export interface Endpoints {
  readonly destination: string;
  readonly client: string;
}

/** The page, as a Hono app; the responder feeds it requests parsed off the raw socket. */
export function responderApp(): Hono<{ Bindings: Endpoints }> {
  const app = new Hono<{ Bindings: Endpoints }>();
  app.all("*", (c) => {
    const body = { service: "edgeproxy", version: VERSION, destination: c.env.destination, client: c.env.client, method: c.req.method, path: c.req.path };
    if ((c.req.header("accept") ?? "").includes("application/json")) return c.json(body);
    return c.html(
      `<!doctype html><title>edgeproxy</title><h1>edgeproxy</h1>` +
        `<p>You reached <b>${body.destination}</b> from <b>${body.client}</b>.</p>` +
        `<p>Every port in this range answers on one socket, steered by BPF sk_lookup.</p>\n`,
    );
  });
  return app;
}

// "GET /path HTTP/1.1\r\n": the request line (RFC 9112 §3).
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.([01])\r?\n/;
// A request line cut short: an upper-case method, maybe a target, maybe part of the version.
const MAYBE_REQUEST_LINE = /^[A-Z]{1,16}( \S*( H?T?T?P?\/?1?\.?[01]?\r?)?)?$/;
const MAX_HEAD = 16 * 1024;
const HIGH_WATER = 256 * 1024;

type State = {
  mode: "sniff" | "http" | "echo";
  buffered: Uint8Array;
  /** Request body bytes still to discard. */
  skip: number;
  /** Echo bytes the socket has not taken yet. */
  readonly out: Outbox;
  ended: boolean;
  busy: boolean;
};

/** The built-in responder, as the pipeline's last stage. */
export function responder(): Protocol {
  const app = responderApp();
  const decoder = new TextDecoder("latin1");

  const endpoints = (s: Socket<any>): Endpoints => ({
    destination: formatHostPort(unmapAddress(s.localAddress), s.localPort),
    client: formatHostPort(unmapAddress(s.remoteAddress), s.remotePort),
  });

  const echo = (s: Socket<any>, st: State, chunk: Uint8Array) => {
    if (!st.out.write(s, chunk)) s.pause();
  };

  const serveHttp = async (s: Socket<any>, st: State) => {
    st.busy = true;
    try {
      while (st.mode === "http") {
        if (st.skip > 0) {
          const n = Math.min(st.skip, st.buffered.length);
          st.skip -= n;
          st.buffered = st.buffered.subarray(n);
          if (st.skip > 0) return;
        }
        const text = decoder.decode(st.buffered.subarray(0, MAX_HEAD));
        const end = text.indexOf("\r\n\r\n");
        if (end < 0) {
          if (st.buffered.length >= MAX_HEAD) {
            s.end("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            st.mode = "echo";
          } else if (st.buffered.length && !REQUEST_LINE.test(text) && text.includes("\n")) {
            s.end("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            st.mode = "echo";
          }
          return;
        }
        const head = text.slice(0, end);
        st.buffered = st.buffered.subarray(end + 4);
        const [line, ...fields] = head.split("\r\n");
        const m = REQUEST_LINE.exec(`${line}\n`);
        const headers = new Headers();
        let bad = !m;
        for (const f of fields) {
          const colon = f.indexOf(":");
          if (colon <= 0) bad = true;
          else headers.append(f.slice(0, colon).trim(), f.slice(colon + 1).trim());
        }
        if (bad || !m) {
          s.end("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
          st.mode = "echo";
          return;
        }
        const chunked = /chunked/i.test(headers.get("transfer-encoding") ?? "");
        const length = Number(headers.get("content-length") ?? "0");
        const http10 = m[3] === "0";
        const close = chunked || !Number.isSafeInteger(length) || length < 0 || /close/i.test(headers.get("connection") ?? "") || (http10 && !/keep-alive/i.test(headers.get("connection") ?? ""));
        st.skip = Number.isSafeInteger(length) && length > 0 ? length : 0;
        const url = `http://${headers.get("host") ?? "edgeproxy"}${m[2]!.startsWith("/") ? m[2] : "/"}`;
        const res = await app.fetch(new Request(url, { method: m[1] === "GET" || m[1] === "HEAD" ? m[1] : "POST", headers }), endpoints(s));
        const body = m[1] === "HEAD" ? new Uint8Array() : new Uint8Array(await res.arrayBuffer());
        let out = `HTTP/1.${http10 ? 0 : 1} ${res.status} ${res.statusText || "OK"}\r\n`;
        res.headers.forEach((v, k) => (out += `${k}: ${v}\r\n`));
        out += `content-length: ${body.length}\r\nconnection: ${close ? "close" : "keep-alive"}\r\n\r\n`;
        s.write(Buffer.concat([Buffer.from(out, "latin1"), body]));
        if (close) {
          s.end();
          return;
        }
      }
    } finally {
      st.busy = false;
    }
  };

  return {
    needEnds: false,
    start(s: Socket<any>): Session {
      const st: State = { mode: "sniff", buffered: new Uint8Array(), skip: 0, out: new Outbox(), ended: false, busy: false };
      return {
        clientData(chunk: Uint8Array) {
          if (st.mode === "sniff") {
            const all = st.buffered.length ? Buffer.concat([st.buffered, chunk]) : chunk;
            const nl = all.indexOf(10);
            const line = decoder.decode(all.subarray(0, nl < 0 ? Math.min(all.length, 64) : nl + 1));
            if (nl >= 0 && REQUEST_LINE.test(line)) {
              st.mode = "http";
              st.buffered = all;
              if (!st.busy) void serveHttp(s, st);
            } else if (nl < 0 && all.length < 64 && MAYBE_REQUEST_LINE.test(line)) {
              st.buffered = all; // could still become a request line
            } else {
              st.mode = "echo";
              st.buffered = new Uint8Array();
              echo(s, st, all);
            }
            return;
          }
          if (st.mode === "echo") return echo(s, st, chunk);
          st.buffered = st.buffered.length ? Buffer.concat([st.buffered, chunk]) : chunk;
          if (st.buffered.length > MAX_HEAD + HIGH_WATER) s.pause();
          if (!st.busy) void serveHttp(s, st);
        },
        clientDrain() {
          if (!st.out.flush(s)) return;
          s.resume();
          if (st.ended) s.end();
        },
        clientEnd() {
          st.ended = true;
          if (st.mode === "sniff" && st.buffered.length) {
            st.mode = "echo";
            echo(s, st, st.buffered);
          }
          if (st.out.queued === 0 && !st.busy) s.end();
        },
        clientClosed() {
          st.mode = "echo";
          st.buffered = new Uint8Array();
        },
        // A demo page and echo: no deadlines of its own beyond the pipeline's stages.
        sweep() {},
        abort() {
          s.terminate();
        },
      };
    },
  };
}

export function formatHostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}
