// UDP A/B measured AT THE SAME TIME: two private network namespaces, each
// with its own Bun echo origin, proxy and closed-loop load (bench/udp-load.ts,
// 50 flows), both proxies on core 0 and both loads and origins on core 1. On
// a machine shared with other jobs, run-to-run noise (±20% here) swamps a
// few-percent change when peers are measured one after the other
// (bench/udp.ts); measured side by side at once, both see the same noise and
// the ratio B/A is steady (an A/A control shows its spread).
//   bun bench/udp-pair.ts PAIRS SECONDS A B      (A, B: an edgeproxy binary, or "nginx")
// $UDP_LOAD_WARMUP_MS lengthens the load's uncounted warm-up (0.5 s).
// Prints, per pair and as medians, B/A of the proxy's CPU per exchange
// (utime+stime of its every process, /proc/PID/stat) and, for edgeproxy, of
// its data-plane thread alone (the thread named "Worker").
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { streamModuleLine } from "./peers";
import { CLK_TCK, cpuMicros, median, processTree } from "./sys";

const ORIGIN = "127.0.0.1:9053";
const FRONT = { host: "192.0.2.111", port: 8053 };
const here = import.meta.dir;

interface One {
  proxy: string;
  rps: number;
  /** Proxy CPU per exchange, µs: every process; the data-plane thread. */
  us: number;
  threadUs: number;
}

const sh = (c: string) => Bun.spawnSync(["sh", "-c", c]);

function threadTicks(pids: readonly number[], name: string): number {
  let t = 0;
  for (const pid of pids) {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {}
    for (const tid of tids) {
      try {
        if (readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim() !== name) continue;
        const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8").split(") ")[1]!.split(" ");
        t += Number(f[11]) + Number(f[12]);
      } catch {}
    }
  }
  return t;
}

/** Inside a fresh netns: origin, proxy, load; the result as one JSON line. */
async function one(proxy: string, seconds: number): Promise<One> {
  sh("ip link set lo up; ip route add local 192.0.2.0/24 dev lo; mount -t bpf bpf /sys/fs/bpf; mkdir -p /run/edgeproxy; mount -t tmpfs tmpfs /run/edgeproxy");
  const dir = mkdtempSync(join(tmpdir(), "udp-pair-"));
  const origin = Bun.spawn(["taskset", "-c", "1", process.execPath, join(here, "udp-echo.ts"), ...ORIGIN.split(":")], { stdout: "ignore", stderr: "ignore" });
  let cmd: string[];
  if (proxy === "nginx") {
    writeFileSync(
      join(dir, "nginx.conf"),
      `${streamModuleLine()}daemon off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;\nevents {}\nstream { server { listen ${FRONT.host}:${FRONT.port} udp; proxy_pass ${ORIGIN}; proxy_timeout 60s; } }\n`,
    );
    cmd = ["nginx", "-c", join(dir, "nginx.conf"), "-p", dir];
  } else cmd = [proxy, "--mode", "udp", "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", ORIGIN, "--workers", "1"];
  const proc = Bun.spawn(["taskset", "-c", "0", ...cmd], { stdout: "ignore", stderr: "ignore" });
  try {
    await Bun.sleep(1500);
    const pids = processTree(proc.pid);
    const load = Bun.spawn(["taskset", "-c", "1", process.execPath, join(here, "udp-load.ts"), FRONT.host, String(FRONT.port), "50", String(seconds)], { stdout: "pipe", stderr: "ignore" });
    const reader = load.stdout.getReader();
    let out = "";
    let p0 = NaN;
    let t0 = NaN;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += new TextDecoder().decode(value);
      if (Number.isNaN(p0) && out.includes("counting")) {
        p0 = cpuMicros(pids);
        t0 = threadTicks(pids, "Worker");
      }
      if (/^\{.*\}$/m.test(out)) break;
    }
    const p1 = cpuMicros(pids);
    const t1 = threadTicks(pids, "Worker");
    load.kill();
    const res = JSON.parse(/^\{.*\}$/m.exec(out)![0]) as { replies: number; rps: number };
    return { proxy, rps: res.rps, us: (p1 - p0) / res.replies, threadUs: (((t1 - t0) * 1e6) / CLK_TCK) / res.replies };
  } finally {
    proc.kill();
    await proc.exited;
    origin.kill();
  }
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--one") {
    console.log(JSON.stringify(await one(argv[1]!, Number(argv[2]))));
    return 0;
  }
  const [pairsText, secondsText, a, b] = argv;
  const pairs = Number(pairsText);
  const seconds = Number(secondsText);
  if (!a || !b || !(pairs >= 1 && pairs <= 50) || !(seconds >= 1 && seconds <= 60)) {
    console.error("usage: bun bench/udp-pair.ts PAIRS(1-50) SECONDS(1-60) A B   (A, B: an edgeproxy binary, or nginx; run as root)");
    return 2;
  }
  const process1 = (p: string) => Bun.spawn(["unshare", "--net", "--mount", process.execPath, import.meta.path, "--one", p, String(seconds)], { stdout: "pipe", stderr: "ignore" });
  const rUs: number[] = [];
  const rThread: number[] = [];
  for (let i = 0; i < pairs; i++) {
    const [pa, pb] = [process1(a), process1(b)];
    const [oa, ob] = (await Promise.all([new Response(pa.stdout).text(), new Response(pb.stdout).text()])).map((t) => JSON.parse(t.trim()) as One);
    const ru = ob!.us / oa!.us;
    const rt = ob!.threadUs / (oa!.threadUs || oa!.us);
    rUs.push(ru);
    rThread.push(rt);
    console.log(
      `pair ${i + 1}: A ${oa!.us.toFixed(2)} µs/exchange (thread ${oa!.threadUs.toFixed(2)}) ${oa!.rps.toFixed(0)}/s | B ${ob!.us.toFixed(2)} (thread ${ob!.threadUs.toFixed(2)}) ${ob!.rps.toFixed(0)}/s | B/A process ${ru.toFixed(3)}, thread ${rt.toFixed(3)}`,
    );
  }
  const lower = (rs: number[]) => rs.filter((r) => r < 1).length;
  console.log(`median B/A: process ${median(rUs).toFixed(3)} (B lower in ${lower(rUs)} of ${pairs}), data-plane thread ${median(rThread).toFixed(3)} (lower in ${lower(rThread)} of ${pairs}); thread vs nginx = edgeproxy's thread against nginx's whole process`);
  return 0;
}

process.exit(await main());
