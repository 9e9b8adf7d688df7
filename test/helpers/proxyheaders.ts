// Parsers a test origin uses to check what edgeproxy sent: written from the
// specifications, apart from the encoders in src/proxy/udp/headers.ts.
import { formatAddress } from "../../src/config/address";

export interface ParsedHeader {
  readonly source: string;
  readonly sourcePort: number;
  readonly destination: string;
  readonly destinationPort: number;
  readonly payload: Uint8Array;
}

const SIGNATURE = Buffer.from("0d0a0d0a000d0a515549540a", "hex");

/** PROXY protocol v2 (proxy-protocol.txt §2.2), DGRAM over IPv4 or IPv6; undefined when absent or malformed. */
export function parseProxyV2(d: Uint8Array): ParsedHeader | undefined {
  const b = Buffer.from(d);
  if (b.length < 16 || !b.subarray(0, 12).equals(SIGNATURE)) return undefined;
  if (b[12] !== 0x21) return undefined; // version 2, PROXY
  const len = b.readUInt16BE(14);
  const n = b[13] === 0x12 ? 4 : b[13] === 0x22 ? 16 : 0; // AF_INET/AF_INET6 + DGRAM
  if (!n || len < 2 * n + 4 || b.length < 16 + len) return undefined;
  return {
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
