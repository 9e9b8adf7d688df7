// A bounded connect/close loop: the connection-rate load of the lookup scenario.
//   bun bench/connect-loop.ts SECONDS CONCURRENCY HOST:PORT [HOST:PORT ...]
// Keeps CONCURRENCY connections in flight for SECONDS (and at most 10 million
// in all), each to the next target in turn: open, close at once. Prints one
// JSON line: connections completed, failures, elapsed ms.
export {};

const [secondsArg = "", concArg = "", ...targetArgs] = process.argv.slice(2);
const seconds = Number(secondsArg);
const concurrency = Number(concArg);
const targets = targetArgs.map((t) => {
  const i = t.lastIndexOf(":");
  return { host: t.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(t.slice(i + 1)) };
});
if (!(seconds > 0 && seconds <= 60) || !(concurrency >= 1 && concurrency <= 256) || !targets.length || targets.some((t) => !(t.port > 0))) {
  console.error("usage: bun bench/connect-loop.ts SECONDS(<=60) CONCURRENCY(<=256) HOST:PORT ...");
  process.exit(2);
}

const MAX = 10_000_000;
let ok = 0;
let failed = 0;
let next = 0;
const t0 = performance.now();
const deadline = t0 + seconds * 1000;

function one(): Promise<void> {
  const t = targets[next++ % targets.length]!;
  return new Promise((resolve) => {
    let done = false;
    const finish = (good: boolean) => {
      if (done) return;
      done = true;
      if (good) ok++;
      else failed++;
      resolve();
    };
    Bun.connect({
      hostname: t.host,
      port: t.port,
      socket: {
        open(s) {
          finish(true);
          s.end();
        },
        data() {},
        error() {
          finish(false);
        },
        connectError() {
          finish(false);
        },
        close() {
          finish(false);
        },
      },
    }).catch(() => finish(false));
  });
}

async function worker(): Promise<void> {
  while (performance.now() < deadline && ok + failed < MAX) await one();
}

await Promise.all(Array.from({ length: concurrency }, worker));
console.log(JSON.stringify({ ok, failed, ms: performance.now() - t0 }));
process.exit(0);
