// An HTTP/2 client in real node (node:http2): node h2client.mjs <url> <holdMs> [uploadBytes]
// One request; the response body is not read for holdMs (the client's stream window stays shut),
// then read whole. With uploadBytes, a POST of that many bytes (pattern i & 0xff), sent as node's
// flow control allows, with its content-length. Prints one JSON line: { status, bytes, sha256, goaway, ms } or { error }
// (goaway: the error code of a GOAWAY the server sent, or null).
import http2 from "node:http2";
import { createHash } from "node:crypto";

const [url, holdText, uploadText] = process.argv.slice(2);
const hold = Number(holdText);
const upload = Number(uploadText ?? 0);
const t0 = Date.now();
let goaway = null;
const out = (o) => {
  console.log(JSON.stringify({ ...o, goaway, ms: Date.now() - t0 }));
  process.exit(0);
};
const u = new URL(url);
const session = http2.connect(url, { rejectUnauthorized: false, servername: "edge.test" });
session.on("error", (e) => out({ error: e.message }));
session.on("goaway", (code) => void (goaway = code));
const req = session.request({ ":method": upload ? "POST" : "GET", ":path": u.pathname, ...(upload ? { "content-length": upload } : {}) }, { endStream: !upload });
if (upload) {
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = i & 0xff;
  let sent = 0;
  const pump = () => {
    while (sent < upload) {
      const n = Math.min(chunk.length, upload - sent);
      sent += n;
      if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void req.once("drain", pump);
    }
    req.end();
  };
  pump();
}
req.on("error", (e) => out({ error: e.message }));
req.on("response", (headers) => {
  const status = headers[":status"];
  req.pause();
  const hash = createHash("sha256");
  let bytes = 0;
  req.on("data", (d) => {
    bytes += d.length;
    hash.update(d);
  });
  req.on("end", () => {
    out({ status, bytes, sha256: hash.digest("hex"), body: bytes < 200 ? "" : undefined });
    session.close();
  });
  setTimeout(() => req.resume(), hold);
});
setTimeout(() => out({ error: "timeout" }), 60_000);
