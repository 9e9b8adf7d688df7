// `bun run bench` flags. Pure, so bench/flags.test.ts can check every case.

/** Every scenario `--only` accepts, in the order a full run measures them. */
export const SCENARIO_NAMES = ["tcp", "http", "bulk", "udp", "coverage", "lookup", "idle", "workers", "slowloris", "accesslog", "tls-handshake", "h2"] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

export const USAGE =
  "usage: bun run bench [--quick] [--build] [--only tcp,http,bulk,udp,coverage,lookup,idle,workers,slowloris,accesslog,tls-handshake,h2] [--runs N] [--seconds N]\n" +
  "       (--udp and --http are kept as shorthands for --only udp and --only http)";

export interface Flags {
  quick: boolean;
  build: boolean;
  only: ScenarioName[];
  runs: number;
  seconds: number;
}

/**
 * Parse argv (without the script). Throws an Error whose message is one line
 * naming the bad argument. `--quick` means 1 run × 2 s unless --runs or
 * --seconds say otherwise; the default is 3 runs × 5 s.
 */
export function parseFlags(argv: readonly string[]): Flags {
  let quick = false;
  let build = false;
  let only: ScenarioName[] | undefined;
  let runs: number | undefined;
  let seconds: number | undefined;
  const number = (flag: string, v: string | undefined, max: number): number => {
    if (v === undefined || !/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max) throw new Error(`${flag} needs a whole number from 1 to ${max}, got ${v === undefined ? "nothing" : JSON.stringify(v)}`);
    return Number(v);
  };
  const addOnly = (names: ScenarioName[]) => {
    only = [...new Set([...(only ?? []), ...names])];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    // --flag=value and --flag value are both accepted.
    const eq = a.indexOf("=");
    const flag = a.startsWith("--") && eq > 0 ? a.slice(0, eq) : a;
    const value = () => (flag !== a ? a.slice(eq + 1) : argv[++i]);
    if (flag === "--quick" && flag === a) quick = true;
    else if (flag === "--build" && flag === a) build = true;
    else if ((flag === "--udp" || flag === "--http") && flag === a) addOnly([flag.slice(2) as ScenarioName]);
    else if (flag === "--runs") runs = number(flag, value(), 9); // run r answers on 192.0.2.<10·r + peer>
    else if (flag === "--seconds") seconds = number(flag, value(), 120);
    else if (flag === "--only") {
      const v = value();
      if (!v) throw new Error(`--only needs a list of scenarios (${SCENARIO_NAMES.join(",")})`);
      const names = v.split(",").map((s) => s.trim());
      const bad = names.filter((n) => !(SCENARIO_NAMES as readonly string[]).includes(n));
      if (bad.length) throw new Error(`--only: unknown scenario ${bad.map((b) => JSON.stringify(b)).join(", ")} (known: ${SCENARIO_NAMES.join(", ")})`);
      addOnly(names as ScenarioName[]);
    } else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  // Keep the run order fixed whatever order --only lists them in.
  const selected = only ? SCENARIO_NAMES.filter((n) => only!.includes(n)) : [...SCENARIO_NAMES];
  return { quick, build, only: selected, runs: runs ?? (quick ? 1 : 3), seconds: seconds ?? (quick ? 2 : 5) };
}
