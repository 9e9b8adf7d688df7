// The processes under test: the nginx HTTP origin and the TCP proxies that
// front it (edgeproxy, HAProxy mode tcp, nginx stream), with their configs.
// Every proxy gets one worker (one process / one thread) so CPU per request
// compares like with like.
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { inPrivateNetns } from "./netns";
import { Child, run } from "./sys";

/** Where edgeproxy pins its dispatcher in the benchmark's bpffs (mounted by setupNetns). */
const PINS = "/sys/fs/bpf/edgeproxy";

export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/** The origin every proxy forwards to; outside the steered prefix, as edgeproxy requires. */
export const ORIGIN: Endpoint = { host: "127.0.0.1", port: 9000 };
/** What clients dial through a proxy: an address inside the netns's 192.0.2.0/24 local route. */
/**
 * What clients dial through a proxy: an address inside the netns's
 * 192.0.2.0/24 local route. Each (run, peer) gets its own address so the
 * TIME_WAIT sockets one-connection-per-request leaves behind never meet the
 * next peer's connections.
 */
export const front = (run: number, peer: number): Endpoint => ({ host: `192.0.2.${10 * run + peer}`, port: 8080 });

export interface Peer {
  readonly name: string;
  /** False for the direct path: wrk dials the origin. */
  readonly proxied: boolean;
  /** The command line for a proxy answering on `at`. */
  readonly command: (at: Endpoint) => string[];
  /** Config file name and text for a proxy answering on `at`. */
  readonly config?: (at: Endpoint) => { file: string; text: string };
}

/** `load_module` line for Debian's dynamic stream module ("" when nginx has it built in). */
export function streamModuleLine(): string {
  const built = run(["nginx", "-V"]).out;
  if (!/--with-stream=dynamic/.test(built)) return "";
  for (const dir of ["/usr/lib/nginx/modules", "/usr/share/nginx/modules"]) {
    const so = join(dir, "ngx_stream_module.so");
    if (existsSync(so)) return `load_module ${so};\n`;
  }
  throw new Error("nginx has a dynamic stream module but ngx_stream_module.so is missing (apt-get install libnginx-mod-stream)");
}

// Shared nginx preamble: foreground, one worker, everything under the temp dir.
export const nginxMain = (dir: string, name: string) => `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/${name}.pid;
error_log ${dir}/${name}.error.log warn;
events { worker_connections 16384; }
`;

export function originConfig(dir: string): string {
  // keepalive_requests: nginx's default (1000) would close keep-alive
  // connections mid-run and turn part of the keep-alive test into connects.
  return `${nginxMain(dir, "origin")}http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  default_type text/plain;
  keepalive_requests 100000000;
  server {
    listen ${ORIGIN.host}:${ORIGIN.port} backlog=4096;
    location / { return 200 "ok\\n"; }
  }
}
`;
}

/** Command line for an nginx with config `file` in `dir`. */
export const nginxCommand = (dir: string, file: string) => ["nginx", "-p", dir, "-e", join(dir, "nginx-startup.log"), "-c", join(dir, file)];

/**
 * The TCP proxies, each forwarding to `origin` (the HTTP origin unless told
 * otherwise). `bufferBytes`: the bulk scenario's tuning of the peers' relay
 * buffer, the knob each one documents for it (nginx stream
 * `proxy_buffer_size`, default 16k; HAProxy `tune.bufsize`, default 16384),
 * set to what edgeproxy's engine reads at once (src/engine/engine.ts
 * BUFFER_SIZE); undefined: their defaults (small exchanges need no more).
 */
export function peers(dir: string, edgeproxy: string, origin: Endpoint = ORIGIN, bufferBytes?: number): Peer[] {
  const moduleLine = streamModuleLine();
  const stream = (at: Endpoint) => ({
    file: "stream.conf",
    text: `${moduleLine}${nginxMain(dir, "stream")}stream {
  server {
    listen ${at.host}:${at.port} backlog=4096;
    proxy_pass ${origin.host}:${origin.port};${bufferBytes ? `\n    proxy_buffer_size ${bufferBytes / 1024}k;` : ""}
  }
}
`,
  });
  // maxconn: HAProxy sizes its fd limit from it (2 per proxied connection), so
  // keep it under a 20,000-file hard limit or it refuses to start.
  const haproxy = (at: Endpoint) => ({
    file: "haproxy.cfg",
    text: `global
  nbthread 1
  maxconn 8000${bufferBytes ? `\n  tune.bufsize ${bufferBytes}` : ""}
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bench
  bind ${at.host}:${at.port}
  server origin ${origin.host}:${origin.port}
`,
  });
  return [
    { name: "direct (no proxy)", proxied: false, command: () => [] },
    {
      name: "edgeproxy",
      proxied: true,
      // The realistic configuration: every port of the /24, not just the one wrk dials.
      command: () => [edgeproxy, "--ports", "1-65535", "--prefix", "192.0.2.0/24", "--origin", `${origin.host}:${origin.port}`],
    },
    { name: "haproxy (mode tcp)", proxied: true, command: () => ["haproxy", "-db", "-f", join(dir, "haproxy.cfg")], config: haproxy },
    { name: "nginx stream", proxied: true, command: () => nginxCommand(dir, "stream.conf"), config: stream },
  ];
}

/** Start a peer's proxy on `at`, pinned to `core` (undefined for the direct path). */
export function startPeer(peer: Peer, at: Endpoint, core: number, dir: string): Child | undefined {
  if (!peer.proxied) return undefined;
  if (peer.config) {
    const { file, text } = peer.config(at);
    writeFileSync(join(dir, file), text);
  }
  return new Child(peer.name, ["taskset", "-c", String(core), ...peer.command(at)]);
}

/**
 * Stop a peer started for run `r` and note an unclean end among `anomalies`:
 * edgeproxy promises exit 0 on SIGTERM; HAProxy may simply die of the signal.
 */
export async function stopPeer(proc: Child, name: string, r: number, anomalies: string[]): Promise<void> {
  const end = await proc.stop();
  const clean = !end.forced && (end.code === 0 || (!name.startsWith("edgeproxy") && end.signal === "SIGTERM"));
  // An edgeproxy that died keeps its pins (by design: steered ports refuse until a restart), which would steer the
  // whole /24 to nothing and make every later peer unreachable. Only the benchmark's own bpffs (private mount namespace).
  if (!clean && name.startsWith("edgeproxy") && inPrivateNetns() && existsSync(PINS)) rmSync(PINS, { recursive: true, force: true });
  if (!clean) anomalies.push(`${name} run ${r}: after SIGTERM: exit ${end.code}, signal ${end.signal}${end.forced ? " (needed SIGKILL)" : ""}; output:\n${proc.text.trim() || "(none)"}`);
  // The shutdown summary counts errors ("0 assign errors", "origin errors: none"); it is not one.
  else if (name.startsWith("edgeproxy") && proc.text.split("\n").some((l) => /error|warn/i.test(l) && !/^edgeproxy: service \S+: \d+ lookups/.test(l)))
    anomalies.push(`${name} run ${r} printed:\n${proc.text.trim()}`);
}
