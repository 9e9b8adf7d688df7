// Plain listening sockets that accept and close: the far end of the lookup
// scenario's connection-rate loop, in a process of its own (pinned to the
// proxy core), so the client and the accepting side do not share a core.
//   bun bench/accept-sink.ts COUNT
// Listens on COUNT ports of 127.0.0.1 (no SO_REUSEPORT: the kernel's test run
// refuses to report a socket of a reuseport group), prints one JSON line
// [{port, fd}, ...], then serves until SIGTERM (or 300 s).
const count = Number(process.argv[2]);
if (!(count >= 1 && count <= 64)) {
  console.error("usage: bun bench/accept-sink.ts COUNT(1-64)");
  process.exit(2);
}
const out: { port: number; fd: number }[] = [];
for (let i = 0; i < count; i++) {
  const l = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open() {},
      data() {},
      end(s) {
        s.end();
      },
      error() {},
    },
  });
  out.push({ port: l.port, fd: (l as unknown as { fd: number }).fd });
}
console.log(JSON.stringify(out));
process.on("SIGTERM", () => process.exit(0));
setTimeout(() => process.exit(0), 300_000);
