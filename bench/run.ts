// edgeproxy benchmark (issue 2): port coverage and TCP proxy CPU per request.
//   bun run bench            full: 3 runs × 5 s per peer and mode
//   bun bench/run.ts --quick 1 run × 3 s, for a first look
//   bun bench/run.ts --build rebuild ./edgeproxy first (default: only if missing)
//   bun bench/run.ts --udp   only the UDP scenario
//   bun bench/run.ts --http  only the HTTP (L7) scenario: edgeproxy --mode http, nginx, HAProxy mode http
// Run as root from the repo root. Installs missing tools with apt-get, then
// re-executes itself inside a private network+mount namespace: nothing here
// attaches BPF or listens in the host's own namespace.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { cpus, hostname, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { coverageScenario, type CoverageReport } from "./coverage";
import { httpPeers } from "./http";
import { loadScenario, type LoadOptions, type LoadReport } from "./load";
import { udpScenario, type UdpOptions } from "./udp";
import { renderReport, type Machine } from "./report";
import { killAll, must, run, which } from "./sys";

const ROOT = join(import.meta.dir, "..");
const EDGEPROXY = join(ROOT, "edgeproxy");
const IN_NETNS = "EDGEPROXY_BENCH_NETNS";
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
function ensureTools(): void {
  const want: [string, string][] = [["nginx", "nginx"], ["haproxy", "haproxy"], ["wrk", "wrk"], ["ip", "iproute2"], ["unshare", "util-linux"], ["taskset", "util-linux"], ["getconf", "libc-bin"]];
  if (!existsSync(EDGEPROXY) || args.includes("--build")) want.push(["clang", "clang"]);
  const pkgs = new Set(want.filter(([cmd]) => !which(cmd)).map(([, pkg]) => pkg));
  if (run(["sh", "-c", "ldconfig -p | grep -q 'libbpf.so.1 '"]).code !== 0) pkgs.add("libbpf1");
  const streamMissing = () => which("nginx") && /--with-stream=dynamic/.test(run(["nginx", "-V"]).out) && !existsSync("/usr/lib/nginx/modules/ngx_stream_module.so");
  if (!which("nginx") || streamMissing()) pkgs.add("libnginx-mod-stream");
  if (!pkgs.size) return;
  log(`installing ${[...pkgs].join(" ")}`);
  must(["apt-get", "update"], 300_000);
  must(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends", ...pkgs], 600_000);
  // Debian starts the packaged services; the benchmark runs its own instances.
  for (const svc of ["nginx", "haproxy"]) if (pkgs.has(svc)) run(["systemctl", "disable", "--now", svc]);
}

async function outer(): Promise<number> {
  if (process.getuid?.() !== 0) {
    log("run as root (it creates a network namespace and attaches BPF inside it)");
    return 2;
  }
  ensureTools();
  if (!existsSync(EDGEPROXY) || args.includes("--build")) {
    log("building ./edgeproxy");
    must(["bun", "run", "build"], 300_000);
  }
  // unshare and taskset exec in place, so the child pid is the inner bench.
  const limitMs = (quick ? 10 : 30) * 60_000;
  const child = Bun.spawn(["unshare", "--net", "--mount", "--", "taskset", "-c", String(LOAD_CORE), process.execPath, import.meta.path, ...args], {
    cwd: ROOT,
    // The value is the host's netns, so the inner run can check it left it.
    env: { ...process.env, [IN_NETNS]: readlinkSync("/proc/self/ns/net") },
    stdio: ["inherit", "inherit", "inherit"],
  });
  const timer = setTimeout(() => {
    log(`no result after ${limitMs / 60_000} min: stopping`);
    child.kill("SIGTERM");
  }, limitMs);
  const code = await child.exited;
  clearTimeout(timer);
  return code;
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
  // Refuse to run unless this really is a fresh namespace.
  if (readlinkSync("/proc/self/ns/net") === process.env[IN_NETNS]) {
    log("not in a private network namespace; refusing to run");
    return 2;
  }
  // The port range: twice the default ephemeral ports, so a 5 s
  // one-connection-per-request run does not wrap onto its own TIME_WAIT
  // sockets; starting above 9000 so a client never picks the port it dials
  // (edgeproxy steers every port, and would be handed a self-connect).
  const netnsSetup = [
    "ip link set lo up",
    "ip route add local 192.0.2.0/24 dev lo",
    "echo 10000 65535 > /proc/sys/net/ipv4/ip_local_port_range",
    "mount -t bpf bpf /sys/fs/bpf",
  ];
  if (existsSync("/proc/sys/net/ipv6")) netnsSetup.splice(2, 0, "ip -6 route add local 2001:db8::/64 dev lo");
  for (const c of netnsSetup) must(["sh", "-c", c]);

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

process.exit(process.env[IN_NETNS] ? await inner() : await outer());
