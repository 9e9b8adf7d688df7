/*
 * What the HTTP/1.1 exchange (conn.ts, endings.ts, exchange.ts) and the
 * origin keep-alive pool (origins.ts) need of a stream socket, so one HTTP
 * implementation runs over either transport: Bun's sockets (a Socket<T>
 * satisfies this as it is) or the engine's raw descriptors on the data
 * plane's thread (src/engine/httpsocket.ts). The events go the other way:
 * the transport calls the connection's clientData/clientDrain/clientEnd/
 * clientClosed, and the pool's originEvents (origins.ts).
 */
export interface HttpSocket {
  /** Bytes the kernel took (0..length): the rest waits in the caller's Outbox until a drain; < 0: closing. */
  write(bytes: Uint8Array): number;
  /**
   * As write, for the last bytes before the caller's end() or shutdown(),
   * which it calls before returning to the event loop: the transport may
   * hold them to go out with the FIN, in one segment (the engine's: MSG_MORE).
   * Optional (Bun's sockets have no such call: write is used).
   */
  writeLast?(bytes: Uint8Array): number;
  /** Flush and close: FIN, then the descriptor closes (the close event follows). */
  end(): void;
  /** FIN only (SHUT_WR): reading goes on. */
  shutdown(): void;
  /** RST at once (SO_LINGER 0). */
  terminate(): void;
  /** Stop reading (backpressure): the kernel's window closes on the sender. */
  pause(): void;
  resume(): void;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
}
