// The port-range peers of the coverage scenario: HAProxy's `bind ADDR:1-65535`
// and nginx with one `listen` per port (nginx 1.22 has no port ranges). Both
// open one socket per port, so at the 20,000 open-file cap they cannot start;
// what they print and their exit code are the result.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { nginxCommand, nginxMain, streamModuleLine } from "./peers";
import type { BenchContext } from "./scenario";
import { Child, listeningSocketsOf, processTree, sleep } from "./sys";

export interface RangePeer {
  readonly name: string;
  readonly command: string;
  /** Exit code, or undefined when it was still running after the wait (it started). */
  readonly code: number | null | undefined;
  readonly ms: number;
  /** Listening sockets it held when it did start. */
  readonly sockets: number;
  /** What it printed (first and last lines). */
  readonly output: string;
}

const ADDRESS = "192.0.2.1";

async function attempt(name: string, cmd: string[], shown: string, core: number): Promise<RangePeer> {
  const t0 = performance.now();
  const c = new Child(name, ["taskset", "-c", String(core), ...cmd]);
  const exited = await Promise.race([c.proc.exited.then(() => true), sleep(30_000).then(() => false)]);
  const ms = performance.now() - t0;
  let sockets = 0;
  if (!exited) {
    await sleep(500);
    sockets = listeningSocketsOf(processTree(c.pid));
  }
  await c.stop();
  const lines = c.text.trim().split("\n");
  const output = lines.length > 6 ? [...lines.slice(0, 3), `… (${lines.length - 6} more lines)`, ...lines.slice(-3)].join("\n") : lines.join("\n");
  return { name, command: shown, code: exited ? c.proc.exitCode : undefined, ms, sockets, output };
}

export async function haproxyRange(ctx: BenchContext): Promise<RangePeer> {
  const cfg = join(ctx.dir, "coverage-haproxy.cfg");
  writeFileSync(cfg, `global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten all\n  bind ${ADDRESS}:1-65535\n  server origin 127.0.0.1:9000\n`);
  return attempt("haproxy", ["haproxy", "-db", "-f", cfg], `haproxy -db -f coverage-haproxy.cfg  (bind ${ADDRESS}:1-65535)`, ctx.proxyCore);
}

export async function nginxRange(ctx: BenchContext): Promise<RangePeer> {
  const listens = Array.from({ length: 65535 }, (_, i) => `    listen ${ADDRESS}:${i + 1};`).join("\n");
  // worker_connections above the socket count, or nginx refuses before it opens any (its check, not the file cap).
  const main = nginxMain(ctx.dir, "coverage-nginx").replace(/worker_connections \d+;/, "worker_connections 70000;");
  writeFileSync(join(ctx.dir, "coverage-nginx.conf"), `${streamModuleLine()}${main}stream {\n  server {\n${listens}\n    proxy_pass 127.0.0.1:9000;\n  }\n}\n`);
  // nginx writes its errors to the -e log and stderr; read both.
  const r = await attempt("nginx", nginxCommand(ctx.dir, "coverage-nginx.conf"), `nginx -c coverage-nginx.conf  (one stream server, 65,535 lines \`listen ${ADDRESS}:N;\`)`, ctx.proxyCore);
  return r;
}
