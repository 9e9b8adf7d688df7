// edgeproxy benchmark (issue 2): port coverage and TCP proxy CPU per request.
//   bun run bench            full: 3 runs × 5 s per peer and mode
//   bun bench/run.ts --quick 1 run × 3 s, for a first look
//   bun bench/run.ts --build rebuild ./edgeproxy first (default: only if missing)
//   bun bench/run.ts --udp   only the UDP scenario
//   bun bench/run.ts --http  only the HTTP (L7) scenario: edgeproxy --mode http, nginx, HAProxy mode http
// Run as root from the repo root. Installs missing tools with apt-get, then
// re-executes itself inside a private network+mount namespace: nothing here
// attaches BPF or listens in the host's own namespace.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, hostname, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { coverageScenario, type CoverageReport } from "./coverage";
import { httpPeers } from "./http";
import { loadScenario, type LoadOptions, type LoadReport } from "./load";
import { udpScenario, type UdpOptions } from "./udp";
import { renderReport, type Machine } from "./report";
import { ensureTools, inPrivateNetns, reexec, setupNetns } from "./netns";
import { killAll, must, run, which } from "./sys";

const ROOT = join(import.meta.dir, "..");
const EDGEPROXY = join(ROOT, "edgeproxy");
const args = process.argv.slice(2);
const quick = args.includes("--quick");
const udpOnly = args.includes("--udp");
const httpOnly = args.includes("--http");
const log = (s: string) => process.stderr.write(`bench: ${s}\n`);

for (const a of args) {
  if (!["--quick", "--build", "--udp", "--http"].includes(a) || (a === "--http" && args.includes("--udp"))) {
    console.error(`bench: unknown argument ${a}\nusage: bun bench/run.ts [--quick] [--build] [--udp | --http]`);
    process.exit(2);
  }
}

// Two cores: the proxy alone on one, wrk + origin on the other. On one core, everything shares it.
const cores = cpus().length;
const PROXY_CORE = 0;
const LOAD_CORE = cores > 1 ? 1 : 0;

/** Install what is missing, Debian package names. */
function ensurePeers(): void {
  const want: [string, string][] = [["nginx", "nginx"], ["haproxy", "haproxy"], ["wrk", "wrk"], ["ip", "iproute2"], ["unshare", "util-linux"], ["taskset", "util-linux"], ["getconf", "libc-bin"]];
  if (!existsSync(EDGEPROXY) || args.includes("--build")) want.push(["clang", "clang"]);
  const streamMissing = () => which("nginx") && /--with-stream=dynamic/.test(run(["nginx", "-V"]).out) && !existsSync("/usr/lib/nginx/modules/ngx_stream_module.so");
  ensureTools(want, log, !which("nginx") || streamMissing() ? ["libnginx-mod-stream"] : []);
}

async function outer(): Promise<number> {
  if (process.getuid?.() !== 0) {
    log("run as root (it creates a network namespace and attaches BPF inside it)");
    return 2;
  }
  ensurePeers();
  if (!existsSync(EDGEPROXY) || args.includes("--build")) {
    log("building ./edgeproxy");
    must(["bun", "run", "build"], 300_000);
  }
  return reexec(import.meta.path, args, LOAD_CORE, (quick ? 10 : 30) * 60_000, log);
}

function machine(): Machine {
  const first = (cmd: string[]) => run(cmd).out.trim().split("\n")[0] ?? "?";
  return {
    date: new Date().toISOString().slice(0, 10),
    host: hostname(),
    cpu: cpus()[0]?.model ?? "?",
    cores,
    kernel: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    nofile: run(["sh", "-c", "ulimit -Sn; ulimit -Hn"]).out.trim().replace("\n", " soft / ") + " hard",
    versions: {
      edgeproxy: first([EDGEPROXY, "--version"]),
      "edgeproxy source": `git ${first(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])} (binary built ${new Date(Bun.file(EDGEPROXY).lastModified).toISOString()})`,
      bun: Bun.version,
      nginx: first(["nginx", "-v"]),
      haproxy: first(["haproxy", "-v"]),
      wrk: first(["wrk", "-v"]),
    },
  };
}

async function inner(): Promise<number> {
  let netnsSetup: string[];
  try {
    netnsSetup = setupNetns();
  } catch (e) {
    log((e as Error).message);
    return 2;
  }

  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-bench-"));
  const cleanup = () => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      log(`${sig}: stopping`);
      cleanup();
      process.exit(130);
    });
  }
  try {
    const opts: LoadOptions = quick
      ? { runs: 1, seconds: 3, warmupSeconds: 1, connections: 50, proxyCore: PROXY_CORE, loadCore: LOAD_CORE }
      : { runs: 3, seconds: 5, warmupSeconds: 1, connections: 50, proxyCore: PROXY_CORE, loadCore: LOAD_CORE };
    const udpOpts: UdpOptions = { runs: opts.runs, seconds: opts.seconds, flows: 50, size: 64, proxyCore: PROXY_CORE, loadCore: LOAD_CORE };
    const m = machine();
    let cov: CoverageReport | undefined;
    let load: LoadReport | undefined;
    if (httpOnly) {
      log(`http proxy CPU (${opts.runs} × ${opts.seconds} s per peer and mode)`);
      const http = await loadScenario(dir, EDGEPROXY, opts, log, httpPeers(dir, EDGEPROXY));
      const md = renderReport({ m, quick, argv: `bun bench/run.ts ${args.join(" ")}`, http, opts, netnsSetup });
      const file = join(import.meta.dir, "results", `${m.date}-${m.host}-http${quick ? "-quick" : ""}.md`);
      mkdirSync(join(import.meta.dir, "results"), { recursive: true });
      writeFileSync(file, md);
      process.stdout.write(`${md}\n`);
      log(`wrote ${file}`);
      return 0;
    }
    if (!udpOnly) {
      log(`coverage (${quick ? 1 : 3} run(s) per edgeproxy case)`);
      cov = await coverageScenario(EDGEPROXY, quick ? 1 : 3, PROXY_CORE, log);
      log(`proxy CPU (${opts.runs} × ${opts.seconds} s per peer and mode)`);
      load = await loadScenario(dir, EDGEPROXY, opts, log);
    }
    log(`udp request/response (${udpOpts.runs} × ${udpOpts.seconds} s per peer, ${udpOpts.flows} flows)`);
    const udp = await udpScenario(dir, EDGEPROXY, udpOpts, log);
    const md = renderReport({ m, quick, argv: `bun bench/run.ts${args.length ? ` ${args.join(" ")}` : ""}`, cov, load, udp, opts, netnsSetup });
    const resultsDir = join(import.meta.dir, "results");
    mkdirSync(resultsDir, { recursive: true });
    // A quick look never overwrites the day's full results.
    const file = join(resultsDir, `${m.date}-${m.host}${udpOnly ? "-udp" : ""}${quick ? "-quick" : ""}.md`);
    writeFileSync(file, md);
    process.stdout.write(`${md}\n`);
    log(`wrote ${file}`);
    return 0;
  } finally {
    cleanup();
  }
}

process.exit(inPrivateNetns() ? await inner() : await outer());
