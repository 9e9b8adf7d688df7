// An origin whose HTTP parser is not ours: a `node` child process (Node's
// http server, llhttp, strict by default) that reports every request it
// parsed and every parse error it hit ('clientError'), one JSON line each on
// stdout. Node writes to a pipe synchronously on Linux, so lines come in the
// order the events happened.
import type { Subprocess } from "bun";

/** A request as Node parsed it. */
export interface NodeRequest {
  readonly t: "request";
  readonly port: number;
  readonly method: string;
  readonly url: string;
  readonly version: string;
  /** Raw header lines as [name, value, name, value, ...], in order. */
  readonly headers: string[];
  readonly trailers: string[];
  /** latin1. */
  readonly body: string;
}

export interface NodeClientError {
  readonly t: "clientError";
  readonly code: string;
  readonly reason?: string;
  /** What llhttp was given when it failed (latin1, cut at 2,000 bytes). */
  readonly raw?: string;
}

type Line = NodeRequest | NodeClientError | { t: "listening"; ports: number[] } | { t: "sync"; n: number };

const SCRIPT = String.raw`
const http = require("http");
const brief = process.argv[1] === "brief"; // node -e: argv[1] is the first argument
const count = Number(process.argv[2] || 1);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const ports = [];
let n = 0;
for (let i = 0; i < count; i++) {
  // requireHostHeader off: a missing Host is reported by the test, not answered here.
  const server = http.createServer({ maxHeaderSize: 1 << 20, requireHostHeader: false, keepAliveTimeout: 60000 }, (req, res) => {
    if (req.url.startsWith("/__sync/")) {
      out({ t: "sync", n: Number(req.url.slice(8)) });
      return res.end("synced");
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("latin1");
      const rec = { t: "request", port: req.socket.localPort, method: req.method, url: req.url, version: req.httpVersion, headers: req.rawHeaders, trailers: req.rawTrailers, body };
      if (brief) out({ t: "request", port: rec.port, method: rec.method, url: rec.url.slice(0, 200), version: rec.version, headers: [], trailers: [], body: "" });
      else out(rec);
      const answer = Buffer.from(brief ? "ok" : JSON.stringify(rec), "latin1");
      res.writeHead(200, { "content-type": "application/json", "content-length": answer.length });
      res.end(answer);
    });
  });
  server.on("clientError", (err, socket) => {
    out({ t: "clientError", code: String(err.code), reason: err.reason, raw: err.rawPacket ? err.rawPacket.toString("latin1").slice(0, 2000) : undefined });
    socket.destroy();
  });
  server.listen(0, "127.0.0.1", () => {
    ports[i] = server.address().port;
    if (++n === count) out({ t: "listening", ports });
  });
}
`;

/**
 * A message cut off by the connection's end: edgeproxy resets an origin
 * connection mid-request when it refuses the rest (a bad chunk, a body over
 * the limit). Node reports the RST as ECONNRESET, or, when the socket error
 * was consumed before the read (seen on this kernel in about half the cases
 * with a plain Bun terminate() and nothing else involved), as an EOF in the
 * middle of a message: HPE_INVALID_EOF_STATE. Either way the origin knows the
 * message is incomplete; it is not a parse disagreement.
 */
export const isTruncation = (e: NodeClientError) => e.code === "ECONNRESET" || e.code === "HPE_INVALID_EOF_STATE";

/** Parse errors: llhttp's HPE_* codes, but for truncation (above); socket errors are not parse errors. */
export const isParseError = (e: NodeClientError) => e.code.startsWith("HPE_") && !isTruncation(e);

export class NodeOrigin {
  readonly requests: NodeRequest[] = [];
  readonly errors: NodeClientError[] = [];
  ports: number[] = [];
  private syncs = 0;
  private lastSync = -1;
  private waiters: (() => void)[] = [];
  private stderr = "";

  private constructor(private readonly proc: Subprocess<"ignore", "pipe", "pipe">) {}

  /** Start `node` listening on `count` ports of 127.0.0.1; `brief`: answer "ok" and report requests without their fields. */
  static async start(count = 1, brief = false): Promise<NodeOrigin> {
    const proc = Bun.spawn(["node", "-e", SCRIPT, brief ? "brief" : "full", String(count)], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const o = new NodeOrigin(proc);
    void o.read();
    void (async () => {
      for await (const c of proc.stderr) o.stderr += new TextDecoder().decode(c);
    })();
    const deadline = Date.now() + 10_000;
    while (o.ports.length === 0) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`node origin did not start (exit ${proc.exitCode}): ${o.stderr}`);
      await Bun.sleep(20);
    }
    return o;
  }

  private async read(): Promise<void> {
    const decoder = new TextDecoder("latin1");
    let buf = "";
    for await (const chunk of this.proc.stdout) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = JSON.parse(buf.slice(0, nl)) as Line;
        buf = buf.slice(nl + 1);
        if (line.t === "request") this.requests.push(line);
        else if (line.t === "clientError") this.errors.push(line);
        else if (line.t === "listening") this.ports = line.ports;
        else this.lastSync = line.n;
        for (const w of this.waiters.splice(0)) w();
      }
    }
  }

  /** Parse errors seen so far. */
  parseErrors(): NodeClientError[] {
    return this.errors.filter(isParseError);
  }

  /**
   * Wait until every event Node handled before now is read: a request of our
   * own straight to the origin, whose report comes after them.
   */
  async sync(timeoutMs = 5000): Promise<void> {
    const n = ++this.syncs;
    const s = await Bun.connect({ hostname: "127.0.0.1", port: this.ports[0]!, socket: { data() {} } });
    s.write(`GET /__sync/${n} HTTP/1.1\r\nHost: sync\r\nConnection: close\r\n\r\n`);
    const deadline = Date.now() + timeoutMs;
    while (this.lastSync < n) {
      if (Date.now() > deadline) throw new Error(`node origin did not answer sync ${n}: ${this.stderr}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    s.end();
  }

  async stop(): Promise<void> {
    this.proc.kill("SIGKILL");
    await this.proc.exited;
  }
}

/** Header values by lower-cased name from Node's rawHeaders. */
export function headerValues(r: NodeRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < r.headers.length; i += 2) if (r.headers[i]!.toLowerCase() === name) out.push(r.headers[i + 1]!);
  return out;
}
