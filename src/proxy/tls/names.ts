/*
 * Server names to values, as TLS matches them: the one rule both the
 * certificate choice (tls/certstore.ts) and routing by SNI (sni/router.ts)
 * follow. An exact name beats a wildcard; a wildcard "*.b.example" stands for
 * exactly one whole left-most label (RFC 6125 §6.4.3): "x.b.example", not
 * "b.example" nor "y.x.b.example"; a "*" anywhere else ("f*.example",
 * "a.*.example") matches nothing. Names are compared in lower case without
 * a trailing dot (DNS names are case-insensitive, RFC 4343; RFC 6066 §3 sends
 * no trailing dot, some clients do anyway).
 */

export type NameMatch = "exact" | "wildcard";

export class ServerNames<T> {
  private readonly exact = new Map<string, T>();
  /** By the part after "*.". */
  private readonly wildcard = new Map<string, T>();

  /** Add `name` for `value`; the first value given a name keeps it. */
  add(name: string, value: T): void {
    const n = normalName(name);
    if (n.startsWith("*.")) {
      const parent = n.slice(2);
      if (!parent.includes("*") && !this.wildcard.has(parent)) this.wildcard.set(parent, value);
    } else if (!n.includes("*") && !this.exact.has(n)) this.exact.set(n, value);
  }

  /** The value for a client's server name and how it matched, or undefined. */
  match(name: string): { value: T; how: NameMatch } | undefined {
    const n = normalName(name);
    const e = this.exact.get(n);
    if (e !== undefined) return { value: e, how: "exact" };
    const dot = n.indexOf(".");
    const w = dot > 0 ? this.wildcard.get(n.slice(dot + 1)) : undefined;
    return w !== undefined ? { value: w, how: "wildcard" } : undefined;
  }
}

/** Lower case, no trailing dot. */
function normalName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith(".") ? n.slice(0, -1) : n;
}
