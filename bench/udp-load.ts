export {};
// Closed-loop UDP load: FLOWS connected sockets (each its own flow), each with
// one request outstanding, for SECONDS; prints one JSON line.
//   bun bench/udp-load.ts HOST PORT FLOWS SECONDS [SIZE] [WARMUP_MS]
// Sockets send from loopback (never from the steered prefix). A request lost
// for 200 ms is counted and resent, so one drop does not stall a flow.
const [host, portText, flowsText, secondsText, sizeText = "64", warmupText] = process.argv.slice(2);
if (!host || !portText || !flowsText || !secondsText) {
  console.error("usage: bun bench/udp-load.ts HOST PORT FLOWS SECONDS [SIZE] [WARMUP_MS]");
  process.exit(2);
}
const flows = Number(flowsText);
const seconds = Number(secondsText);
const payload = new Uint8Array(Number(sizeText)).fill(120);
const sentAt = new Float64Array(flows);
const latencies: number[] = [];
let replies = 0;
let lost = 0;
let counting = false;

const sockets = await Promise.all(
  Array.from({ length: flows }, (_, i) =>
    Bun.udpSocket({
      hostname: host.includes(":") ? "::1" : "127.0.0.1",
      connect: { hostname: host, port: Number(portText) },
      socket: {
        data(s) {
          const now = performance.now();
          if (counting) {
            replies++;
            // Every 8th reply is enough for percentiles and keeps the array small.
            if ((replies & 7) === 0) latencies.push(now - sentAt[i]!);
          }
          sentAt[i] = now;
          (s as unknown as { send(d: Uint8Array): boolean }).send(payload);
        },
      },
    }),
  ),
);
const start = performance.now();
sockets.forEach((s, i) => {
  sentAt[i] = start;
  s.send(payload);
});
const resend = setInterval(() => {
  const now = performance.now();
  sockets.forEach((s, i) => {
    if (now - sentAt[i]! > 200) {
      if (counting) lost++;
      sentAt[i] = now;
      s.send(payload);
    }
  });
}, 50);
// Warm-up off the books: the 6th argument in ms, else $UDP_LOAD_WARMUP_MS, else half a second.
await Bun.sleep(Number(warmupText) || Number(process.env.UDP_LOAD_WARMUP_MS) || 500);
counting = true;
const t0 = performance.now();
// The bench samples the proxy's CPU when it reads this line.
console.log("counting");
await Bun.sleep(seconds * 1000);
counting = false;
const elapsed = (performance.now() - t0) / 1000;
clearInterval(resend);
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
console.log(JSON.stringify({ replies, seconds: elapsed, rps: replies / elapsed, lost, p50Ms: pct(50), p99Ms: pct(99) }));
for (const s of sockets) s.close();
process.exit(0);
