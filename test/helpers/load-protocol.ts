// The load generator's protocol and its origin (test/helpers/load.ts). Fixed
// size both ways, so a reply can be checked byte for byte without parsing: a
// 32-byte request naming its sequence number, a 256-byte reply that repeats it.
import type { Socket, TCPSocketListener } from "bun";

export const REQUEST_SIZE = 32;
export const REPLY_SIZE = 256;

export function requestBytes(seq: number): Buffer {
  return Buffer.from(`REQ ${String(seq).padStart(27, "0")}\n`);
}

// The reply's tail: a fixed pattern, so a reply cut short or spliced from two shows up as wrong bytes.
const FILLER = Buffer.from(Array.from({ length: REPLY_SIZE - REQUEST_SIZE }, (_, i) => (i === REPLY_SIZE - REQUEST_SIZE - 1 ? 10 : 97 + (i % 26))));

/** "RES <seq>\n" followed by the filler: what the origin answers to `req`. */
export function replyFor(req: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(REPLY_SIZE);
  out.write("RES", 0, "latin1");
  out.set(req.subarray(3, REQUEST_SIZE), 3);
  out.set(FILLER, REQUEST_SIZE);
  return out;
}

const isRequest = (b: Uint8Array) => b[0] === 0x52 && b[1] === 0x45 && b[2] === 0x51 && b[3] === 0x20 && b[REQUEST_SIZE - 1] === 0x0a;

export interface OriginStats {
  connections: number;
  requests: number;
  badRequests: number;
}

interface OriginConn {
  partial: Buffer | undefined;
  queued: Buffer[];
}

/** The origin: answers each complete 32-byte request with its reply, in order; a malformed request gets "ERR" and a close. */
export function startOrigin(hostname = "127.0.0.1", port = 0): { listener: TCPSocketListener<OriginConn>; stats: OriginStats } {
  const stats: OriginStats = { connections: 0, requests: 0, badRequests: 0 };
  const flush = (s: Socket<OriginConn>) => {
    while (s.data.queued.length) {
      const b = s.data.queued[0]!;
      const n = s.write(b);
      if (n < b.length) return void (s.data.queued[0] = b.subarray(Math.max(n, 0)));
      s.data.queued.shift();
    }
  };
  const listener = Bun.listen<OriginConn>({
    hostname,
    port,
    socket: {
      open(s) {
        stats.connections++;
        s.data = { partial: undefined, queued: [] };
      },
      data(s, chunk) {
        const b = s.data.partial ? Buffer.concat([s.data.partial, chunk]) : chunk;
        const whole = b.length - (b.length % REQUEST_SIZE);
        const replies: Buffer[] = [];
        for (let off = 0; off < whole; off += REQUEST_SIZE) {
          const req = b.subarray(off, off + REQUEST_SIZE);
          if (!isRequest(req)) {
            stats.badRequests++;
            s.end("ERR bad request\n");
            return;
          }
          replies.push(replyFor(req));
        }
        stats.requests += replies.length;
        s.data.partial = whole < b.length ? Buffer.from(b.subarray(whole)) : undefined;
        if (!replies.length) return;
        s.data.queued.push(replies.length === 1 ? replies[0]! : Buffer.concat(replies));
        flush(s);
      },
      drain: flush,
    },
  });
  return { listener, stats };
}
