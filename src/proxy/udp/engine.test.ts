// The UDP engine driven by hand on real loopback sockets (no BPF: the
// listener is bound to the address the client sends to), with its sends
// through the io_uring send ring and without it (the path taken where
// io_uring is unavailable): the same datagrams, order and counters.
import { afterEach, describe, expect, test } from "bun:test";
import type { udp } from "bun";
import { Epoll } from "../../system/epoll";
import { bindTo, IP_RECVORIGDSTADDR, localEndpoint, openUdpSocket, setIntOption, SO_REUSEADDR, SOL_IP, SOL_SOCKET } from "../../system/udp";
import { Engine } from "./engine";
import { C, ROW } from "./stats";

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0).reverse()) c();
});

async function echoThrough(useRing: boolean) {
  const epoll = new Epoll(64);
  const counters = new Float64Array(ROW);
  const logged: string[] = [];
  const engine = new Engine(epoll, counters, 100, (l) => logged.push(l), () => {}, undefined, undefined, undefined, useRing);
  cleanup.push(() => epoll.close(), () => engine.closeAll());
  const listener = openUdpSocket(4, "test listener");
  // The flow's socket binds to the same address and port (the original destination): both need SO_REUSEADDR.
  setIntOption(listener.raw, SOL_SOCKET, SO_REUSEADDR, 1, "test listener");
  setIntOption(listener.raw, SOL_IP, IP_RECVORIGDSTADDR, 1, "test listener");
  bindTo(listener.raw, { family: 4, addr: new Uint8Array([127, 0, 0, 1]), port: 0 }, "test listener");
  const port = localEndpoint(listener.raw, "test listener").port;
  engine.add({ slot: 0, name: "test", listeners: [{ fd: listener.release(), family: 4 }], proxyProtocol: "off", idleMs: 10_000 });

  const got: string[] = [];
  const client: udp.ConnectedSocket<"buffer"> = await Bun.udpSocket({
    hostname: "127.0.0.1",
    connect: { hostname: "127.0.0.1", port },
    socket: {
      data(_s, data) {
        got.push(Buffer.from(data).toString());
      },
    },
  });
  cleanup.push(() => client.close());
  const want: string[] = [];
  const send = (text: string) => {
    want.push(text);
    client.send(text);
  };
  // One turn of the worker's loop (worker.ts), then Bun's, so the client hears its replies.
  const turn = async () => {
    const n = epoll.wait(0);
    engine.now = performance.now();
    for (let i = 0; i < n; i++) engine.ready(epoll.fdAt(i));
    if (engine.pending) engine.resume();
    engine.flush();
    await Bun.sleep(1);
  };
  const until = async (count: number) => {
    const end = Date.now() + 3000;
    while (got.length < count && Date.now() < end) await turn();
  };
  send("first");
  await until(1);
  // A burst on the flow's own socket, more than one receive batch (16), of different sizes.
  for (let i = 0; i < 40; i++) send(`burst ${i} `.padEnd(1 + i * 37, "z"));
  await until(41);
  return { got, want, counters, logged };
}

describe("udp engine", () => {
  for (const useRing of [true, false]) {
    test(`echo through a flow, ${useRing ? "sends through the io_uring send ring" : "send(2) per datagram"}: every datagram back in order, counted`, async () => {
      const { got, want, counters, logged } = await echoThrough(useRing);
      expect(got).toEqual(want);
      expect(counters[C.flowsTotal]).toBe(1);
      expect(counters[C.datagramsFromClients]).toBe(41);
      expect(counters[C.datagramsFromOrigins]).toBe(41);
      expect(counters[C.bytesFromOrigins]).toBe(want.reduce((a, w) => a + w.length, 0));
      expect(logged).toEqual([]);
    });
  }
});
