// An HTTP/1.1 origin that misbehaves behind an HTTP/2 client (curl --http2
// over TLS, h2exchange.ts): a head cut short by its close is a 502, an
// interim response then silence a 504 at first_byte_timeout, and a body
// delimited by the close that ends in an RST a reset stream, never a whole
// response. Bun's node:http2 ends a stream with END_STREAM on close(code) once
// its response began: the stream must be destroyed for an RST_STREAM.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { certFiles } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";

const f = proxyFixture();
const certs = certFiles({ prefix: "ep-h2faults-", cn: "edge.test" });

/** What the origin does with a request, by its path (one request per connection). */
const BEHAVIOURS: Record<string, (s: Socket<{ buf: string }>) => void> = {
  "/truncated-head": (s) => void s.end("HTTP/1.1 200 OK\r\nContent-Le"),
  "/interim-stall": (s) => void s.write("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"),
  "/rst-close-framed": (s) => {
    s.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789");
    setTimeout(() => s.terminate(), 100);
  },
  "/rst-chunked": (s) => {
    s.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n");
    setTimeout(() => s.terminate(), 100);
  },
  "/fin-close-framed": (s) => {
    s.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789");
    setTimeout(() => s.end(), 100);
  },
};

async function curl(path: string): Promise<{ exit: number; code: string; body: string; ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn(["curl", "-sk", "--http2", "--max-time", "8", "--resolve", "edge.test:8443:192.0.2.10", "-w", "\n%{http_code}", `https://edge.test:8443${path}`], { stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  const exit = await p.exited;
  const nl = out.lastIndexOf("\n");
  return { exit, code: out.slice(nl + 1), body: out.slice(0, nl), ms: performance.now() - t0 };
}

describe("an origin that misbehaves behind an HTTP/2 client", () => {
  test("a head cut short: 502; a 1xx then silence: 504 at first_byte_timeout; an RST ends a close-framed body as a reset stream, a FIN as a whole one", async () => {
    const origin = Bun.listen<{ buf: string }>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: (s) => void (s.data = { buf: "" }),
        data(s, d) {
          s.data.buf += d.toString("latin1");
          if (!s.data.buf.includes("\r\n\r\n")) return;
          BEHAVIOURS[s.data.buf.split(" ")[1]!]?.(s);
        },
      },
    });
    f.servers.push(origin);
    f.ep = await EdgeproxyProcess.start(["--mode", "http", "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.port}`, "--tls-cert", certs.cert, "--tls-key", certs.key, "--first-byte-timeout", "1s", "--idle-timeout", "1500ms"]);
    const [truncated, interim, rst, rstChunked, fin] = await Promise.all([curl("/truncated-head"), curl("/interim-stall"), curl("/rst-close-framed"), curl("/rst-chunked"), curl("/fin-close-framed")]);
    expect(`${truncated.code} ${truncated.body}`).toMatch(/^502 origin 127\.0\.0\.1:\d+: closed the connection before responding\n$/);
    expect(`${interim.code} ${interim.body}`).toBe("504 origin first byte timeout\n");
    expect(interim.ms).toBeGreaterThan(800);
    expect(interim.ms).toBeLessThan(3000);
    // curl: 92 (HTTP/2 stream error), or 18/56 for a cut transfer; never a clean 0.
    expect({ code: rst.code, body: rst.body, cut: rst.exit !== 0 }).toEqual({ code: "200", body: "0123456789", cut: true });
    // A chunked body has no content-length in HTTP/2 either: only the RST_STREAM tells the client it is cut.
    expect({ code: rstChunked.code, body: rstChunked.body, cut: rstChunked.exit !== 0 }).toEqual({ code: "200", body: "0123456789", cut: true });
    expect({ code: fin.code, body: fin.body, exit: fin.exit }).toEqual({ code: "200", body: "0123456789", exit: 0 });
  });
});
