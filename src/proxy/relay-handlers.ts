// The origin-side socket handlers of tcp relays (shared by every relay): plain,
// TLS (origin_tls), and a PROXY header in the clear followed by TLS.
import type { Socket } from "bun";
import type { Relay } from "./relay";

export type Peer = { relay: Relay; side: "client" | "origin"; upgraded?: boolean };

/** Handlers for the origin-side sockets (shared by every relay). */
export const originHandlers = {
  open(s: Socket<Peer>) {
    s.data.relay.originOpen(s);
  },
  data(s: Socket<Peer>, chunk: Buffer) {
    s.data.relay.fromOrigin(chunk);
  },
  drain(s: Socket<Peer>) {
    s.data.relay.drained("origin");
  },
  end(s: Socket<Peer>) {
    s.data.relay.ended("origin");
  },
  close(s: Socket<Peer>, error?: Error) {
    s.data.relay.sideClosed("origin", error);
  },
  error(s: Socket<Peer>, error: Error) {
    s.data.relay.sideClosed("origin", error);
  },
  connectError(s: Socket<Peer>, error: Error) {
    s.data.relay.originFailed(error);
  },
};

/**
 * The same over TLS (origin_tls): `open` is only the TCP connect; the relay
 * starts at `handshake`, on the pool's verdict. Until then a close or an
 * error is a failed connect (passive ejection counts it).
 */
export const tlsOriginHandlers = {
  ...originHandlers,
  open(s: Socket<Peer>) {
    s.data.relay.originTcpOpen(s);
  },
  handshake(s: Socket<Peer>, success: boolean, error: Error | null) {
    s.data.relay.originHandshake(s, success, error);
  },
  close(s: Socket<Peer>, error?: Error) {
    s.data.relay.originTlsClosed(error);
  },
  error(s: Socket<Peer>, error: Error) {
    s.data.relay.originTlsClosed(error);
  },
};

/**
 * origin_tls with a PROXY header (proxy_protocol): the header goes in the
 * clear on the TCP connection, then the same connection is upgraded to TLS
 * (as HAProxy's `send-proxy` with `ssl` does: the receiver reads the header
 * before its handshake). The raw socket only opens, writes and upgrades; from
 * then on the TLS socket (tlsOriginHandlers) carries everything, and the raw
 * one's events (ciphertext, its close) are not ours.
 */
export const clearThenTlsHandlers = {
  open(s: Socket<Peer>) {
    s.data.relay.originClearOpen(s);
  },
  data() {},
  close(s: Socket<Peer>, error?: Error) {
    if (!s.data.upgraded) s.data.relay.originTlsClosed(error);
  },
  error(s: Socket<Peer>, error: Error) {
    if (!s.data.upgraded) s.data.relay.originTlsClosed(error);
  },
  connectError(s: Socket<Peer>, error: Error) {
    s.data.relay.originFailed(error);
  },
};
