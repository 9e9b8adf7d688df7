import { ConfigError } from "../errors";
import { checkCount, type CountBounds } from "./numbers";

/** A TOML table as Bun.TOML.parse returns it. */
export type Table = Record<string, unknown>;

/** True for a TOML table; dates and times come back as Temporal objects, which are not. */
export function isTable(v: unknown): v is Table {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** "a string", "an integer", ... for "expected X, got Y" messages. */
export function typeName(v: unknown): string {
  if (typeof v === "string") return "a string";
  if (typeof v === "number") return Number.isInteger(v) ? "an integer" : "a float";
  if (typeof v === "boolean") return "a boolean";
  if (Array.isArray(v)) return "an array";
  if (isTable(v)) return "a table";
  return "a date/time";
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * Typed, checked access to one TOML table. Every error names the table
 * (`where`) and the field, so a message pins down the line an operator must fix.
 */
export class Fields {
  private constructor(
    private readonly table: Table,
    readonly where: string,
    private readonly sep: string,
  ) {}

  /**
   * Check that `value` is a table holding only `allowed` keys. `sep` joins
   * `where` and a key in messages ("service \"web\": origin", "bind[1].ports");
   * `hints` explain keys that are known but misplaced.
   */
  static of(value: unknown, where: string, sep: ": " | ".", allowed: readonly string[], hints: Readonly<Record<string, string>> = {}): Fields {
    if (!isTable(value)) throw new ConfigError(where, `expected a table, got ${typeName(value)}`);
    for (const key of Object.keys(value)) {
      if (allowed.includes(key)) continue;
      const near = allowed.find((k) => distance(k, key.toLowerCase()) <= Math.min(2, k.length >> 1));
      const hint = hints[key] ?? (near ? `did you mean "${near}"?` : `known: ${allowed.join(", ")}`);
      throw new ConfigError(where, `unknown field "${key}" (${hint})`);
    }
    return new Fields(value, where, sep);
  }

  /** Where-text for one field of this table. */
  at(key: string): string {
    return `${this.where}${this.sep}${key}`;
  }

  /** The raw value, for a nested table checked with Fields.of. */
  value(key: string): unknown {
    return this.table[key];
  }

  has(key: string): boolean {
    return this.table[key] !== undefined;
  }

  missing(key: string, hint = ""): ConfigError {
    return new ConfigError(this.where, `missing required field "${key}"${hint && ` (${hint})`}`);
  }

  private wrong(key: string, expected: string): ConfigError {
    return new ConfigError(this.at(key), `expected ${expected}, got ${typeName(this.table[key])}`);
  }

  string(key: string): string | undefined {
    const v = this.table[key];
    if (v === undefined || typeof v === "string") return v;
    throw this.wrong(key, "a string");
  }

  boolean(key: string): boolean | undefined {
    const v = this.table[key];
    if (v === undefined || typeof v === "boolean") return v;
    throw this.wrong(key, "true or false");
  }

  /** A count within `bounds` (default 1 to LIMITS.maxCount; see numbers.ts). */
  positiveInteger(key: string, bounds?: CountBounds): number | undefined {
    const v = this.table[key];
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v)) throw this.wrong(key, "a positive integer");
    return checkCount(v, this.at(key), bounds);
  }

  /** A string or integer kept as text, for values (durations) whose parser takes a bare number. */
  text(key: string): string | undefined {
    const v = this.table[key];
    if (v === undefined || typeof v === "string") return v;
    if (typeof v === "number" && Number.isFinite(v)) return String(v);
    throw this.wrong(key, "a string");
  }

  /**
   * A list given as an array of strings (or integers, with `integers`) or as
   * one such value, item by item as written; callers split items at commas, so
   * "80,443" and ["80", "443"] mean the same.
   */
  list(key: string, integers = false): string[] | undefined {
    const v = this.table[key];
    if (v === undefined) return undefined;
    const expected = integers ? "an array of strings or integers, or a string" : "an array of strings, or a string";
    const single = typeof v === "string" || (integers && typeof v === "number" && Number.isInteger(v));
    const items = single ? [v] : Array.isArray(v) ? v : undefined;
    if (!items) throw this.wrong(key, expected);
    return items.flatMap((item, i) => {
      if (typeof item === "string") return [item];
      if (integers && typeof item === "number" && Number.isInteger(item)) return [String(item)];
      throw new ConfigError(this.at(key), `item ${i + 1} is ${typeName(item)}; expected ${integers ? "a string or an integer" : "a string"}`);
    });
  }

  /** An array of tables ([[key]]); each element is checked by the caller with Fields.of. */
  tables(key: string, header: string): unknown[] | undefined {
    const v = this.table[key];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || !v.every(isTable)) {
      throw new ConfigError(this.at(key), `expected an array of tables (${header}), got ${typeName(v)}`);
    }
    return v;
  }
}
