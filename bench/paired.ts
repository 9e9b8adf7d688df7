// Two variants of a proxy at the same time (bench/pair.sh): each in its own
// netns, both proxies on the proxy core, both loads and origins on the load
// core, so the shared machine's noise hits both alike. What one variant costs
// against the other is then read per pair (B/A of process CPU per request),
// steady to a few percent where consecutive runs of one variant differ by
// ±15% on this machine.
import { join } from "node:path";

export interface PairedRun {
  /** Process CPU µs per request of A and B, and B/A, per pair. */
  readonly a: number[];
  readonly b: number[];
  readonly ratios: number[];
  /** Requests A's and B's wrk got answered, per pair (a fixed rate must give both about as many). */
  readonly aRequests: number[];
  readonly bRequests: number[];
  /** pair.sh's output when it printed no pair (for the anomaly). */
  readonly failure?: string;
}

/** One pair line of pair.sh: "pair 1: A 19.30 µs/req (126972 req), B 24.51 µs/req (102798 req), B/A 1.270". */
const PAIR_LINE = /^pair \d+: A ([\d.]+) µs\/req \((\d+) req\), B ([\d.]+) µs\/req \((\d+) req\), B\/A ([\d.]+)$/;

/** Parse pair.sh's output: the pairs it printed (lines it could not measure are left out). */
export function parsePairs(out: string): Omit<PairedRun, "failure"> {
  const got = { a: [] as number[], b: [] as number[], ratios: [] as number[], aRequests: [] as number[], bRequests: [] as number[] };
  for (const line of out.split("\n")) {
    const m = PAIR_LINE.exec(line.trim());
    if (!m) continue;
    got.a.push(Number(m[1]));
    got.aRequests.push(Number(m[2]));
    got.b.push(Number(m[3]));
    got.bRequests.push(Number(m[4]));
    got.ratios.push(Number(m[5]));
  }
  return got;
}

/**
 * `pairs` pairs of `binary` in `mode` (tcp|http) under `load` (keep-alive|close): A with `both`, B with `both` and `bArgs`.
 * `binary` "nginx": nginx is the proxy (pair.sh), `--access-log PATH` in `bArgs` its own log. `delayMs`: each wrk
 * connection waits that long before each request (pair.sh's DELAY_MS), a fixed request rate instead of the most
 * each variant takes. Bounded: pair.sh's runs are timed (WARM + SECS each), and the whole call is killed after a generous deadline.
 */
export async function pairedRun(binary: string, mode: "tcp" | "http", load: "keep-alive" | "close", pairs: number, bArgs: string[], cores: { proxy: number; load: number }, seconds = 5, delayMs?: number): Promise<PairedRun> {
  const script = join(import.meta.dir, "pair.sh");
  const proc = Bun.spawn([script, binary, mode, load, String(pairs), ...bArgs], {
    env: { ...process.env, PROXY_CORE: String(cores.proxy), LOAD_CORE: String(cores.load), WARM: String(seconds), SECS: String(seconds), ...(delayMs !== undefined ? { DELAY_MS: String(delayMs) } : {}) },
    stdout: "pipe",
    stderr: "pipe",
  });
  const deadline = setTimeout(() => proc.kill(), pairs * (2 * seconds + 20) * 1000);
  const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  clearTimeout(deadline);
  const got = parsePairs(out);
  return got.ratios.length ? got : { ...got, failure: `${out}${err}`.trim().split("\n").slice(-3).join(" | ") || `exit ${proc.exitCode}` };
}
