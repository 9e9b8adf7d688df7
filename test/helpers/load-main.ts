// The load generator and its origin as processes of their own, so neither
// shares an event loop (or a core, under taskset) with the test or benchmark
// that drives them:
//   bun test/helpers/load-main.ts origin [--host 127.0.0.1] [--port 0]
//       prints "origin: listening on HOST:PORT"; on SIGTERM, its counts as one JSON line
//   bun test/helpers/load-main.ts load --mode keep-alive|close --hosts 192.0.2.1,2001:db8::1 --ports 7000-7099
//       [--connections 8] [--seconds 5] [--max-requests N] [--timeout-ms 2000] [--retry-ms 5]
//       prints "load: running" on stderr, then one JSON line (LoadResult) on stdout at the end;
//       SIGTERM/SIGINT end it early, with the result.
// The spawn helpers below start either and hand back its result.
import { parsePorts } from "../../src/config/ports";
import { DEFAULT_SPEC, REASONS, runLoad, startOrigin, type LoadResult, type LoadSpec, type Mode, type OriginStats } from "./load";

export const LOAD_MAIN = import.meta.path;

function flags(argv: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!;
    if (!k.startsWith("--") || argv[i + 1] === undefined) throw new Error(`load-main: bad argument ${k}`);
    out.set(k.slice(2), argv[i + 1]!);
  }
  return out;
}

function specFrom(f: Map<string, string>): LoadSpec {
  const mode = f.get("mode") as Mode;
  if (mode !== "keep-alive" && mode !== "close") throw new Error(`load-main: --mode must be keep-alive or close`);
  const num = (k: string, d: number) => (f.has(k) ? Number(f.get(k)) : d);
  return {
    mode,
    hosts: (f.get("hosts") ?? "127.0.0.1").split(","),
    ports: parsePorts(f.get("ports") ?? "").flatMap((r) => Array.from({ length: r.hi - r.lo + 1 }, (_, i) => r.lo + i)),
    connections: num("connections", DEFAULT_SPEC.connections),
    durationMs: num("seconds", DEFAULT_SPEC.durationMs / 1000) * 1000,
    maxRequests: num("max-requests", DEFAULT_SPEC.maxRequests),
    timeoutMs: num("timeout-ms", DEFAULT_SPEC.timeoutMs),
    retryDelayMs: num("retry-ms", DEFAULT_SPEC.retryDelayMs),
  };
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const f = flags(rest);
  if (cmd === "origin") {
    const { listener, stats } = startOrigin(f.get("host") ?? "127.0.0.1", Number(f.get("port") ?? 0));
    process.stdout.write(`origin: listening on ${listener.hostname}:${listener.port}\n`);
    await new Promise<void>((resolve) => {
      process.once("SIGTERM", resolve);
      process.once("SIGINT", resolve);
    });
    listener.stop(true);
    await Bun.write(Bun.stdout, `${JSON.stringify(stats)}\n`);
    return 0;
  }
  if (cmd === "load") {
    const spec = specFrom(f);
    const abort = new AbortController();
    process.once("SIGTERM", () => abort.abort());
    process.once("SIGINT", () => abort.abort());
    process.stderr.write("load: running\n");
    const r = await runLoad(spec, abort.signal);
    await Bun.write(Bun.stdout, `${JSON.stringify(r)}\n`);
    return 0;
  }
  process.stderr.write("usage: bun test/helpers/load-main.ts origin|load [flags] (see the head of this file)\n");
  return 2;
}

if (import.meta.main) {
  // Never outlive whoever started us (a test or benchmark that died): a
  // leftover origin or generator would hold its port or keep sending.
  const parent = process.ppid;
  setInterval(() => process.ppid !== parent && process.exit(3), 500).unref();
  process.exit(await main(process.argv.slice(2)));
}

/** Read a child's stdout as lines, in order. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += dec.decode(chunk, { stream: true });
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      yield buf.slice(0, i);
      buf = buf.slice(i + 1);
    }
  }
  if (buf) yield buf;
}

export interface LoadProcess {
  readonly proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  /** The generator's tallies, once it ends (by itself, or after stop()). */
  readonly result: Promise<LoadResult>;
  /** End the load early; its result still comes. */
  stop(): void;
}

/** Run the generator in a child process; `prefix` wraps the command (e.g. taskset). */
export function spawnLoad(spec: Pick<LoadSpec, "mode" | "hosts" | "ports"> & Partial<LoadSpec>, prefix: string[] = []): LoadProcess {
  const s = { ...DEFAULT_SPEC, ...spec };
  const cmd = [
    ...prefix, process.execPath, LOAD_MAIN, "load",
    "--mode", s.mode, "--hosts", s.hosts.join(","), "--ports", s.ports.join(","),
    "--connections", String(s.connections), "--seconds", String(s.durationMs / 1000), "--max-requests", String(s.maxRequests),
    "--timeout-ms", String(s.timeoutMs), "--retry-ms", String(s.retryDelayMs),
  ];
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const stderr = new Response(proc.stderr).text();
  const result = (async () => {
    let last = "";
    for await (const line of lines(proc.stdout)) if (line.trim()) last = line;
    const code = await proc.exited;
    if (code !== 0 || !last.startsWith("{")) throw new Error(`load generator exited ${code}: ${await stderr}`);
    return JSON.parse(last) as LoadResult;
  })();
  return { proc, result, stop: () => void (proc.exitCode === null && proc.kill("SIGTERM")) };
}

export interface OriginProcess {
  readonly proc: Bun.Subprocess<"ignore", "pipe", "inherit">;
  readonly port: number;
  /** SIGTERM it; resolves to what it served. */
  stop(): Promise<OriginStats>;
}

/** Run the origin in a child process; resolves once it listens. */
export async function spawnOrigin(host = "127.0.0.1", port = 0, prefix: string[] = []): Promise<OriginProcess> {
  const proc = Bun.spawn([...prefix, process.execPath, LOAD_MAIN, "origin", "--host", host, "--port", String(port)], { stdin: "ignore", stdout: "pipe", stderr: "inherit" });
  const it = lines(proc.stdout);
  const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
  const first = await it.next();
  clearTimeout(timer);
  const m = first.done ? null : /listening on .*:(\d+)$/.exec(first.value);
  if (!m) throw new Error(`origin did not start (exit ${await proc.exited})`);
  return {
    proc,
    port: Number(m[1]),
    async stop() {
      proc.kill("SIGTERM");
      let last = "";
      for await (const line of { [Symbol.asyncIterator]: () => it }) if (line.trim()) last = line;
      await proc.exited;
      return JSON.parse(last || "{}") as OriginStats;
    },
  };
}

/** One line per result: the counts and the reasons that occurred. */
export function describeLoad(r: LoadResult): string {
  const reasons = REASONS.filter((k) => r.failed[k]).map((k) => `${k} ${r.failed[k]}`);
  return `${r.mode}: ${r.ok} ok, ${r.failedTotal} failed${reasons.length ? ` (${reasons.join(", ")})` : ""}, p50 ${r.p50Ms?.toFixed(1) ?? "-"} ms, p99 ${r.p99Ms?.toFixed(1) ?? "-"} ms`;
}
