// N concurrent streams on one HTTP/2 session in real node (node:http2): node h2streams.mjs <url> <n>
// Prints one JSON line: every stream's outcome, { status } or { rst } (the RST_STREAM code), in order of opening.
import http2 from "node:http2";

const [url, nText] = process.argv.slice(2);
const n = Number(nText);
const session = http2.connect(url, { rejectUnauthorized: false, servername: "edge.test" });
session.on("error", () => {});
const outcomes = new Array(n);
let left = n;
const done = (i, o) => {
  if (outcomes[i]) return;
  outcomes[i] = o;
  if (--left === 0) {
    console.log(JSON.stringify(outcomes));
    session.close();
    process.exit(0);
  }
};
for (let i = 0; i < n; i++) {
  const req = session.request({ ":method": "GET", ":path": `/s${i}` });
  req.on("response", (h) => {
    req.resume();
    req.on("end", () => done(i, { status: h[":status"] }));
  });
  req.on("error", () => {});
  req.on("close", () => done(i, { rst: req.rstCode }));
}
// Also what keeps node running: a client session with streams open does not.
setTimeout(() => {
  console.error(JSON.stringify({ left, outcomes }));
  process.exit(1);
}, 30_000);
