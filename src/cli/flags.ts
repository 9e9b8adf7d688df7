import { ConfigError } from "../errors";

/** One command-line flag: its name and whether it takes a value (`--name VALUE` or `--name=VALUE`). */
export interface FlagSpec {
  readonly name: string;
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
  const byName = new Map(specs.map((s) => [s.name, s]));
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
      out.push({ flag });
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || value === "") throw new ConfigError(at(flag), `needs ${spec.needs ?? `a value (${spec.value})`}`);
    out.push({ flag, value });
  }
  return out;
}
