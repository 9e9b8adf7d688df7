import type { udp } from "bun";

// Clients send from loopback, not from the steered prefixes: a client's
// ephemeral port on an edge address would hold that ip:port, and a flow
// for it could not bind there (EADDRINUSE, counted as flow_setup).
const clientAddress = (host: string) => (host.includes(":") ? "::1" : "127.0.0.1");

/** What a UDP exchange got: the first reply, or nothing before the timeout. */
export type UdpOutcome = { kind: "data"; bytes: Uint8Array } | { kind: "timeout" };

/**
 * Send one datagram from a socket *connected* to host:port and wait for the
 * first reply. The kernel delivers a connected socket only datagrams from
 * the address it is connected to, so a reply proves the proxy answered from
 * the exact ip:port the client sent to. `from`: the client's address (a new
 * socket each call, so a new flow), loopback by default.
 */
export async function udpExchange(host: string, port: number, payload: Uint8Array | string, timeoutMs = 3000, from = clientAddress(host)): Promise<UdpOutcome> {
  let done: (o: UdpOutcome) => void = () => {};
  const result = new Promise<UdpOutcome>((r) => (done = r));
  const sock = await Bun.udpSocket({
    hostname: from,
    connect: { hostname: host, port },
    socket: {
      data(_s, data) {
        done({ kind: "data", bytes: new Uint8Array(data) });
      },
    },
  });
  const timer = setTimeout(() => done({ kind: "timeout" }), timeoutMs);
  try {
    sock.send(payload);
    return await result;
  } finally {
    clearTimeout(timer);
    sock.close();
  }
}

export const udpText = (o: UdpOutcome) => (o.kind === "data" ? Buffer.from(o.bytes).toString() : `<${o.kind}>`);

/** A datagram a test origin received: payload and sender. */
export interface Received {
  readonly bytes: Uint8Array;
  readonly address: string;
  readonly port: number;
}

/** A UDP origin that answers each datagram with `reply(datagram)` (echo by default) and keeps what it got. */
export async function udpOrigin(
  host = "127.0.0.1",
  reply: (d: Received) => Uint8Array | string | undefined = (d) => d.bytes,
  port = 0,
): Promise<{ socket: udp.Socket<"buffer">; port: number; received: Received[] }> {
  const received: Received[] = [];
  const socket = await Bun.udpSocket({
    hostname: host,
    port,
    socket: {
      data(s, data, port, address) {
        const d = { bytes: new Uint8Array(data), address, port };
        received.push(d);
        const r = reply(d);
        if (r !== undefined) s.send(r, port, address);
      },
    },
  });
  return { socket, port: socket.port, received };
}

/** A UDP origin on 127.0.0.1 that answers every datagram with its name. */
export async function udpGreeter(name: string, port = 0) {
  return udpOrigin("127.0.0.1", () => name, port);
}

/** A connected UDP client kept open for several exchanges. */
export class UdpClient {
  private readonly queue: Uint8Array[] = [];
  private waiter: (() => void) | undefined;

  private constructor(readonly socket: udp.ConnectedSocket<"buffer">) {}

  static async connect(host: string, port: number): Promise<UdpClient> {
    let self: UdpClient | undefined;
    const socket = await Bun.udpSocket({
      hostname: clientAddress(host),
      connect: { hostname: host, port },
      socket: {
        data(_s, data) {
          self!.queue.push(new Uint8Array(data));
          self!.waiter?.();
        },
      },
    });
    self = new UdpClient(socket);
    return self;
  }

  /** The client's own address, as the origin should see it in a PROXY/SPP header. */
  get local(): { address: string; port: number } {
    return this.socket.address;
  }

  send(payload: Uint8Array | string): void {
    this.socket.send(payload);
  }

  /** The next datagram, or undefined after timeoutMs. */
  async next(timeoutMs = 3000): Promise<Uint8Array | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, left);
      });
    }
    return this.queue.shift();
  }

  async request(payload: Uint8Array | string, timeoutMs = 3000): Promise<string> {
    this.send(payload);
    const got = await this.next(timeoutMs);
    return got ? Buffer.from(got).toString() : "<timeout>";
  }

  close(): void {
    this.socket.close();
  }
}
