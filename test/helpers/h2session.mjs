// One HTTP/2 session in real node (node:http2), kept open: node h2session.mjs <url> <servername>
// Each line on stdin is a path: one GET on the same session, answered by one JSON line on stdout
// { status, body, sessions } (sessions: how many TLS sessions this client made so far, 1 when all went on one).
// stdin's end closes the session.
import http2 from "node:http2";
import { createInterface } from "node:readline";

const [url, servername] = process.argv.slice(2);
let sessions = 0;
const session = http2.connect(url, { rejectUnauthorized: false, servername });
session.on("connect", () => void sessions++);
session.on("error", (e) => console.log(JSON.stringify({ error: e.message })));
const lines = createInterface({ input: process.stdin });
lines.on("line", (path) => {
  const req = session.request({ ":method": "GET", ":path": path });
  let body = "";
  let status = 0;
  req.setEncoding("utf8");
  req.on("response", (h) => void (status = h[":status"]));
  req.on("data", (d) => void (body += d));
  req.on("end", () => console.log(JSON.stringify({ status, body, sessions })));
  req.on("error", (e) => console.log(JSON.stringify({ error: e.message })));
});
lines.on("close", () => session.close());
setTimeout(() => process.exit(1), 60_000).unref();
