// The busiest clients (src/proxy/clients.ts) of the engine's connections.
// The tracker the live view reads lives on the main thread and counts Bun's
// accepts; the engine accepts on the data plane's thread, so it keeps a
// tracker of its own there and sends its snapshot over, which the main
// thread merges into the process's (DataPlanes.clientsSnapshot): the same
// Space-Saving counts, updated at accept, bytes added at close.
import { formatAddress } from "../config/address";
import { CLIENT_COUNTERS, ClientTracker, type ClientsSnapshot } from "../proxy/clients";
import { AF_INET } from "../system/sockaddr";

/**
 * A snapshot goes to the main thread at most this often (each sweep) while
 * clients come and go: Bun's accepts count at once and the dashboard reads
 * once a second, so the engine's must not lag much more than a sweep. A
 * snapshot of 128 addresses costs ~0.1-0.2 ms (measured): ~0.1-0.2% of a
 * core at most.
 */
const REPORT_MS = 100;
/** And at least this often while it lists anyone, so the window's rotation shows. */
const REFRESH_MS = 5_000;

/**
 * "ip:port" of the accepted peer (sockaddr_in or sockaddr_in6, its port at
 * bytes 2-3, network order) from `address`, its address's text: as
 * sockaddrString writes it (IPv6 in brackets), one number made, not five.
 */
export function peerText(address: string, sockaddr: Uint8Array): string {
  const port = (sockaddr[2]! << 8) | sockaddr[3]!;
  return sockaddr[0]! + (sockaddr[1]! << 8) === AF_INET ? `${address}:${port}` : `[${address}]:${port}`;
}

/** IPv4 peer texts remembered (v4Text): 4096 short strings, ~200 KiB at most. */
const V4_TEXTS = 4096;

export class EngineClients {
  private readonly tracker: ClientTracker;
  private dirty = false;
  private listed = false;
  private reportedAt = -Infinity;

  constructor(clock: { readonly now: number }) {
    this.tracker = new ClientTracker(clock);
  }

  /**
   * A new connection from the peer accept4 wrote into `sockaddr` (a
   * sockaddr_in or sockaddr_in6): counted; returns its address text, which
   * refused() and closed() take.
   */
  seenPeer(sockaddr: Uint8Array): string {
    // The address straight from the sockaddr's bytes: no decoded Endpoint per connection.
    const address = sockaddr[0]! + (sockaddr[1]! << 8) === AF_INET ? this.v4Text(sockaddr) : formatAddress(sockaddr.subarray(8, 24));
    this.seen(address);
    return address;
  }

  /**
   * An IPv4 peer's text, the same string each time for an address seen
   * lately: no string is built per connection, and the tracker's Map finds
   * a string whose hash is known. Bounded: cleared when full (a scan of many
   * addresses then builds texts again, as before).
   */
  private v4Text(sockaddr: Uint8Array): string {
    const key = ((sockaddr[4]! << 24) | (sockaddr[5]! << 16) | (sockaddr[6]! << 8) | sockaddr[7]!) >>> 0;
    let text = this.v4Texts.get(key);
    if (text === undefined) {
      if (this.v4Texts.size >= V4_TEXTS) this.v4Texts.clear();
      text = `${sockaddr[4]}.${sockaddr[5]}.${sockaddr[6]}.${sockaddr[7]}`;
      this.v4Texts.set(key, text);
    }
    return text;
  }

  private readonly v4Texts = new Map<number, string>();

  /** A new connection from `address` (a PROXY header's client). */
  seen(address: string): void {
    this.tracker.seen(address);
    this.dirty = true;
  }

  /** The connection just seen was refused by a per-client limit. */
  refused(address: string): void {
    this.tracker.refused(address);
    this.dirty = true;
  }

  closed(address: string, bytes: number): void {
    if (bytes <= 0) return;
    this.tracker.closed(address, bytes);
    this.dirty = true;
  }

  /** When the next copy is due (due() then gives it) if no connection is seen, refused or closed before: Infinity for never. */
  get dueAt(): number {
    return this.dirty ? this.reportedAt + REPORT_MS : this.listed ? this.reportedAt + REFRESH_MS : Infinity;
  }

  /** Every tracked address (both generations), when the main thread's copy is due; else undefined. */
  due(now: number): ClientsSnapshot | undefined {
    const since = now - this.reportedAt;
    if (!(this.dirty ? since >= REPORT_MS : this.listed && since >= REFRESH_MS)) return undefined;
    this.dirty = false;
    this.reportedAt = now;
    const s = this.tracker.snapshot(2 * CLIENT_COUNTERS);
    this.listed = s.top.length > 0;
    return s;
  }
}
