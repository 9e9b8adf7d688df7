// Upgrades under load (issue 6): do process upgrades (`edgeproxy upgrade`, or
// SIGUSR2) and BPF program upgrades (`edgeproxy upgrade-program`) lose requests?
//   bun bench/upgrade.ts [--seconds 30] [--upgrades 3] [--program-upgrades 1] [--workers N]
//                        [--binary ./edgeproxy] [--upgrade-to PATH] [--via command|signal]
//                        [--connections 8] [--drain-timeout D]
// Run as root from the repo root. It re-executes itself in a private network
// + mount namespace (bench/netns.ts), starts the test origin and edgeproxy
// (ports 7000-7099 on 192.0.2.0/24 and 2001:db8::/64), runs the load
// generator of test/helpers/load.ts in both modes at once for the duration,
// and triggers the upgrades at even intervals. It prints per mode the
// requests that succeeded and the failures by reason, then every upgrade
// with its timings; it exits 1 if any request or upgrade failed.
// A command this binary does not have yet is reported and skipped.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { table } from "../src/cli/table";
import { now, REASONS, type LoadResult } from "../test/helpers/load";
import { describeLoad, spawnLoad, spawnOrigin, type LoadProcess } from "../test/helpers/load-main";
import { becomeSubreaper, benchMain, cores, ensureTools, features, multiarch, ppid, processesOf, reexec, ROOT, setupNetns, stopPids, type Features } from "./netns";
import { Child, must, run } from "./sys";

const log = (s: string) => process.stderr.write(`upgrade: ${s}\n`);
const USAGE = "usage: bun bench/upgrade.ts [--seconds 30] [--upgrades 3] [--program-upgrades 1] [--workers N] [--binary ./edgeproxy] [--upgrade-to PATH] [--via command|signal] [--connections 8] [--drain-timeout D]";

interface Options {
  seconds: number;
  upgrades: number;
  programUpgrades: number;
  workers: number | undefined;
  binary: string;
  upgradeTo: string | undefined;
  via: "command" | "signal";
  connections: number;
  drainTimeout: string | undefined;
}

function parse(argv: string[]): Options {
  const o: Options = { seconds: 30, upgrades: 3, programUpgrades: 1, workers: undefined, binary: join(ROOT, "edgeproxy"), upgradeTo: undefined, via: "command", connections: 8, drainTimeout: undefined };
  for (let i = 0; i < argv.length; i++) {
    const [flag, v] = [argv[i]!, argv[i + 1]];
    const num = () => {
      if (!v || !/^\d+$/.test(v)) throw new Error(`${flag} needs a whole number`);
      i++;
      return Number(v);
    };
    const str = () => {
      if (!v) throw new Error(`${flag} needs a value`);
      i++;
      return v;
    };
    if (flag === "--seconds") o.seconds = num();
    else if (flag === "--upgrades") o.upgrades = num();
    else if (flag === "--program-upgrades") o.programUpgrades = num();
    else if (flag === "--workers") o.workers = num();
    else if (flag === "--connections") o.connections = Math.max(1, num());
    else if (flag === "--binary") o.binary = resolve(str());
    else if (flag === "--upgrade-to") o.upgradeTo = resolve(str());
    else if (flag === "--drain-timeout") o.drainTimeout = str();
    else if (flag === "--via" && (v === "command" || v === "signal")) o.via = str() as Options["via"];
    else throw new Error(`unknown argument ${flag}`);
  }
  return o;
}

// The edgeproxy tree on core 0, the load generators and the origin on the other (one core: all share it).
const PROXY_CORE = 0;
const LOAD_CORE = cores > 1 ? 1 : 0;
const HOSTS = ["192.0.2.1", "2001:db8::1"];
const PORTS = Array.from({ length: 100 }, (_, i) => 7000 + i);

interface Event {
  kind: "upgrade" | "upgrade-program";
  at: number; // ms after the load started
  ms?: number; // how long the command took
  ok?: boolean;
  skipped?: string;
  detail: string[];
  /** Resolves once the processes it replaced have exited (process upgrades). */
  drained?: Promise<void>;
}

/** A command run without blocking the event loop, bounded; its exit code and output. */
async function runAsync(cmd: string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out: (out + err).trim() };
}

/** bpf/dispatcher.bpf.c compiled as build/build.ts does, with extra -D flags. */
function compileObject(dir: string, name: string, defines: string[]): string {
  const out = join(dir, `${name}.bpf.o`);
  must(["clang", "-target", "bpf", "-O2", "-g", "-Wall", "-Werror", `-I/usr/include/${multiarch()}`, ...defines.map((d) => `-D${d}`), "-c", join(ROOT, "bpf/dispatcher.bpf.c"), "-o", out]);
  return out;
}

/** The upgrades in time order, at even intervals; program upgrades spread among the process ones. */
export function schedule(o: Pick<Options, "seconds" | "upgrades" | "programUpgrades">): Event[] {
  const n = o.upgrades + o.programUpgrades;
  return Array.from({ length: n }, (_, i) => ({
    kind: Math.floor(((i + 1) * o.programUpgrades) / n) > Math.floor((i * o.programUpgrades) / n) ? ("upgrade-program" as const) : ("upgrade" as const),
    at: Math.round(((i + 1) * o.seconds * 1000) / (n + 1)),
    detail: [],
  }));
}

async function inner(o: Options): Promise<number> {
  const netnsSetup = setupNetns();
  becomeSubreaper();
  const f: Features = features(o.binary, true);
  const exes = [o.binary, ...(o.upgradeTo ? [o.upgradeTo] : [])];
  if (o.workers !== undefined && !f.workers) log(`this edgeproxy has no --workers (issue 6 not landed): running it as one process`);
  if (o.upgrades && !f.upgrade) log(`this edgeproxy has no 'upgrade' command (issue 6 not landed): the ${o.upgrades} process upgrade(s) are skipped`);
  if (o.programUpgrades && !f.upgradeProgram) log(`this edgeproxy has no 'upgrade-program' command: the ${o.programUpgrades} program upgrade(s) are skipped`);
  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-upgrade-"));
  const admin = join(dir, "admin.sock");
  const taskset = (core: number | string) => ["taskset", "-c", String(core)];
  let origin: Awaited<ReturnType<typeof spawnOrigin>> | undefined;
  const loads: LoadProcess[] = [];
  const stopAll = async () => {
    for (const l of loads) l.stop();
    await stopPids(processesOf(exes));
    if (origin) await origin.stop().catch(() => origin?.proc.kill("SIGKILL"));
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => void stopAll().then(() => process.exit(130)));
  try {
    // Program upgrades alternate between a variant (other instructions, so another tag) and the plain object.
    const objects = o.programUpgrades && f.upgradeProgram ? [compileObject(dir, "variant", ["EP_TEST_VARIANT"]), compileObject(dir, "plain", [])] : [];
    origin = await spawnOrigin("127.0.0.1", 0, taskset(LOAD_CORE));
    const epArgs = [
      "--ports", "7000-7099", "--prefix", "192.0.2.0/24", "--prefix", "2001:db8::/64", "--origin", `127.0.0.1:${origin.port}`, "--admin", admin,
      ...(o.workers !== undefined && f.workers ? ["--workers", String(o.workers)] : []),
      ...(o.drainTimeout && f.drainTimeout ? ["--drain-timeout", o.drainTimeout] : []),
    ];
    const ep = new Child("edgeproxy", [...taskset(PROXY_CORE), o.binary, ...epArgs]);
    await ep.waitFor(/edgeproxy: ready/, 15_000);
    // Control commands run beside the proxy, not on the load core: a Bun binary's startup would stall the load generators.
    const control = [...taskset(PROXY_CORE), o.binary];
    const tag = () => (JSON.parse(run([...control, "status", "--json"]).out || "{}") as { tag?: string }).tag ?? "?";

    const events = schedule(o);
    const t0 = now();
    const spec = { hosts: HOSTS, ports: PORTS, connections: o.connections, durationMs: o.seconds * 1000, maxRequests: 50_000_000 };
    loads.push(spawnLoad({ ...spec, mode: "keep-alive" }, taskset(LOAD_CORE)), spawnLoad({ ...spec, mode: "close" }, taskset(LOAD_CORE)));
    log(`load: keep-alive and close, ${o.connections} connections each, for ${o.seconds} s; ${events.length} upgrade(s) at ${events.map((e) => `${(e.at / 1000).toFixed(1)} s`).join(", ") || "-"}`);
    let programs = 0;
    for (const e of events) {
      await Bun.sleep(Math.max(0, t0 + e.at - now()));
      const start = now();
      if (e.kind === "upgrade-program") {
        if (!f.upgradeProgram) e.skipped = "this binary has no upgrade-program";
        else {
          const obj = objects[programs++ % objects.length]!;
          const before = tag();
          const r = await runAsync([...control, "upgrade-program", "--object", obj], 60_000);
          e.ms = now() - start;
          e.ok = r.code === 0;
          e.detail.push(`${obj.endsWith("variant.bpf.o") ? "-DEP_TEST_VARIANT" : "plain"} object, tag ${before} -> ${tag()}`, ...(e.ok ? [] : [`exit ${r.code}: ${r.out}`]));
        }
      } else if (!f.upgrade) e.skipped = "this binary has no upgrade command";
      else {
        const before = processesOf(exes);
        if (o.via === "signal") {
          // SIGUSR2 to the serving processes that no other edgeproxy started (the supervisor, or the lone process).
          const mains = before.filter((p) => !before.includes(ppid(p)));
          for (const p of mains) process.kill(p, "SIGUSR2");
          e.detail.push(`SIGUSR2 to pid ${mains.join(", ")}`);
          e.ok = true;
        } else {
          const r = await runAsync([...control, "upgrade", "--admin", admin, ...(o.upgradeTo ? ["--binary", o.upgradeTo] : [])], 60_000);
          e.ok = r.code === 0;
          if (!e.ok) e.detail.push(`exit ${r.code}: ${r.out}`);
        }
        e.ms = now() - start;
        if (e.ok) e.drained = watchDrain(e, before, exes, start, drainMs(o.drainTimeout) + 15_000);
      }
      log(`t=${((start - t0) / 1000).toFixed(1)} s ${e.kind}: ${e.skipped ?? (e.ok ? "ok" : "FAILED")} (${e.ms?.toFixed(0) ?? "-"} ms) ${e.detail.join("; ")}`);
    }
    const results: LoadResult[] = await Promise.all(loads.map((l) => l.result));
    // Old processes drain what they still hold, at most --drain-timeout (30 s by default).
    await Promise.all(events.map((e) => e.drained));
    report(o, f, results, events, t0, netnsSetup, [o.binary, ...epArgs]);
    const failedEvents = events.filter((e) => e.ok === false).length;
    return results.some((r) => r.failedTotal > 0) || failedEvents ? 1 : 0;
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** --drain-timeout in ms ("500ms", "30s", "2m"; edgeproxy's default, 30 s, when not given). */
const drainMs = (d: string | undefined): number => {
  const m = /^(\d+)(ms|s|m)?$/.exec(d ?? "30s");
  return m ? Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[(m[2] ?? "s") as "ms" | "s" | "m"] : 30_000;
};

/** Record the processes an upgrade started, and when the ones it replaced exited (bounded: the drain timeout plus slack). */
async function watchDrain(e: Event, before: number[], exes: string[], start: number, boundMs: number): Promise<void> {
  const deadline = start + boundMs;
  const secs = () => ((now() - start) / 1000).toFixed(1);
  // The successor is the set that appeared first (the command returned once it was ready);
  // processes of later upgrades must not be counted as this one's.
  let fresh: number[] = [];
  let appeared = "";
  while (now() < deadline) {
    const live = processesOf(exes);
    if (!fresh.length) {
      fresh = live.filter((p) => !before.includes(p));
      if (fresh.length) appeared = secs();
    }
    if (fresh.length && !before.some((p) => live.includes(p))) {
      e.detail.push(`pid ${before.join(",")} -> ${fresh.join(",")}: new after ${appeared} s, the old exited after ${secs()} s`);
      return;
    }
    await Bun.sleep(100);
  }
  const still = before.filter((p) => processesOf(exes).includes(p));
  e.detail.push(`pid ${before.join(",")} -> ${fresh.join(",") || "(none new)"}${appeared ? ` (after ${appeared} s)` : ""}; after ${boundMs / 1000} s the old ${still.join(",") || "(none)"} still ran`);
}

function report(o: Options, f: Features, results: LoadResult[], events: Event[], t0: number, netnsSetup: string[], epCommand: string[]): void {
  const t = (ms: number | null) => (ms === null ? "-" : `${((ms - t0) / 1000).toFixed(2)} s`);
  const out: string[] = [
    "",
    `edgeproxy upgrades under load: ${o.seconds} s, ${o.connections} connections per mode, ports 7000-7099 on ${HOSTS.join(" and ")}`,
    `edgeproxy: ${epCommand.join(" ")}  (${run([o.binary, "--version"]).out.trim()})`,
    `features: --workers ${f.workers ? "yes" : "no"}, upgrade ${f.upgrade ? "yes" : "no"}, upgrade-program ${f.upgradeProgram ? "yes" : "no"}, --drain-timeout ${f.drainTimeout ? "yes" : "no"}`,
    `pinned: edgeproxy and the control commands on core ${PROXY_CORE}; load generators and origin on core ${LOAD_CORE} (${cores} cores); netns: ${netnsSetup.join("; ")}`,
    "",
    ...table(
      ["MODE", "OK", "FAILED", ...REASONS.map((r) => r.toUpperCase()), "RECONNECTS", "P50 MS", "P99 MS", "MAX MS"],
      results.map((r) => [r.mode, String(r.ok), String(r.failedTotal), ...REASONS.map((k) => String(r.failed[k])), String(r.reconnects), r.p50Ms?.toFixed(2) ?? "-", r.p99Ms?.toFixed(2) ?? "-", r.maxMs.toFixed(1)]),
    ),
    "",
    ...(events.length
      ? table(["AT", "EVENT", "RESULT", "TOOK", "DETAIL"], events.map((e) => [`${(e.at / 1000).toFixed(1)} s`, e.kind, e.skipped ? `skipped: ${e.skipped}` : e.ok ? "ok" : "FAILED", e.ms === undefined ? "-" : `${e.ms.toFixed(0)} ms`, e.detail.join("; ")]))
      : ["no upgrades scheduled"]),
  ];
  for (const r of results) {
    if (!r.outages.length) continue;
    out.push("", `${r.mode}: failures (from -> first success after, count):`, ...r.outages.slice(0, 10).map((x) => `  ${t(x.from)} -> ${t(x.to)}  ${x.failures}`), ...r.samples.slice(0, 5).map((s) => `  ${s}`));
  }
  out.push("", ...results.map((r) => describeLoad(r)), "");
  process.stdout.write(out.join("\n"));
}

async function outer(o: Options, argv: string[]): Promise<number> {
  ensureTools([["clang", "clang"], ["ip", "iproute2"], ["unshare", "util-linux"], ["taskset", "util-linux"]], log);
  if (!existsSync(o.binary)) {
    if (o.binary !== join(ROOT, "edgeproxy")) return log(`${o.binary} does not exist`), 2;
    log("building ./edgeproxy");
    must(["bun", "run", "build"], 300_000);
  }
  return reexec(import.meta.path, argv, LOAD_CORE, (o.seconds + 120) * 1000, log);
}

if (import.meta.main) await benchMain("upgrade", USAGE, parse, outer, inner);
