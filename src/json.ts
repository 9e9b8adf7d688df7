/**
 * JSON.stringify's replacer for everything edgeproxy prints as JSON (admin
 * API bodies, `--json`): a kernel counter (a u64, read as a bigint) is a JSON
 * number while it fits in 2^53 (every JSON parser reads it exactly: RFC 8259
 * §6, IEEE 754 doubles), else its decimal string, so no parser rounds it.
 */
export function jsonReplacer(_key: string, v: unknown): unknown {
  if (typeof v === "bigint") return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
  if (v === Infinity) return "+Inf";
  return v;
}
