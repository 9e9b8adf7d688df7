export {};
// The UDP origin of the benchmark: echoes every datagram. bun bench/udp-echo.ts HOST PORT
const [host = "127.0.0.1", port = "9053"] = process.argv.slice(2);
const s = await Bun.udpSocket({
  hostname: host,
  port: Number(port),
  socket: {
    data(sock, data, p, addr) {
      sock.send(data, p, addr);
    },
  },
});
process.stderr.write(`udp echo on ${s.address.address}:${s.port}\n`);
process.on("SIGTERM", () => process.exit(0));
