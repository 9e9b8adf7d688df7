import { ConfigError } from "../errors";

/**
 * One command-line flag: its name and whether it takes a value (`--name
 * VALUE` or `--name=VALUE`). The parsers tokenize by these, and --help, the
 * man page and the shell completions (src/cli/help.ts) are made from them.
 */
export interface FlagSpec {
  readonly name: string;
  /** A one-letter alias ("-h"); tokenized as `name`. */
  readonly short?: string;
  /** What it does, one paragraph (--help wraps it). */
  readonly help?: string;
  /** The values completion offers. */
  readonly choices?: readonly string[];
  /** Completion offers file or directory names for the value. */
  readonly complete?: "file" | "dir";
  /** The value's placeholder in messages (e.g. "PATH"); absent for a switch. */
  readonly value?: string;
  /** What a missing value is called in the message ("needs an ELF file ..."); default "a value (VALUE)". */
  readonly needs?: string;
}

export type Token = { readonly flag: string; readonly value?: string } | { readonly arg: string };

/**
 * Split argv into flags and positional arguments by `specs`, the one place
 * that knows `--flag VALUE` and `--flag=VALUE` (every command accepts both).
 * `where` prefixes messages ("reload"); unknown flags, a missing value and a
 * value given to a switch are ConfigErrors (exit 2).
 */
export function tokenize(argv: readonly string[], specs: readonly FlagSpec[], where = ""): Token[] {
  const byName = new Map<string, FlagSpec>();
  for (const s of specs) {
    byName.set(s.name, s);
    if (s.short) byName.set(s.short, s);
  }
  const at = (flag: string) => (where ? `${where} ${flag}` : flag);
  const out: Token[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("-") || arg === "-") {
      out.push({ arg });
      continue;
    }
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = byName.get(flag);
    if (!spec) throw new ConfigError(at(flag), "unknown option (see --help)");
    if (spec.value === undefined) {
      if (eq > 0) throw new ConfigError(at(flag), "takes no value");
      out.push({ flag: spec.name });
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || value === "") throw new ConfigError(at(flag), `needs ${spec.needs ?? `a value (${spec.value})`}`);
    out.push({ flag: spec.name, value });
  }
  return out;
}

/** `-h, --help` or `--name VALUE`: a flag as help lists it. */
export function flagLabel(f: FlagSpec): string {
  return `${f.short ? `${f.short}, ` : ""}${f.name}${f.value ? ` ${f.value}` : ""}`;
}

const LABEL = 24;

/** The flags as --help lists them: label, then the help wrapped at `width` columns. */
export function flagLines(specs: readonly FlagSpec[], width = 100): string[] {
  const out: string[] = [];
  for (const f of specs) {
    const label = `  ${flagLabel(f)}`;
    const words = (f.help ?? "").split(/\s+/).filter(Boolean);
    let line = label.length < LABEL ? label.padEnd(LABEL) : label;
    let fresh = label.length < LABEL;
    if (!fresh) {
      out.push(line);
      line = " ".repeat(LABEL);
      fresh = true;
    }
    for (const w of words) {
      if (!fresh && line.length + 1 + w.length > width) {
        out.push(line);
        line = " ".repeat(LABEL);
        fresh = true;
      }
      line += fresh ? w : ` ${w}`;
      fresh = false;
    }
    out.push(line.trimEnd());
  }
  return out;
}
