import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { runDir } from "../config/service";
import { EdgeError } from "../errors";
import type { InstanceIdentity } from "../admin/backend";
import type { DashboardView, Rates } from "../admin/dashboard";

/** A serve that answers on an admin socket. */
export interface LiveInstance extends InstanceIdentity {
  readonly socket: string;
}

// Probes go to sockets in a root-owned directory, but a hung owner must not hang the command.
const PROBE_TIMEOUT_MS = 2_000;
// Bound on the sockets probed in the run directory.
const MAX_SOCKETS = 256;

/** GET `route` on the unix socket `path`. */
export function askAdmin(path: string, route: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`http://localhost${route}`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS), ...init, unix: path } as RequestInit);
}

/**
 * Who answers on `socket`, or undefined when nothing does (a stale file, a
 * dead owner). A serve without GET /instance (an older edgeproxy) is named
 * after its socket file, its pid taken from /status.
 */
export async function probe(socket: string, denied?: string[]): Promise<LiveInstance | undefined> {
  try {
    const res = await askAdmin(socket, "/instance");
    if (res.ok) return { ...((await res.json()) as InstanceIdentity), socket };
    await res.body?.cancel();
    if (res.status !== 404) return undefined;
    const status = (await (await askAdmin(socket, "/status")).json()) as { pid: number; version?: string };
    return { instance: socket.replace(/^.*\//, "").replace(/\.sock$/, ""), pid: status.pid, workers: 1, version: status.version, socket };
  } catch (e) {
    // The socket is 0600: another user's serve (or root's, to a user) cannot be asked.
    if ((e as { code?: string }).code === "EACCES") denied?.push(socket);
    return undefined;
  }
}

/** Every serve that answers on a socket in the run directory ($EDGEPROXY_RUN_DIR, /run/edgeproxy), by name. */
export async function liveInstances(dir = runDir(), denied?: string[]): Promise<LiveInstance[]> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as { code?: string }).code === "EACCES") denied?.push(dir);
    return [];
  }
  const sockets = names
    .map((n) => join(dir, n))
    .filter((p) => {
      try {
        return lstatSync(p).isSocket();
      } catch {
        return false;
      }
    })
    .slice(0, MAX_SOCKETS);
  const found = (await Promise.all(sockets.map((s) => probe(s, denied)))).filter((i): i is LiveInstance => i !== undefined);
  // One serve may answer on two paths (a socket file left behind by a hard link, an old default): list it once.
  const seen = new Set<number>();
  return found.filter((i) => !seen.has(i.pid) && (seen.add(i.pid), true)).sort((a, b) => a.instance.localeCompare(b.instance));
}

/** "web (pid 12, /run/edgeproxy/web.sock)". */
export const describeInstance = (i: LiveInstance) => `${i.instance} (pid ${i.pid}, ${i.socket})`;

/**
 * The admin socket a control command talks to: --admin PATH as given, else
 * the live instance named by --instance, else the only live one. None, an
 * unknown name, or several without --instance: an EdgeError of `fault` in one
 * line (health: "internal", exit 1, as a probe fails; the others "config", 2).
 */
export async function pickInstance(command: string, choice: { admin?: string; instance?: string }, fault: "config" | "internal"): Promise<{ socket: string; instance?: LiveInstance }> {
  if (choice.admin !== undefined) return { socket: choice.admin };
  const dir = runDir();
  if (choice.instance !== undefined) {
    const direct = await probe(join(dir, `${choice.instance}.sock`));
    if (direct && direct.instance === choice.instance) return { socket: direct.socket, instance: direct };
    const live = await liveInstances(dir);
    const named = live.find((i) => i.instance === choice.instance);
    if (named) return { socket: named.socket, instance: named };
    const others = live.length ? `live: ${live.map(describeInstance).join(", ")}` : "no instance answers there";
    throw new EdgeError(command, `no live instance named ${choice.instance} in ${dir} (${others})`, fault);
  }
  const denied: string[] = [];
  const live = await liveInstances(dir, denied);
  if (live.length === 1) return { socket: live[0]!.socket, instance: live[0] };
  if (live.length === 0) {
    if (denied.length) throw new EdgeError(command, `permission denied on ${denied.join(", ")}: run this as the user edgeproxy runs as, or root`, fault);
    throw new EdgeError(command, `no edgeproxy instance answers in ${dir} (is serve running, with its admin API on? --admin PATH for a socket elsewhere)`, fault);
  }
  throw new EdgeError(command, `${live.length} live instances: ${live.map(describeInstance).join(", ")}; choose one with --instance NAME`, "config");
}

/** A service as a live instance's /dashboard.json has it: what the pins cannot say. */
export interface LiveService {
  readonly instance: string;
  readonly mode: string;
  /** tcp and http services: the data plane serving them, "epoll" or "bun". */
  readonly engine?: string;
  /** Connections (udp: flows) open now. */
  readonly open: number;
  readonly origins: DashboardView["services"][number]["origins"];
  /** Per second, between the instance's last two readings a second apart; undefined when it had only one. */
  readonly rates?: Rates;
}

/** What `edgeproxy status` shows of instances: every live one, or the one --instance names and the services it runs. */
export interface StatusView {
  readonly dir: string;
  readonly live: readonly LiveInstance[];
  /** With --instance: only these services' rows. */
  readonly services?: readonly string[];
  /** By service name, from the live instances that run them. */
  readonly readings: ReadonlyMap<string, LiveService>;
  /** By instance name: its busiest client addresses (instance-wide, not per service). */
  readonly clients: ReadonlyMap<string, DashboardView["clients"]>;
}

export async function statusView(instance: string | undefined): Promise<StatusView> {
  const dir = runDir();
  if (instance === undefined) {
    const live = await liveInstances(dir);
    return { dir, live, ...(await readings(live)) };
  }
  const picked = await pickInstance("status", { instance }, "config");
  let services: string[];
  try {
    const status = (await (await askAdmin(picked.socket, "/status")).json()) as { services: { name: string; mode?: string }[] };
    // Services listed with a mode are the ones this instance runs (the others share the dispatcher).
    services = status.services.filter((s) => s.mode !== undefined).map((s) => s.name);
  } catch (e) {
    throw new EdgeError("status", `instance ${instance} (${picked.socket}) did not answer GET /status: ${(e as Error).message}`, "internal");
  }
  return { dir, live: [picked.instance!], services, ...(await readings([picked.instance!])) };
}

// The dashboard samples once a second (src/admin/dashboard.ts); a sampler that was idle has one reading after the first ask.
const SECOND_READING_MS = 1_200;

/** Each live instance's services with open connections, origins and rates (GET /dashboard.json); an instance that does not answer adds none. */
async function readings(live: readonly LiveInstance[]): Promise<Pick<StatusView, "readings" | "clients">> {
  const views = await Promise.all(
    live.map(async (i) => {
      let view = await dashboard(i.socket);
      if (view && !view.samples.length) {
        await Bun.sleep(SECOND_READING_MS);
        view = (await dashboard(i.socket)) ?? view;
      }
      return { instance: i.instance, view };
    }),
  );
  const out = new Map<string, LiveService>();
  const clients = new Map<string, DashboardView["clients"]>();
  for (const { instance, view } of views) {
    if (view?.clients) clients.set(instance, view.clients);
    for (const s of view?.services ?? []) {
      // Without a mode: a service the instance does not run (another process's, on the same dispatcher).
      if (s.mode === undefined) continue;
      out.set(s.name, { instance, mode: s.mode, ...(s.engine ? { engine: s.engine } : {}), open: s.active, origins: s.origins, ...(view!.samples.length ? { rates: s.rates } : {}) });
    }
  }
  return { readings: out, clients };
}

async function dashboard(socket: string): Promise<DashboardView | undefined> {
  try {
    const res = await askAdmin(socket, "/dashboard.json");
    if (!res.ok) {
      await res.body?.cancel();
      return undefined; // an edgeproxy without the dashboard: status shows what the pins say
    }
    return (await res.json()) as DashboardView;
  } catch {
    return undefined;
  }
}
