// The two ends of the idle-connection scenario, each a process of its own
// (the 20,000 open-file cap is per process).
//   bun bench/idle-hold.ts origin HOST PORT      accept and hold; print "open N" as N changes
//   bun bench/idle-hold.ts clients HOST PORT N   open N connections (200 in flight at most),
//                                                print one JSON line, then hold them
// Both exit on SIGTERM or after 300 s.
export {};

const [role, host = "", portArg = "", countArg = ""] = process.argv.slice(2);
const port = Number(portArg);
process.on("SIGTERM", () => process.exit(0));
setTimeout(() => process.exit(0), 300_000);

if (role === "origin") {
  let open = 0;
  let said = -1;
  Bun.listen({ hostname: host, port, socket: { open: () => void open++, close: () => void open--, data() {}, error() {} } });
  console.log("listening");
  setInterval(() => {
    if (open !== said) console.log(`open ${(said = open)}`);
  }, 50);
} else if (role === "clients") {
  const n = Number(countArg);
  if (!(n >= 1 && n <= 15_000)) {
    console.error("usage: bun bench/idle-hold.ts clients HOST PORT N(<=15000)");
    process.exit(2);
  }
  const held: unknown[] = [];
  let failed = 0;
  let closed = 0;
  const t0 = performance.now();
  const one = () =>
    new Promise<void>((resolve) => {
      Bun.connect({
        hostname: host,
        port,
        socket: {
          open(s) {
            held.push(s);
            resolve();
          },
          data() {},
          close: () => void closed++,
          error() {},
          connectError() {
            failed++;
            resolve();
          },
        },
      }).catch(() => {
        failed++;
        resolve();
      });
    });
  let next = 0;
  await Promise.all(
    Array.from({ length: 200 }, async () => {
      while (next < n) {
        next++;
        await one();
      }
    }),
  );
  console.log(JSON.stringify({ connected: held.length, failed, ms: performance.now() - t0 }));
  setInterval(() => {
    if (closed) console.log(`closed ${closed}`);
  }, 1000);
} else {
  console.error("usage: bun bench/idle-hold.ts origin HOST PORT | clients HOST PORT N");
  process.exit(2);
}
