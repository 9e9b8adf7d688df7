// The contract between `bun run bench` (bench/run.ts) and each scenario module.
// A scenario measures edgeproxy and its peers side by side in one run and hands
// back its report section, its rows for the opening ratio table, and its plots.

/** What every scenario gets from the runner (already inside the benchmark's own netns). */
export interface BenchContext {
  /** Scratch directory for configs and logs; removed by the runner. */
  readonly dir: string;
  /** The compiled edgeproxy binary. */
  readonly edgeproxy: string;
  readonly quick: boolean;
  /** Repetitions per measurement; the report quotes the median. */
  readonly runs: number;
  /** Length of one timed run. */
  readonly seconds: number;
  /** Core for the proxy under test (each peer in turn, alone on it). */
  readonly proxyCore: number;
  /** Core for load generators and origins. */
  readonly loadCore: number;
  log(line: string): void;
}

/** One line of the table the report opens with: edgeproxy against the best peer. */
export interface RatioRow {
  /** e.g. "TCP keep-alive". */
  readonly scenario: string;
  /** e.g. "CPU µs/request on the proxy core". */
  readonly metric: string;
  readonly unit: string;
  readonly better: "lower" | "higher";
  readonly edgeproxy: number;
  /** The best peer for this metric (NaN value when no peer could be measured). */
  readonly best: { readonly peer: string; readonly value: number };
  /** The target as text, e.g. "≤ 0.9×", with whether it holds. */
  readonly target?: { readonly text: string; readonly met: boolean };
}

/** A chart the runner renders to `<results>/<date>-<host>-<name>.png`. */
export interface PlotSpec {
  /** File-name part, e.g. "tcp-cpu". */
  readonly name: string;
  readonly title: string;
  readonly ylabel: string;
  /** Bars grouped by x label ("keep-alive", "close"), one series per peer; or points when `kind` is "line". */
  readonly kind: "bars" | "line";
  readonly series: readonly { readonly label: string; readonly points: readonly { readonly x: string; readonly y: number }[] }[];
  readonly logY?: boolean;
}

export interface ScenarioResult {
  /** Heading of its report section. */
  readonly title: string;
  /** Markdown body: method (how each number was made), tables, failures recorded as text. */
  readonly markdown: string;
  readonly ratios: readonly RatioRow[];
  readonly plots: readonly PlotSpec[];
  /** Anything unexpected (a peer that failed to start, errors), shown under Anomalies. */
  readonly anomalies: readonly string[];
}

export type Scenario = (ctx: BenchContext) => Promise<ScenarioResult>;
