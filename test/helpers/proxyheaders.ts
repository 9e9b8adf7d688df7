// Parsers a test origin uses to check what edgeproxy sent: written from the
// specifications, apart from the encoders and parser in src/proxy/proxyheader/.
import type { TCPSocketListener } from "bun";
import { formatAddress } from "../../src/config/address";

export interface ParsedHeader {
  /** v2: STREAM or DGRAM; v1 is always TCP. */
  readonly transport?: "stream" | "dgram";
  readonly source: string;
  readonly sourcePort: number;
  readonly destination: string;
  readonly destinationPort: number;
  readonly payload: Uint8Array;
}

const SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

/** PROXY protocol v2 (proxy-protocol.txt §2.2), STREAM or DGRAM over IPv4 or IPv6; undefined when absent or malformed. */
export function parseProxyV2(d: Uint8Array): ParsedHeader | undefined {
  const b = Buffer.from(d);
  if (b.length < 16 || !b.subarray(0, 12).equals(SIGNATURE)) return undefined;
  if (b[12] !== 0x21) return undefined; // version 2, PROXY
  const len = b.readUInt16BE(14);
  const n = b[13]! >> 4 === 1 ? 4 : b[13]! >> 4 === 2 ? 16 : 0; // AF_INET / AF_INET6
  const transport = (b[13]! & 0xf) === 1 ? "stream" : (b[13]! & 0xf) === 2 ? "dgram" : undefined;
  if (!n || !transport || len < 2 * n + 4 || b.length < 16 + len) return undefined;
  return {
    transport,
    source: formatAddress(b.subarray(16, 16 + n)),
    destination: formatAddress(b.subarray(16 + n, 16 + 2 * n)),
    sourcePort: b.readUInt16BE(16 + 2 * n),
    destinationPort: b.readUInt16BE(18 + 2 * n),
    payload: d.subarray(16 + len),
  };
}

const unmap = (a: Buffer) => (a.subarray(0, 12).equals(Buffer.from("00000000000000000000ffff", "hex")) ? a.subarray(12) : a);

/** Cloudflare Simple Proxy Protocol: 0x56EC, client and proxy address (IPv4-mapped for IPv4), ports; 38 bytes. */
export function parseSpp(d: Uint8Array): ParsedHeader | undefined {
  const b = Buffer.from(d);
  if (b.length < 38 || b.readUInt16BE(0) !== 0x56ec) return undefined;
  return {
    source: formatAddress(unmap(b.subarray(2, 18))),
    destination: formatAddress(unmap(b.subarray(18, 34))),
    sourcePort: b.readUInt16BE(34),
    destinationPort: b.readUInt16BE(36),
    payload: d.subarray(38),
  };
}

/** PROXY protocol v1 (§2.1): "PROXY TCP4|TCP6 src dst sport dport\r\n"; undefined when absent or malformed. */
export function parseProxyV1(d: Uint8Array): ParsedHeader | undefined {
  const text = Buffer.from(d.subarray(0, 107)).toString("latin1");
  const m = /^PROXY (TCP4|TCP6) ([0-9a-f.:]+) ([0-9a-f.:]+) (\d+) (\d+)\r\n/.exec(text);
  if (!m) return undefined;
  const [line, proto, source, destination, sport, dport] = m as unknown as [string, string, string, string, string, string];
  if (proto === "TCP4" ? source.includes(":") || destination.includes(":") : !source.includes(":") || !destination.includes(":")) return undefined;
  return { source, destination, sourcePort: Number(sport), destinationPort: Number(dport), payload: d.subarray(line.length) };
}

/** What a header origin saw on one connection: the header it parsed (if any) and the payload after it. */
export interface Seen {
  readonly version: 1 | 2 | undefined;
  readonly header: Omit<ParsedHeader, "payload"> | undefined;
  readonly payload: string;
}

/**
 * A TCP origin that reads a whole connection (until FIN), parses a PROXY v1
 * or v2 header at its start with the parsers above, and answers with what it
 * saw as JSON (a Seen), then closes. Every connection's Seen is kept too,
 * and `accepted` counts connections, finished or not.
 */
export function headerOrigin(host = "127.0.0.1", port = 0): { listener: TCPSocketListener<{ chunks: Buffer[] }>; seen: Seen[]; accepted: () => number } {
  const seen: Seen[] = [];
  let accepted = 0;
  const listener = Bun.listen<{ chunks: Buffer[] }>({
    hostname: host,
    port,
    allowHalfOpen: true,
    socket: {
      open(s) {
        accepted++;
        s.data = { chunks: [] };
      },
      data(s, d) {
        s.data.chunks.push(Buffer.from(d));
      },
      end(s) {
        const all = new Uint8Array(Buffer.concat(s.data.chunks));
        const v1 = parseProxyV1(all);
        const v2 = v1 ? undefined : parseProxyV2(all);
        const h = v1 ?? v2;
        const header = h ? { transport: h.transport, source: h.source, sourcePort: h.sourcePort, destination: h.destination, destinationPort: h.destinationPort } : undefined;
        const got: Seen = { version: v1 ? 1 : v2 ? 2 : undefined, header, payload: Buffer.from(h ? h.payload : all).toString("latin1") };
        seen.push(got);
        s.end(JSON.stringify(got));
      },
    },
  });
  return { listener, seen, accepted: () => accepted };
}
