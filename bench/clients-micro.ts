// Microbenchmark: ns per busiest-clients update (src/proxy/clients.ts), what
// the pipeline adds per accepted connection: a tracked address (a hit), an
// untracked one (Space-Saving's replace: a scan of the counters), the bytes
// added at close, and Bun's
// remoteAddress getter the pipeline reads the address with (on a real
// loopback socket). Also the heap a million hits leave (none expected).
// Run: bun bench/clients-micro.ts [N]
import { ClientTracker, CLIENT_COUNTERS } from "../src/proxy/clients";

const N = Number(process.argv[2] ?? 2e6);
const clock = { now: 0 };

function bench(name: string, n: number, one: (i: number) => void): number {
  for (let i = 0; i < Math.min(n, 100_000); i++) one(i); // warm up the JIT
  const t0 = Bun.nanoseconds();
  for (let i = 0; i < n; i++) one(i);
  const ns = (Bun.nanoseconds() - t0) / n;
  console.log(`${name.padEnd(58)} ${ns.toFixed(1).padStart(7)} ns/update`);
  return ns;
}

// Addresses made before timing: the strings are Bun's (remoteAddress), not the tracker's.
const few = ["192.0.2.1", "192.0.2.2"];
const full = Array.from({ length: CLIENT_COUNTERS }, (_, i) => `192.0.2.${i + 1}`);
const distinct = Array.from({ length: 1 << 16 }, (_, i) => `10.${i >> 8}.${i & 255}.1`);

const t1 = new ClientTracker(clock);
bench("hit: 2 addresses", N, (i) => t1.seen(few[i & 1]!));
const t2 = new ClientTracker(clock);
bench(`hit: ${CLIENT_COUNTERS} addresses (all tracked)`, N, (i) => t2.seen(full[i & (CLIENT_COUNTERS - 1)]!));
const t3 = new ClientTracker(clock);
bench("miss: every address new (replace the least counted)", N, (i) => t3.seen(distinct[i & 0xffff]!));
const t4 = new ClientTracker(clock);
bench("mixed: 1 in 5 from one address, the rest new", N, (i) => t4.seen(i % 5 === 0 ? few[0]! : distinct[i & 0xffff]!));

bench(`close: bytes to a tracked address (of ${CLIENT_COUNTERS})`, N, (i) => t2.closed(full[i & (CLIENT_COUNTERS - 1)]!, 1500));

// Heap after a million hits: no allocation per tracked address.
const t5 = new ClientTracker(clock);
for (const a of full) t5.seen(a);
Bun.gc(true);
const before = process.memoryUsage().heapUsed;
for (let i = 0; i < 1_000_000; i++) t5.seen(full[i & (CLIENT_COUNTERS - 1)]!);
Bun.gc(true);
console.log(`heap after 1e6 hits: ${((process.memoryUsage().heapUsed - before) / 1024).toFixed(0)} KiB more`);

// Bun's remoteAddress on a real accepted socket: the string the pipeline hands the tracker.
let accepted: any;
const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void (accepted = s), data() {} } });
const client = await Bun.connect({ hostname: "127.0.0.1", port: server.port, socket: { data() {} } });
while (!accepted) await Bun.sleep(5);
bench("Bun socket.remoteAddress (the address read at accept)", 200_000, () => void accepted.remoteAddress);
const t6 = new ClientTracker(clock);
bench("remoteAddress + hit (what the pipeline adds per accept)", 200_000, () => t6.seen(accepted.remoteAddress));
client.end();
server.stop(true);
