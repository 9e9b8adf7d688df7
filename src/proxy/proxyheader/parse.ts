// A strict, incremental parser of inbound PROXY protocol v1 and v2 headers
// (haproxy.org/download/2.9/doc/proxy-protocol.txt), for connections from
// trusted load balancers. Call it with everything received so far; it says
// whether the header is complete, needs more bytes, or is invalid. Pure byte
// work, shared by the tcp and http data planes.
import { parseAddress } from "../../config/address";
import type { Endpoint } from "../../system/sockaddr";
import { unmapEndpoint, V2_SIGNATURE, type Transport } from "./encode";

/** Why a header was refused; the stats label. */
export type HeaderError = "signature" | "malformed" | "too_long";

/** What the bytes so far amount to. */
export type ParseResult =
  | { readonly kind: "need-more" }
  | { readonly kind: "error"; readonly reason: HeaderError; readonly detail: string }
  | {
      readonly kind: "done";
      readonly version: 1 | 2;
      /** Header bytes, TLVs included; what follows is the client's payload. */
      readonly consumed: number;
      /** The original connection; absent for v1 UNKNOWN and v2 LOCAL (or AF_UNSPEC/AF_UNIX): keep the socket's own addresses. */
      readonly addresses?: { readonly src: Endpoint; readonly dst: Endpoint };
    };

/** §2.1: the longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses and ports). */
export const V1_MAX = 107;
/**
 * Our cap on a v2 header's length field (address block plus TLVs). §2.2
 * allows up to 65535; real balancers send tens of bytes of TLVs (AWS's VPC
 * endpoint id, Azure's link id), and a cap keeps a trusted but broken peer
 * from making us buffer 64 KiB per connection.
 */
export const V2_MAX_LENGTH = 2048;

const NEED_MORE: ParseResult = { kind: "need-more" };
const V1_SIGNATURE = [0x50, 0x52, 0x4f, 0x58, 0x59, 0x20]; // "PROXY "

const fail = (reason: HeaderError, detail: string): ParseResult => ({ kind: "error", reason, detail });

/** Does `data` start with `sig`, as far as both go? ("full": all of sig is there.) */
function prefixMatch(data: Uint8Array, sig: readonly number[]): "full" | "partial" | "no" {
  const n = Math.min(data.length, sig.length);
  for (let i = 0; i < n; i++) if (data[i] !== sig[i]) return "no";
  return n === sig.length ? "full" : "partial";
}

/**
 * Parse a PROXY v1 or v2 header from the start of `data` (everything the
 * connection has sent so far). `transport` is what the receiving socket is:
 * a v2 header announcing the other one is refused (§2.2 lets the receiver
 * reject what it does not support).
 */
export function parseProxyHeader(data: Uint8Array, transport: Transport = "stream"): ParseResult {
  // §2: the receiver must not guess; a trusted peer's connection starts with one signature or the other.
  const v2 = prefixMatch(data, V2_SIGNATURE);
  if (v2 === "full") return parseV2(data, transport);
  const v1 = prefixMatch(data, V1_SIGNATURE);
  if (v1 === "full") return parseV1(data);
  if (v2 === "partial" || v1 === "partial") return NEED_MORE;
  return fail("signature", "the connection does not start with a PROXY v1 or v2 signature");
}

// §2.1: "PROXY" SP ("TCP4" | "TCP6") SP src SP dst SP sport SP dport CRLF,
// or "PROXY UNKNOWN" followed by anything up to CRLF, within 107 bytes.
function parseV1(data: Uint8Array): ParseResult {
  // The CR may stand at index V1_MAX - 2 at the latest, so that CRLF ends within V1_MAX bytes.
  const limit = Math.min(data.length, V1_MAX - 1);
  let end = -1;
  for (let i = V1_SIGNATURE.length; i < limit; i++) {
    const b = data[i]!;
    if (b === 0x0d) {
      if (i + 1 >= data.length) return NEED_MORE;
      // §2.1: "must not tolerate a single CR or LF character to end the line".
      if (data[i + 1] !== 0x0a) return fail("malformed", "v1: CR without LF");
      end = i;
      break;
    }
    // US-ASCII printable only; a LF without CR, a NUL or a control byte is not part of the line.
    if (b < 0x20 || b > 0x7e) return fail("malformed", `v1: byte 0x${b.toString(16).padStart(2, "0")} at ${i}`);
  }
  if (end < 0) return data.length >= V1_MAX - 1 ? fail("too_long", `v1: no CRLF in the first ${V1_MAX} bytes`) : NEED_MORE;
  const line = new TextDecoder().decode(data.subarray(V1_SIGNATURE.length, end));
  const consumed = end + 2;
  const fields = line.split(" ");
  const proto = fields[0];
  // §2.1: for UNKNOWN "the receiver must ignore anything presented before the CRLF".
  if (proto === "UNKNOWN") return { kind: "done", version: 1, consumed };
  if (proto !== "TCP4" && proto !== "TCP6") return fail("malformed", `v1: protocol ${JSON.stringify(proto?.slice(0, 16))} is not TCP4, TCP6 or UNKNOWN`);
  if (fields.length !== 5) return fail("malformed", `v1: ${fields.length - 1} fields after ${proto}, expected 4 separated by single spaces`);
  const family = proto === "TCP4" ? 4 : 6;
  const src = v1Address(fields[1]!, family);
  const dst = v1Address(fields[2]!, family);
  const sport = v1Port(fields[3]!);
  const dport = v1Port(fields[4]!);
  if (!src || !dst) return fail("malformed", `v1: addresses are not both ${proto === "TCP4" ? "IPv4" : "IPv6"}`);
  if (sport === undefined || dport === undefined) return fail("malformed", "v1: ports must be 0-65535 without leading zeros");
  return {
    kind: "done",
    version: 1,
    consumed,
    addresses: { src: unmapEndpoint({ family, addr: src, port: sport }), dst: unmapEndpoint({ family, addr: dst, port: dport }) },
  };
}

function v1Address(text: string, family: 4 | 6): Uint8Array | undefined {
  // §2.1: IPv4 as four decimal numbers without leading zeros (parseAddress
  // enforces that); IPv6 as hex groups and colons only (no dotted tail, no zone, no brackets).
  if (family === 4 ? !/^[0-9.]{7,15}$/.test(text) : !/^[0-9a-fA-F:]{2,39}$/.test(text)) return undefined;
  const addr = parseAddress(text);
  return addr && addr.length === (family === 4 ? 4 : 16) ? addr : undefined;
}

function v1Port(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 ? n : undefined;
}

// §2.2: 12-byte signature, version/command, family/transport, 16-bit length,
// then `length` bytes: addresses, ports, and TLVs (§2.2.x) up to the end.
function parseV2(data: Uint8Array, transport: Transport): ParseResult {
  if (data.length < 16) return NEED_MORE;
  const verCmd = data[12]!;
  const famProto = data[13]!;
  const length = (data[14]! << 8) | data[15]!;
  if (verCmd >> 4 !== 2) return fail("malformed", `v2: version ${verCmd >> 4}, expected 2`);
  const command = verCmd & 0x0f;
  // §2.2: "Receivers must drop connections presenting unexpected values here."
  if (command > 1) return fail("malformed", `v2: command ${command} is neither LOCAL nor PROXY`);
  const family = famProto >> 4;
  const proto = famProto & 0x0f;
  // §2.2: other families and transports "must be rejected as invalid by receivers".
  if (family > 3 || proto > 2) return fail("malformed", `v2: family/transport byte 0x${famProto.toString(16).padStart(2, "0")} is not defined`);
  // Decided before waiting for the bytes, so an oversized claim costs us nothing.
  if (length > V2_MAX_LENGTH) return fail("too_long", `v2: length ${length} exceeds ${V2_MAX_LENGTH}`);
  if (data.length < 16 + length) return NEED_MORE;
  const consumed = 16 + length;
  // §2.2 LOCAL: "use the real connection endpoints and discard the protocol block including the family".
  if (command === 0) return { kind: "done", version: 2, consumed };
  const need = family === 1 ? 12 : family === 2 ? 36 : family === 3 ? 216 : 0;
  if (length < need) return fail("malformed", `v2: length ${length} is shorter than the ${need}-byte address block of its family`);
  // AF_UNSPEC or UNSPEC transport (§2.2: the receiver "is free to accept the
  // connection anyway and use the real endpoint addresses"), and AF_UNIX,
  // which has no address a TCP origin could use: the socket's own addresses.
  if (family === 0 || proto === 0 || family === 3) return { kind: "done", version: 2, consumed };
  if (proto !== (transport === "stream" ? 1 : 2)) return fail("malformed", `v2: a ${proto === 1 ? "STREAM" : "DGRAM"} header on a ${transport} socket`);
  const tlvError = checkTlvs(data.subarray(16 + need, consumed));
  if (tlvError) return fail("malformed", `v2: ${tlvError}`);
  const n = family === 1 ? 4 : 16;
  const fam = family === 1 ? 4 : 6;
  const port = (at: number) => (data[at]! << 8) | data[at + 1]!;
  return {
    kind: "done",
    version: 2,
    consumed,
    addresses: {
      src: unmapEndpoint({ family: fam, addr: data.slice(16, 16 + n), port: port(16 + 2 * n) }),
      dst: unmapEndpoint({ family: fam, addr: data.slice(16 + n, 16 + 2 * n), port: port(18 + 2 * n) }),
    },
  };
}

// §2.2.x: TLVs fill the rest of the header exactly: type (1), length (2, network order), value.
// We use none of them; checking that they tile the space keeps a corrupt header from passing.
function checkTlvs(tlvs: Uint8Array): string | undefined {
  let at = 0;
  // Each step consumes at least 3 bytes: at most length/3 iterations.
  while (at < tlvs.length) {
    if (tlvs.length - at < 3) return `${tlvs.length - at} stray byte(s) after the TLVs`;
    const len = (tlvs[at + 1]! << 8) | tlvs[at + 2]!;
    if (at + 3 + len > tlvs.length) return `TLV type 0x${tlvs[at]!.toString(16)} of length ${len} overruns the header`;
    at += 3 + len;
  }
  return undefined;
}
