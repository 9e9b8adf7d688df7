import type { HttpSocket } from "./socket";
import { unmapAddress } from "../../config/address";
import { formatHostPort, responderApp } from "../responder";
import type { HttpContext } from "./context";
import type { RequestHead } from "./message";

/*
 * Routes without a pool (and services without one) answer with the built-in
 * responder's Hono app. It is fed a Request made from the parsed head; off
 * the proxying path, so the Request's cost does not matter here.
 */

const app = responderApp();

/** The responder's answer to `req` (HTTP/1.1 and HTTP/2 alike). */
export async function localResponse(req: RequestHead, client: HttpSocket, ctx: HttpContext): Promise<Response> {
  const headers = new Headers();
  for (let i = 0; i < req.names.length; i++) headers.append(req.names[i]!, req.values[i]!);
  const url = `${ctx.proto}://${req.host || "edgeproxy"}${req.target.startsWith("/") ? req.target : "/"}`;
  try {
    return await app.fetch(new Request(url, { method: req.method, headers }), {
      destination: formatHostPort(unmapAddress(client.localAddress), client.localPort),
      client: formatHostPort(unmapAddress(client.remoteAddress), client.remotePort),
    });
  } catch {
    // A URL or method the Request constructor refuses: the client's.
    return new Response("bad request\n", { status: 400 });
  }
}

/** The responder's answer to `req`, as bytes ready for the client (Content-Length framed). */
export async function serveLocal(req: RequestHead, client: HttpSocket, ctx: HttpContext): Promise<{ data: Uint8Array; status: number }> {
  const res = await localResponse(req, client, ctx);
  const body = req.method === "HEAD" ? new Uint8Array() : new Uint8Array(await res.arrayBuffer());
  const close = req.minor === 1 ? req.connection.includes("close") : !req.connection.includes("keep-alive");
  let head = `HTTP/1.${req.minor} ${res.status} ${res.statusText || "OK"}\r\n`;
  res.headers.forEach((v, k) => {
    if (k !== "content-length") head += `${k}: ${v}\r\n`;
  });
  head += `content-length: ${req.method === "HEAD" ? (res.headers.get("content-length") ?? body.length) : body.length}\r\n`;
  if (close) head += "connection: close\r\n";
  else if (req.minor === 0) head += "connection: keep-alive\r\n";
  return { data: Buffer.concat([Buffer.from(`${head}\r\n`, "latin1"), body]), status: res.status };
}
