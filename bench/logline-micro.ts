// Microbenchmark: ns per access log line, builders + writer (to /dev/null),
// for the tcp relay line (with the socket-ends reading it costs per
// connection) and the http request line. Run: bun bench/logline-micro.ts [N]
import { accessLogStats, serviceLog } from "../src/log/access";
import { socketNames, type EndNames } from "../src/proxy/inbound";
import { RequestLog } from "../src/proxy/http/reqlog";
import type { RequestHead } from "../src/proxy/http/message";

const N = Number(process.argv[2] ?? 1e6);
const log = serviceLog("bench", { path: "/dev/null", sample: 1, connect: false, bufferBytes: 64 << 20 })!;
// A real accepted socket on loopback: socketNames reads its ends from the descriptor (getpeername, getsockname).
let accepted: any;
const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void (accepted = s), data() {} } });
const client = await Bun.connect({ hostname: "127.0.0.1", port: server.port, socket: { data() {} } });
for (let i = 0; i < 1000 && !accepted; i++) await Bun.sleep(1);
if (!accepted) throw new Error("logline-micro: no connection accepted on loopback");
const sock = accepted;
const req = { method: "GET", target: "/index.html?x=1", host: "example.com", names: ["host", "user-agent"], values: ["example.com", "wrk"] } as unknown as RequestHead;

async function run(name: string, one: (i: number) => void): Promise<void> {
  const batch = 500;
  const t0 = Bun.nanoseconds();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < N; ) {
    for (let j = 0; j < batch; j++, i++) one(i);
    await new Promise((r) => setImmediate(r)); // let the writer's flush run, as the event loop would
  }
  const ns = (Bun.nanoseconds() - t0) / N;
  const c = process.cpuUsage(cpu0);
  console.log(`${name.padEnd(34)} ${ns.toFixed(0).padStart(5)} ns/line wall, ${(((c.user + c.system) * 1000) / N).toFixed(0).padStart(5)} ns/line cpu`);
}

// tcp: one connection = its ends as Bun's text (pipeline.ts, socketNames) + the relay's close line (relay-log.ts's shape).
const tcpLine = (i: number): void => relayLike(socketNames(sock)!, i);
function relayLike(e: EndNames, i: number): void {
  if (!log.sampled()) return;
  const target = "127.0.0.1:9000";
  const why = "client_closed";
  const w = log.begin(200 + 5 + e.client.length + e.edge.length + 6 * (target.length + why.length))!;
  w.raw('"protocol":"tcp","event":"').raw("close").raw('","client":"').raw(e.client).raw('","edge":"').raw(e.edge).raw('","origin":"').text(target);
  w.raw('","bytes_in":').int(100 + i).raw(',"bytes_out":').int(2000).raw(',"duration_ms":').int(3).raw(',"reason":"').text(why).raw('"}');
  log.finish();
}
// http keep-alive: one request on a connection whose RequestLog exists.
const rl = RequestLog.of(log, false, undefined, "1.1", "192.0.2.10", socketNames(sock));
const httpReq = (i: number): void => {
  rl.request(req, 0);
  rl.bytesIn += 80;
  rl.originAt("127.0.0.1", 9000);
  rl.status = 200;
  rl.firstByte();
  rl.bytesOut += 200 + (i & 7);
  rl.end();
};
// http one connection per request: the RequestLog is made per connection too (exchange.ts reads remoteAddress anyway).
const httpConn = (i: number): void => {
  const r = RequestLog.of(log, false, undefined, "1.1", sock.remoteAddress, socketNames(sock));
  r.request(req, 0);
  r.status = 200;
  r.originAt("127.0.0.1", 9000);
  r.end();
};

// The writer alone: one ready line per call.
const ready = `"protocol":"http","client":"192.0.2.10:40000","edge":"192.0.2.1:8080","method":"GET","host":"example.com","path":"/index.html","status":200,"bytes_in":80,"bytes_out":200,"origin":"127.0.0.1:9000","ttfb_ms":0,"duration_ms":0.1,"request_id":"0123456789abcdef-1"}`;
for (let round = 0; round < 2; round++) {
  await run("writer only (log.line)", () => log.line(ready));
  await run("tcp conn (ends + close line)", tcpLine);
  await run("http request (keep-alive)", httpReq);
  await run("http conn (ends + request line)", httpConn);
}
console.log(`lines ${accessLogStats.lines} dropped ${accessLogStats.dropped}`);
client.end();
server.stop(true);
