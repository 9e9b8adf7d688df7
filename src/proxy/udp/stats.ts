// Counters of the UDP data plane, shared between the worker thread that
// moves datagrams (the only writer) and the main thread that reports them.
// One row of doubles per service slot; aligned 8-byte writes do not tear.

/** Why a datagram was dropped; every reason is reported, even at zero. */
export const UDP_DROP_REASONS = [
  /** No flow could be made: the flow cap was full of active flows. */
  "flow_limit",
  /** Making the flow's sockets failed (bind, connect, descriptors). */
  "flow_setup",
  /** The datagram did not fit the receive buffer (never forwarded in part). */
  "truncated",
  /** Too big to forward once the PROXY/SPP header is added (EMSGSIZE). */
  "too_big",
  /** The origin's host answered ICMP port unreachable. */
  "origin_refused",
  /** The kernel would not take it (full send buffer, no route). */
  "send_failed",
  /** An SPP origin replied without the SPP header. */
  "bad_header",
  /** Steered without an original destination (not through the dispatcher). */
  "no_destination",
  /** Every origin of the pool was down or ejected. */
  "no_origin",
  /** It would have made a flow for a client already at source_connections flows (all workers together). */
  "source_limit",
] as const;
export type UdpDropReason = (typeof UDP_DROP_REASONS)[number];

export const C = {
  flowsActive: 0,
  flowsTotal: 1,
  datagramsFromClients: 2,
  bytesFromClients: 3,
  datagramsFromOrigins: 4,
  bytesFromOrigins: 5,
  flowsExpired: 6,
  flowsEvicted: 7,
  drops: 8,
} as const;
/** Doubles per service row. */
export const ROW = C.drops + UDP_DROP_REASONS.length;
/** Service rows; a restarted service takes a new one and frees the old when its last flow ends. */
export const SLOTS = 1024;

export const dropIndex = (r: UdpDropReason) => C.drops + UDP_DROP_REASONS.indexOf(r);

/** Add n to counter i of a row (the data plane's thread, the only writer). */
export const bump = (row: Float64Array, i: number, n = 1) => {
  row[i] = row[i]! + n;
};

/** A UDP service's figures, as the admin API reports them. */
export interface DatagramStats {
  readonly flowsActive: number;
  readonly flowsTotal: number;
  readonly datagramsFromClients: number;
  readonly bytesFromClients: number;
  readonly datagramsFromOrigins: number;
  readonly bytesFromOrigins: number;
  readonly flowsExpired: number;
  /** Flows closed early to make room under the flow cap (never-replied ones first). */
  readonly flowsEvicted: number;
  readonly drops: Readonly<Record<UdpDropReason, number>>;
}

/** Read one row. */
export function readRow(row: Float64Array): DatagramStats {
  return {
    flowsActive: row[C.flowsActive]!,
    flowsTotal: row[C.flowsTotal]!,
    datagramsFromClients: row[C.datagramsFromClients]!,
    bytesFromClients: row[C.bytesFromClients]!,
    datagramsFromOrigins: row[C.datagramsFromOrigins]!,
    bytesFromOrigins: row[C.bytesFromOrigins]!,
    flowsExpired: row[C.flowsExpired]!,
    flowsEvicted: row[C.flowsEvicted]!,
    drops: Object.fromEntries(UDP_DROP_REASONS.map((r) => [r, row[dropIndex(r)]!])) as Record<UdpDropReason, number>,
  };
}
