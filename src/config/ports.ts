import { ConfigError } from "../errors";

/** An inclusive port range, 1 <= lo <= hi <= 65535. */
export interface PortRange {
  readonly lo: number;
  readonly hi: number;
}

function parsePort(text: string, whole: string, where: string): number {
  if (!/^\d+$/.test(text)) throw new ConfigError(where, `"${whole}" is not a port or port range`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new ConfigError(where, `"${whole}": port ${text} is outside 1-65535`);
  return n;
}

/** "22,80,8000-8999" -> ranges, in the order given. */
export function parsePorts(text: string, where = "ports"): PortRange[] {
  const items = text.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) throw new ConfigError(where, `"${text}" has an empty item`);
  return items.map((item) => {
    const dash = item.indexOf("-");
    if (dash < 0) {
      const p = parsePort(item, item, where);
      return { lo: p, hi: p };
    }
    const lo = parsePort(item.slice(0, dash), item, where);
    const hi = parsePort(item.slice(dash + 1), item, where);
    if (lo > hi) throw new ConfigError(where, `"${item}": range start is above its end`);
    return { lo, hi };
  });
}

export function formatPorts(r: PortRange): string {
  return r.lo === r.hi ? `${r.lo}` : `${r.lo}-${r.hi}`;
}
