// The README's command lines, run (issue 17: "every README example works as
// written"). Each ```sh block runs in a fresh network namespace (TestNetns),
// its lines in order as an operator would type them, with `./edgeproxy` and
// `edgeproxy` the binary `bun run build` makes (copied into an empty
// directory that is the commands' working directory and first in PATH).
// Every line is in COMMANDS below, by its text: run and checked, or skipped
// with the reason it cannot run here (it installs packages, builds an image,
// needs docker). A line the table does not know fails the test, and so does
// an entry no line uses: a README change is a deliberate change here too.
// test/readme.test.ts parses the same lines and the toml blocks.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { builtBinary, DEFAULT_ENGINE } from "./helpers/edgeproxy";
import { exchange, text } from "./helpers/net";
import { TEST_V4, TestNetns, ip } from "./helpers/netns";
import { commandLines, readmeBlocks, type Block } from "./helpers/readme";

/** Each command that runs to completion gets this long. */
const COMMAND_TIMEOUT_MS = 15_000;
/** A long-running command (serve, an origin, the dashboard forwarder) this long to be ready. */
const READY_TIMEOUT_MS = 15_000;

let bin: { dir: string; binary: string };
const env = () => ({ ...process.env, PATH: `${bin.dir}:${process.env.PATH}` });

interface Done {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A command still running: its output so far. */
class Running {
  stdout = "";
  stderr = "";
  constructor(
    readonly command: string,
    readonly proc: Subprocess<"ignore", "pipe", "pipe">,
  ) {
    const drain = async (stream: ReadableStream<Uint8Array>, into: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this[into] += decoder.decode(chunk, { stream: true });
    };
    void drain(proc.stdout, "stdout");
    void drain(proc.stderr, "stderr");
  }

  /** Wait until `until` holds (polled), or fail with what the command printed. */
  async ready(until: () => boolean | Promise<boolean>, what: string): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await until())) {
      if (this.proc.exitCode !== null || Date.now() > deadline) {
        throw new Error(`${this.command}: not ${what} (${this.proc.exitCode === null ? "timed out" : `exit ${this.proc.exitCode}`}):\n${this.stderr}${this.stdout}`);
      }
      await Bun.sleep(50);
    }
  }

  /** Signal it and wait for its exit code (SIGKILL after 10 s). */
  async stop(signal: "SIGTERM" | "SIGINT" = "SIGTERM"): Promise<number> {
    if (this.proc.exitCode === null) this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    const code = await this.proc.exited;
    clearTimeout(timer);
    return code;
  }
}

/** What one block's lines share: the namespace, a scratch directory, what still runs. */
interface Ctx {
  readonly ns: TestNetns;
  readonly dir: string;
  readonly block: Block;
  /** Stopped at the block's end; a serve must exit 0 on SIGTERM. */
  readonly running: { r: Running; serve: boolean }[];
  serve?: Running;
}

/** Run a line to its end with bash, in the binary's directory. */
async function run(command: string): Promise<Done> {
  const proc = Bun.spawn(["bash", "-c", command], { cwd: bin.dir, env: env(), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), COMMAND_TIMEOUT_MS);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Start a simple command (no shell operators) that keeps running: bash execs it, so the pid is the command's. */
function start(ctx: Ctx, command: string, serve: boolean): Running {
  const proc = Bun.spawn(["bash", "-c", `exec ${command}`], { cwd: bin.dir, env: env(), stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const r = new Running(command, proc);
  ctx.running.push({ r, serve });
  return r;
}

/** A serve: started, ready ("edgeproxy: ready"), left running for the block's next lines. */
async function serve(ctx: Ctx, command: string): Promise<Running> {
  const r = start(ctx, command, true);
  await r.ready(() => r.stderr.includes("edgeproxy: ready"), "ready");
  ctx.serve = r;
  return r;
}

/** A serve that is only started: ready, then SIGTERM, exit 0. */
async function serveOnce(ctx: Ctx, command: string): Promise<void> {
  const r = await serve(ctx, command);
  ctx.running.pop();
  expect(await r.stop()).toBe(0);
}

async function ok(command: string, check: (d: Done) => void = () => {}): Promise<void> {
  const d = await run(command);
  if (d.code !== 0) throw new Error(`${command}: exit ${d.code}:\n${d.stderr}${d.stdout}`);
  check(d);
}

/** curl (in the namespace: Bun's fetch runs on a thread of its own, in the machine's). */
const curl = (url: string, ...args: string[]) => run(`curl -sS --max-time 5 ${args.map((a) => `'${a}'`).join(" ")} '${url}'`);

/**
 * A toml block as a file in the block's directory, with the machine's paths
 * it names made the test's: the access log under /var/log/edgeproxy goes
 * to the scratch directory, an admin socket under /run/edgeproxy to the
 * test's run directory (where status and top look, as on a machine).
 */
function configFile(ctx: Ctx, config: Block): string {
  const file = join(ctx.dir, "edgeproxy.toml");
  writeFileSync(
    file,
    config.text.replaceAll(/"\/var\/log\/edgeproxy\/([^"]+)"/g, (_, name) => `"${join(ctx.dir, name)}"`).replaceAll(/"\/run\/edgeproxy\/([^"]+)"/g, (_, name) => `"${join(ctx.ns.runDir, name)}"`),
  );
  return file;
}

/** The toml block just before this sh block: the config its section's commands talk about. */
function sectionConfig(ctx: Ctx): string {
  const config = readmeBlocks().filter((b) => b.lang === "toml" && b.line < ctx.block.line).at(-1);
  if (!config) throw new Error(`README.md:${ctx.block.line}: no toml block before it`);
  return configFile(ctx, config);
}

/** Bind a hosts file over /etc/hosts (in the test's private mount namespace only) while `fn` runs. */
async function withHosts(lines: string, fn: () => Promise<void>): Promise<void> {
  const hosts = join(mkdtempSync(join(tmpdir(), "ep-hosts-")), "hosts");
  writeFileSync(hosts, `127.0.0.1 localhost\n::1 localhost\n${lines}`);
  const mount = Bun.spawnSync(["mount", "--bind", hosts, "/etc/hosts"], { stderr: "pipe" });
  if (mount.exitCode !== 0) throw new Error(`mount --bind ${hosts} /etc/hosts: ${mount.stderr}`);
  try {
    await fn();
  } finally {
    Bun.spawnSync(["umount", "/etc/hosts"]);
    rmSync(hosts, { force: true });
  }
}

type Step = { readonly skip: string } | { readonly run: (ctx: Ctx, command: string) => Promise<void> };

const HELP_SERVE: Step = { run: (_, c) => ok(c, (d) => expect(d.stdout).toContain("--ports")) };
const DOCKER = "needs docker and the image build/Containerfile makes (build/test-image.sh checks the image)";

/** Every command line of the README's sh blocks (but the synopsis), by its text without comments. */
const COMMANDS: Record<string, Step> = {
  // The two first lines.
  "bash build/setup.sh && bun run build && ./edgeproxy": {
    // setup.sh installs packages (apt-get) and the build is this test's own (beforeAll); the ./edgeproxy it ends with runs.
    run: async (ctx) => {
      await serve(ctx, "./edgeproxy");
      // What the paragraph after it says: the responder on every port of 127.0.0.1, names the address and port; other bytes are echoed.
      const page = await curl("http://127.0.0.1:4242/");
      expect(page.code).toBe(0);
      expect(page.stdout).toContain("You reached <b>127.0.0.1:4242</b>");
      expect(text(await exchange("127.0.0.1", 7, "ping\n", 5000))).toBe("ping\n");
    },
  },
  "bash build/setup.sh && bun run test": { skip: "installs packages (apt-get) and runs the whole test suite, this test included" },

  // Quick start.
  "ip route add local 192.0.2.0/24 dev lo": {
    run: async (_, c) => {
      // A fresh machine has no such route; TestNetns made one: undone as the README says, then the line itself.
      ip("route", "del", "local", TEST_V4, "dev", "lo");
      await ok(c);
    },
  },
  "ncat -lke /bin/cat 127.0.0.1 9000 &": {
    run: async (ctx, c) => {
      const r = start(ctx, c.replace(/\s*&$/, ""), false);
      await r.ready(async () => (await exchange("127.0.0.1", 9000, "", 500)).kind !== "refused", "listening on 127.0.0.1:9000");
    },
  },
  "./edgeproxy --ports 8000-8999 --prefix 192.0.2.0/24 --origin 127.0.0.1:9000 --access-log -": { run: async (ctx, c) => void (await serve(ctx, c)) },
  "(echo hello; sleep 1) | ncat 192.0.2.7 8123": {
    run: async (ctx, c) => {
      await ok(c, (d) => expect(d.stdout).toBe("hello\n"));
      // "one access-log line", on the serve's stdout (--access-log -), when the connection ends.
      const s = ctx.serve!;
      await s.ready(() => s.stdout.includes("\n"), "logging the connection");
      const lines = s.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ event: "close", edge: "192.0.2.7:8123", origin: "127.0.0.1:9000", bytes_in: 6, bytes_out: 6 });
    },
  },
  "edgeproxy status": {
    run: (_, c) =>
      ok(c, (d) => {
        expect(d.stdout).toMatch(/\s192\.0\.2\.0\/24\s+8000-8999\n/);
        expect(d.stdout).toMatch(/127\.0\.0\.1:9000\s+healthy\s+1\/1/);
      }),
  },
  "edgeproxy top": {
    // Not a terminal here: one snapshot, as `top --once` prints.
    run: (_, c) =>
      ok(c, (d) => {
        expect(d.stdout).toContain("CONN/S");
        expect(d.stdout).toMatch(/^192\.0\.2\.7\s+1\s+12B$/m); // the busiest client: the one connection above, "hello\n" each way
      }),
  },
  "edgeproxy help serve": HELP_SERVE,

  // Operating it: the section's config runs first (sectionConfig).
  "edgeproxy status web --json": {
    run: (_, c) =>
      ok(c, (d) => {
        const s = JSON.parse(d.stdout) as { services: { name: string; mode: string; engine: string | null; bindings: { ports: string }[] }[] };
        expect(s.services.map((x) => [x.name, x.mode, x.engine, x.bindings.map((b) => b.ports)])).toEqual([["web", "tcp", DEFAULT_ENGINE, ["80"]]]);
      }),
  },
  "edgeproxy dashboard --port 9902": {
    run: async (ctx, c) => {
      const r = start(ctx, c, false);
      await r.ready(() => /#token=\w+/.test(r.stdout), "printing its URL");
      const [, base, token] = /(http:\/\/127\.0\.0\.1:9902\/)#token=(\w+)/.exec(r.stdout)!;
      const page = await curl(base!);
      expect(page.stdout).toContain("<title>edgeproxy</title>");
      const data = await curl(`${base}dashboard.json`, "-H", `Authorization: Bearer ${token}`);
      expect((JSON.parse(data.stdout) as { services: { name: string }[] }).services.map((s) => s.name)).toEqual(["web"]);
      // "Ctrl-C stops".
      ctx.running.pop();
      expect(await r.stop("SIGINT")).toBe(0);
    },
  },
  // MODE says which engine serves the tcp service (engine = "auto": the epoll engine for a plain relay).
  "edgeproxy top --once": { run: (_, c) => ok(c, (d) => expect(d.stdout).toMatch(new RegExp(`^web\\s+tcp/${DEFAULT_ENGINE}\\s+0\\s`, "m"))) },
  "edgeproxy completion bash > /etc/bash_completion.d/edgeproxy": {
    // Into the test's directory, not the machine's /etc; then bash reads it and completes edgeproxy with it.
    run: async (ctx, c) => {
      const file = join(ctx.dir, "edgeproxy.bash");
      await ok(c.replace("/etc/bash_completion.d/edgeproxy", file));
      await ok(`bash -n ${file}`);
      await ok(`source ${file} && complete -p edgeproxy`, (d) => expect(d.stdout).toContain(" edgeproxy"));
    },
  },

  // Running it: each serve line started (ready) and stopped (exit 0).
  "./edgeproxy --ports 1-65535 --prefix 192.0.2.0/24 --origin 127.0.0.1:9000": { run: serveOnce },
  "./edgeproxy --ports 22,80,8000-8999 --ports 443 --prefix 198.51.100.7/32 --prefix 2001:db8::/64 --origin origin.internal": {
    // origin.internal is a placeholder (the block says so): resolved here by a hosts file of the test's.
    run: (ctx, c) => withHosts("127.0.0.1 origin.internal\n", () => serveOnce(ctx, c)),
  },
  "./edgeproxy --mode udp --ports 53,443,27000-27100 --prefix 192.0.2.0/24 --origin 10.0.0.53 --proxy-protocol spp": { run: serveOnce },
  "./edgeproxy --mode http --ports 80,8080 --prefix 192.0.2.0/24 --origin 10.0.0.1:8080 --origin '10.0.0.2:8080 weight=3' --balance least-connections --health-interval 5s --health-path /healthz":
    { run: serveOnce },
  "./edgeproxy --ports 1000-1999 --prefix 192.0.2.0/24 --origin 10.0.0.9:3000-3999": { run: serveOnce },

  // The container.
  "docker build -f build/Containerfile -t edgeproxy .": { skip: "builds the container image (docker or buildah, and a network to pull the base image)" },
  "mkdir -p /sys/fs/bpf/edgeproxy && chown 10001:10001 /sys/fs/bpf/edgeproxy && chmod 0700 /sys/fs/bpf/edgeproxy": {
    // /sys/fs/bpf is the test's own bpffs here (TestNetns mounts it over the machine's, in the private mount namespace).
    run: async (_, c) => {
      await ok(c);
      const st = statSync("/sys/fs/bpf/edgeproxy");
      expect([st.uid, st.gid, st.mode & 0o777]).toEqual([10001, 10001, 0o700]);
    },
  },
  "docker run -d --name edgeproxy --network host --cap-drop ALL --cap-add BPF --cap-add NET_ADMIN --cap-add PERFMON --security-opt seccomp=unconfined -v /sys/fs/bpf:/sys/fs/bpf -v /etc/edgeproxy:/etc/edgeproxy:ro --stop-timeout 45 edgeproxy":
    { skip: DOCKER },
  "docker exec edgeproxy edgeproxy status": { skip: DOCKER },
};

/** Blocks whose lines need a serve first: the section's config example (by the block's first line). */
const NEEDS_SECTION_CONFIG = new Set(["edgeproxy help serve", "edgeproxy status web --json"]);

const blocks = readmeBlocks().filter((b) => b.lang === "sh" && b.marker !== "synopsis");

beforeAll(() => {
  bin = builtBinary();
});
afterAll(() => {
  if (bin) rmSync(bin.dir, { recursive: true, force: true });
});

describe("README command lines", () => {
  test("every line is known (run below, or skipped with a reason), and every entry is a line", () => {
    const all = blocks.flatMap(commandLines);
    expect(all.filter((l) => !(l.command in COMMANDS)).map((l) => `README.md:${l.line}: ${l.command}`)).toEqual([]);
    const used = new Set(all.map((l) => l.command));
    expect(Object.keys(COMMANDS).filter((k) => !used.has(k))).toEqual([]);
  });

  for (const block of blocks) {
    const lines = commandLines(block);
    test(`README.md:${block.line}: ${lines.length} lines, in a fresh namespace`, async () => {
      const ns = TestNetns.enter();
      const ctx: Ctx = { ns, dir: mkdtempSync(join(tmpdir(), "ep-readme-")), block, running: [] };
      try {
        if (NEEDS_SECTION_CONFIG.has(lines[0]?.command ?? "")) {
          // This section's commands talk to a serve of its config example (a service named web).
          const config = sectionConfig(ctx);
          await serve(ctx, `edgeproxy serve --config ${config}`);
        }
        for (const { line, command } of lines) {
          const step = COMMANDS[command];
          if (!step) throw new Error(`README.md:${line}: not in COMMANDS: ${command}`);
          if ("skip" in step) continue;
          try {
            await step.run(ctx, command);
          } catch (e) {
            throw new Error(`README.md:${line}: ${command}: ${(e as Error).message}`);
          }
        }
      } finally {
        const codes: string[] = [];
        for (const { r, serve } of ctx.running.reverse()) {
          const code = await r.stop();
          if (serve && code !== 0) codes.push(`${r.command}: exit ${code} on SIGTERM:\n${r.stderr}`);
        }
        rmSync(ctx.dir, { recursive: true, force: true });
        ns.leave();
        expect(codes).toEqual([]);
      }
    }, 60_000);
  }
});

describe("README config examples", () => {
  // test/readme.test.ts parses them; here each serves, as written but for the machine's paths (configFile).
  for (const block of readmeBlocks().filter((b) => b.lang === "toml" && b.marker !== "fragment")) {
    test(`README.md:${block.line} serves, and status lists its services`, async () => {
      const ns = TestNetns.enter();
      const ctx: Ctx = { ns, dir: mkdtempSync(join(tmpdir(), "ep-readme-")), block, running: [] };
      try {
        const r = await serve(ctx, `edgeproxy serve --config ${configFile(ctx, block)}`);
        const names = (Bun.TOML.parse(block.text) as { service: { name: string; mode?: string }[] }).service.map((s) => [s.name, s.mode ?? "tcp"]);
        await ok("edgeproxy status --json", (d) => {
          const s = JSON.parse(d.stdout) as { services: { name: string; mode: string | null }[] };
          expect(s.services.map((x) => [x.name, x.mode])).toEqual(names);
        });
        ctx.running.pop();
        expect(await r.stop()).toBe(0);
      } finally {
        for (const { r } of ctx.running) await r.stop();
        rmSync(ctx.dir, { recursive: true, force: true });
        ns.leave();
      }
    }, 30_000);
  }
});
