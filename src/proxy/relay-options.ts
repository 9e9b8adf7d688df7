// What a tcp relay (relay.ts) is given: its service's options, once per
// connection (tcp.ts), and the origin to dial (a pool's pick, or an sni
// route's: sni/session.ts).
import type { ServiceLog } from "../log/access";
import type { Member } from "../origin/pool";
import type { OriginTls } from "../origin/tls";
import type { CoarseClock } from "./clock";
import type { ServiceStats } from "./stats";

export interface RelayTarget {
  readonly host: string;
  readonly port: number;
  /** The pool endpoint: told of the connection and of how its connect went. */
  readonly member?: Member;
}

export interface RelayOptions {
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly clock: CoarseClock;
  readonly stats: ServiceStats;
  /** The service's access log; absent: off (nothing is recorded for it). */
  readonly log?: ServiceLog;
  /** origin_tls: the pool's TLS to its origins; absent: plain TCP. */
  readonly originTls?: OriginTls;
}
