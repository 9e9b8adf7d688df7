import { readFileSync } from "node:fs";
import type { Family } from "../config/address";

/** A socket of this network namespace that already listens (TCP) or is bound unconnected (UDP). */
export interface Listener {
  readonly protocol: "tcp" | "udp";
  readonly family: Family;
  readonly addr: Uint8Array;
  readonly port: number;
  readonly inode: number;
}

// /proc/net/{tcp,udp}[6] (Documentation/networking/proc_net_tcp.rst): the
// local address is hex of the in-memory u32 words, so each 4-byte group is
// byte-swapped on little-endian machines. st 0A = TCP_LISTEN, 07 = TCP_CLOSE
// (an unconnected UDP socket).
function parseHexAddress(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let w = 0; w < out.length; w += 4) {
    for (let b = 0; b < 4; b++) out[w + b] = parseInt(hex.slice(2 * (w + 3 - b), 2 * (w + 3 - b) + 2), 16);
  }
  return out;
}

function parseTable(text: string, protocol: "tcp" | "udp", family: Family): Listener[] {
  const wanted = protocol === "tcp" ? "0A" : "07";
  const out: Listener[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== wanted) continue;
    const [addrHex, portHex] = f[1]!.split(":") as [string, string];
    if (protocol === "udp" && f[2] !== (family === 4 ? "00000000:0000" : "00000000000000000000000000000000:0000")) continue;
    out.push({ protocol, family, addr: parseHexAddress(addrHex), port: parseInt(portHex, 16), inode: Number(f[9]) });
  }
  return out;
}

/** Listening sockets of the calling process's network namespace. */
export function listeners(protocol: "tcp" | "udp"): Listener[] {
  const read = (path: string) => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return ""; // no IPv6 in this kernel
    }
  };
  return [...parseTable(read(`/proc/net/${protocol}`), protocol, 4), ...parseTable(read(`/proc/net/${protocol}6`), protocol, 6)];
}

export const isWildcard = (addr: Uint8Array) => addr.every((b) => b === 0);
