import { ConfigError } from "../errors";

/** An IP address as bytes in network order: 4 for IPv4, 16 for IPv6. */
export type Family = 4 | 6;

/** A CIDR prefix with the host bits cleared. */
export interface Prefix {
  readonly family: Family;
  readonly addr: Uint8Array;
  readonly length: number;
}

// Scanned by character, not split and matched per part: every accepted connection's address comes through here when its ends are needed.
function parseIPv4(text: string): Uint8Array | undefined {
  // Four decimal parts of 1-3 digits, 0-255, without leading zeros (an octal reading elsewhere), separated by dots.
  const out = new Uint8Array(4);
  let part = 0;
  let v = 0;
  let digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || v > 255 || part > 3) return undefined;
      out[part++] = v;
      v = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 3 || (digits === 1 && v === 0)) return undefined;
      v = v * 10 + (c - 48);
      digits++;
    } else {
      return undefined;
    }
  }
  return part === 4 ? out : undefined;
}

function parseIPv6(text: string): Uint8Array | undefined {
  const zone = text.indexOf("%");
  if (zone >= 0) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** Parse an IPv4 or IPv6 literal (brackets allowed for IPv6); undefined when it is neither. */
export function parseAddress(text: string): Uint8Array | undefined {
  const t = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return t.includes(":") ? parseIPv6(t) : parseIPv4(t);
}

/** Clear the bits after `length`. */
export function maskAddress(addr: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(addr.length);
  for (let i = 0; i < addr.length; i++) {
    const bits = Math.max(0, Math.min(8, length - 8 * i));
    out[i] = addr[i]! & ((0xff00 >> bits) & 0xff);
  }
  return out;
}

/** "192.0.2.0/24", "2001:db8::/64"; a bare address is a host prefix. Host bits set is an error. */
export function parsePrefix(text: string, where = "prefix"): Prefix {
  const slash = text.indexOf("/");
  const addrText = slash < 0 ? text : text.slice(0, slash);
  const addr = parseAddress(addrText);
  if (!addr) throw new ConfigError(where, `"${text}" is not an IPv4 or IPv6 prefix`);
  const family: Family = addr.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  let length = max;
  if (slash >= 0) {
    const lenText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) {
      throw new ConfigError(where, `"${text}": prefix length must be 0-${max} for IPv${family}`);
    }
    length = Number(lenText);
  }
  const masked = maskAddress(addr, length);
  if (!masked.every((b, i) => b === addr[i])) {
    throw new ConfigError(where, `"${text}" has host bits set (did you mean ${formatPrefix({ family, addr: masked, length })}?)`);
  }
  return { family, addr: masked, length };
}

export function formatAddress(addr: Uint8Array): string {
  // Four interpolations, not Array.prototype.join over a typed array: this runs per access log line.
  if (addr.length === 4) return `${addr[0]}.${addr[1]}.${addr[2]}.${addr[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((addr[i]! << 8) | addr[i + 1]!);
  // RFC 5952: compress the longest run (length >= 2) of zero groups.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}

export function formatPrefix(p: Prefix): string {
  return `${formatAddress(p.addr)}/${p.length}`;
}

/** Does prefix `outer` contain address `addr` (same family)? */
export function prefixContains(outer: Prefix, addr: Uint8Array): boolean {
  if (outer.addr.length !== addr.length) return false;
  const masked = maskAddress(addr, outer.length);
  return masked.every((b, i) => b === outer.addr[i]);
}

/** Bun reports IPv4 peers of dual-stack sockets as ::ffff:a.b.c.d; give the plain form. */
export function unmapAddress(text: string): string {
  return text.startsWith("::ffff:") && text.includes(".") ? text.slice(7) : text;
}

/**
 * The address a connect() to `addr` really reaches: an IPv4-mapped IPv6
 * address is its IPv4 address, and the unspecified address (0.0.0.0, ::)
 * means this host's loopback (Linux ip_route_connect and tcp_v6_connect
 * rewrite it to 127.0.0.1 and ::1). For checks of what an origin reaches.
 */
export function dialledAddress(addr: Uint8Array): Uint8Array {
  const mapped = addr.length === 16 && addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff && addr[11] === 0xff;
  const v = mapped ? addr.slice(12) : addr;
  if (!v.every((b) => b === 0)) return v;
  return v.length === 4 ? Uint8Array.of(127, 0, 0, 1) : Uint8Array.from({ length: 16 }, (_, i) => (i === 15 ? 1 : 0));
}
