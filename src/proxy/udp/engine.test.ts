// The UDP engine driven by hand on real loopback sockets (no BPF: the
// listener is bound to the address the client sends to), with its sends
// through the io_uring send ring and without it (the path taken where
// io_uring is unavailable): the same datagrams, order and counters.
import { afterEach, describe, expect, test } from "bun:test";
import type { udp } from "bun";
import { Epoll, EPOLLERR } from "../../system/epoll";
import { bindTo, connectTo, IP_RECVORIGDSTADDR, localEndpoint, openUdpSocket, setIntOption, SO_REUSEADDR, SOL_IP, SOL_SOCKET } from "../../system/udp";
import { Engine } from "./engine";
import { C, dropIndex, ROW } from "./stats";
import { libc } from "../../system/libc";

const MSG_DONTWAIT = 0x40;

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0).reverse()) c();
});

async function echoThrough(useRing: boolean) {
  const epoll = new Epoll(64);
  const counters = new Float64Array(ROW);
  const logged: string[] = [];
  const engine = new Engine(epoll, counters, 100, (l) => logged.push(l), () => {}, undefined, undefined, undefined, useRing);
  // No ring before the first UDP service: a thread serving only tcp or http never sets one up.
  expect(engine.ringSends).toBeUndefined();
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
  return { got, want, counters, logged, ringSends: engine.ringSends };
}

describe("udp engine", () => {
  for (const useRing of [true, false]) {
    test(`echo through a flow, ${useRing ? "sends through the io_uring send ring" : "send(2) per datagram"}: every datagram back in order, counted`, async () => {
      const { got, want, counters, logged, ringSends } = await echoThrough(useRing);
      // Every echo went through the ring (or none had one).
      if (useRing) expect(ringSends).toBe(41);
      else expect(ringSends).toBeUndefined();
      expect(got).toEqual(want);
      expect(counters[C.flowsTotal]).toBe(1);
      expect(counters[C.datagramsFromClients]).toBe(41);
      expect(counters[C.datagramsFromOrigins]).toBe(41);
      expect(counters[C.bytesFromOrigins]).toBe(want.reduce((a, w) => a + w.length, 0));
      expect(logged).toEqual([]);
    });
  }
});

// A flow whose origin refuses (ICMP port unreachable, loopback): the refusal
// closes the flow while the loop is still forwarding a burst of its client's
// datagrams. Nothing of the rest may go to the flow's descriptors: their
// numbers are free for the next socket (the tcp and http engines accept on
// this thread too), and reading them from the closed Fd threw, which stopped
// the data plane's loop.
describe("udp engine, an origin refusing in the middle of a burst", () => {
  const LO = new Uint8Array([127, 0, 0, 1]);
  const listen = () => {
    const l = openUdpSocket(4, "test listener");
    setIntOption(l.raw, SOL_SOCKET, SO_REUSEADDR, 1, "test listener");
    setIntOption(l.raw, SOL_IP, IP_RECVORIGDSTADDR, 1, "test listener");
    bindTo(l.raw, { family: 4, addr: LO, port: 0 }, "test listener");
    return { port: localEndpoint(l.raw, "test listener").port, fd: l.release() };
  };
  const client = async (port: number) => {
    const s = await Bun.udpSocket({ hostname: "127.0.0.1", connect: { hostname: "127.0.0.1", port } });
    cleanup.push(() => s.close());
    return s;
  };

  async function setup(useRing: boolean) {
    const epoll = new Epoll(64);
    const counters = new Float64Array(2 * ROW);
    const engine = new Engine(epoll, counters, 100, () => {}, () => {}, undefined, undefined, undefined, useRing);
    cleanup.push(() => epoll.close(), () => engine.closeAll());
    // A port with no socket: the origin's host answers ICMP port unreachable.
    const gone = openUdpSocket(4, "test origin");
    bindTo(gone.raw, { family: 4, addr: LO, port: 0 }, "test origin");
    const originPort = localEndpoint(gone.raw, "test origin").port;
    gone.close();
    const refusing = listen();
    const origins = { balance: "round-robin" as const, endpoints: [{ key: "o", address: "127.0.0.1", port: originPort, weight: 1, healthy: true, ejectedPorts: [] }] };
    engine.add({ slot: 0, name: "refused", listeners: [{ fd: refusing.fd, family: 4 }], origins, proxyProtocol: "off", idleMs: 10_000 });
    const echo = listen();
    engine.add({ slot: 1, name: "echo", listeners: [{ fd: echo.fd, family: 4 }], proxyProtocol: "off", idleMs: 10_000 });
    // One turn of the worker's loop without its flush. Events with EPOLLERR are left out: the origin
    // socket's pending refusal is to meet the burst's first send, not a read.
    const turn = () => {
      const n = epoll.wait(50);
      engine.now = performance.now();
      for (let i = 0; i < n; i++) if (!(epoll.eventsAt(i) & EPOLLERR)) engine.ready(epoll.fdAt(i));
      if (engine.pending) engine.resume();
    };
    const victim = await client(refusing.port);
    // The flow's first datagram goes out; the origin's host refuses it (the error waits on the origin socket).
    victim.send("prime");
    await Bun.sleep(20);
    turn();
    engine.flush();
    await Bun.sleep(20);
    expect(counters[C.flowsActive]).toBe(1);
    return { engine, counters, victim, echo, turn, row: (slot: number, i: number) => counters[slot * ROW + i] };
  }

  test("send(2) per datagram: the burst's first send is refused, the flow ends, the rest are dropped and counted; the loop goes on", async () => {
    const { victim, turn, row } = await setup(false);
    for (let i = 0; i < 5; i++) victim.send(`burst ${i}`);
    await Bun.sleep(20);
    turn();
    expect(row(0, C.flowsActive)).toBe(0);
    expect(row(0, dropIndex("origin_refused"))).toBe(5);
  });

  test("through the send ring: a flush for room that ends the flow leaves nothing queued for its descriptors (their numbers go to the next sockets)", async () => {
    const { engine, victim, echo, turn, row } = await setup(true);
    // Another flow fills the send ring's staging area first (in event order), so a flush for room comes
    // in the middle of the victim's burst, after its first send (refused) was queued.
    const filler = await client(echo.port);
    filler.send("hello");
    await Bun.sleep(20);
    turn();
    engine.flush();
    // 7000 bytes: each fits its receive buffer's 8 KiB allocation, so 20 fit a socket's default buffer. The staging
    // area (256 KiB) takes the filler's 20 and the victim's first 17; its 18th and last is queued after a flush.
    const big = (tag: string) => tag.padEnd(7000, ".");
    for (let i = 0; i < 20; i++) filler.send(big(`filler ${i}`));
    await Bun.sleep(20);
    for (let i = 0; i < 18; i++) victim.send(big(`victim ${i}`));
    await Bun.sleep(20);
    turn();
    expect(row(0, C.flowsActive)).toBe(0);
    // New sockets take the lowest free numbers: the flow's. Whatever is still queued for those goes to them.
    const sink = openUdpSocket(4, "test sink");
    cleanup.push(() => sink.close());
    bindTo(sink.raw, { family: 4, addr: LO, port: 0 }, "test sink");
    const sinkPort = localEndpoint(sink.raw, "test sink").port;
    for (let i = 0; i < 4; i++) {
      const s = openUdpSocket(4, "test socket");
      cleanup.push(() => s.close());
      connectTo(s.raw, { family: 4, addr: LO, port: sinkPort }, "test socket");
    }
    engine.flush();
    await Bun.sleep(20);
    const got = new Uint8Array(9000);
    const n = Number(libc.recv(sink.raw, got, got.length, MSG_DONTWAIT));
    // Before: the victim's 18th datagram, sent through a socket of the test's.
    expect(n < 0 ? "" : Buffer.from(got.subarray(0, Math.min(n, 12))).toString()).toBe("");
    expect(row(0, dropIndex("origin_refused"))).toBeGreaterThanOrEqual(1);
  });
});
