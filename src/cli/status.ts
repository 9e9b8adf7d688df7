/*
 * `edgeproxy status [SERVICE]`: what the pins say (services, their bindings
 * and sockets, the kernel's counters) and, from each live instance's admin
 * API (/dashboard.json), what only the serving process knows: mode, open
 * connections, origins with health, rates. Without a live instance the rates
 * are unavailable and said so.
 */
import type { Rates } from "../admin/dashboard";
import { formatPrefix } from "../config/address";
import { formatPorts } from "../config/ports";
import type { InstanceView } from "../dispatcher/claims";
import type { Pinned } from "../dispatcher/pins";
import type { Registry } from "../dispatcher/registry";
import { ConfigError } from "../errors";
import type { StatusView } from "./instances";
import { table } from "./table";
import { clientLines } from "./live";

type Emit = (human: string[], json: unknown) => void;

/** One line per live instance (status), or where none answers. */
export function instanceLines(view: StatusView): string[] {
  if (!view.live.length) return [`no edgeproxy instance answers in ${view.dir}`];
  return view.live.map(
    (i) => `instance ${i.instance}: pid ${i.pid}, ${i.workers} worker(s), ${i.source ? `config ${i.source}` : "started from flags"}, admin socket ${i.socket}`,
  );
}

function si(v: number, unit: string): string {
  const units = ["", "k", "M", "G", "T"];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 && Number.isInteger(v) ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2)}${units[i]}${unit}`;
}

const errorsPerSecond = (r: Rates) => Object.values(r.errors).reduce((a, b) => a + b, 0);

/**
 * `records`: the instances the pins record (the control plane's truth: live
 * by leader or sockets, ControlPlane.instanceViews); `view`: the serves
 * answering on their admin sockets (with --instance, that one).
 */
export function status(reg: Registry, pinned: Pinned, records: readonly InstanceView[], emit: Emit, view: StatusView | undefined, only?: string): number {
  const d = pinned.dispatcher;
  if (only !== undefined && !reg.find(only)) throw new ConfigError(`status ${only}`, "no such service (see edgeproxy status)");
  const instances = records
    .filter((r) => !view?.services || view.live.some((l) => l.instance === r.name))
    .map((r) => ({ name: r.name, pid: r.pid, live: r.live, config: r.config, admin: r.admin, services: r.services, takenOverBy: r.by || undefined }));
  const sockets = reg.sockets();
  const bindings = reg.bindingsByService();
  const ofInstance = view?.services && new Set(view.services);
  const services = reg
    .services()
    .filter((s) => (only === undefined || s.name === only) && (!ofInstance || ofInstance.has(s.name)))
    .map((s) => {
      const live = view?.readings.get(s.name);
      return {
        name: s.name,
        id: s.id,
        takeOver: s.takeOver,
        bindings: (bindings.get(s.id) ?? [])
          .slice()
          .sort((a, b) => a.protocol.localeCompare(b.protocol) || a.prefix.length - b.prefix.length || a.lo - b.lo)
          .map((b) => ({ protocol: b.protocol, prefix: formatPrefix(b.prefix), ports: formatPorts(b) })),
        sockets: sockets.filter((k) => k.service === s.id).map(({ protocol, family, pid, fd, cookie }) => ({ protocol, family, pid, fd, cookie })),
        counters: d.counters(s.id),
        limited: d.limitCounters(s.id),
        // What a live instance running the service says; null: none does (another process's socket, or no serve running).
        instance: live?.instance ?? null,
        mode: live?.mode ?? null,
        // tcp and http services: "epoll" (src/engine/) or "bun" (Bun's sockets); null for udp and where no instance says.
        engine: live?.engine ?? null,
        open: live?.open ?? null,
        origins: live?.origins ?? [],
        rates: live?.rates ?? null,
      };
    });
  const unmatched = d.counters(0).lookups;
  const dash = "-";
  const summary = services.map((s) => [
    s.name,
    s.mode ? (s.engine ? `${s.mode}/${s.engine}` : s.mode) : "external",
    s.instance ?? dash,
    s.open === null ? dash : String(s.open),
    s.rates ? si(s.rates.connections, "") : dash,
    s.rates ? si(s.rates.bytes, "B") : dash,
    s.rates ? si(errorsPerSecond(s.rates), "") : dash,
    s.origins.length ? `${s.origins.filter((o) => o.healthy).length}/${s.origins.length}` : dash,
    String(s.counters.lookups),
    String(s.counters.steered),
    String(s.counters.missingSocket),
    String(s.counters.denied),
    String(s.limited.connections + s.limited.rate),
    String(s.counters.assignError),
  ]);
  const bindingRows = services.flatMap((s) => s.bindings.map((b) => [s.name, b.protocol, b.prefix, b.ports]));
  const originRows = services.flatMap((s) => s.origins.map((o) => [s.name, o.origin, o.healthy ? "healthy" : "DOWN", `${o.up}/${o.endpoints}`, String(o.active)]));
  const socketRows = services.flatMap((s) => s.sockets.map((k) => [s.name, `${k.protocol}/ipv${k.family}`, String(k.pid), String(k.fd), String(k.cookie)]));
  const noRates = services.some((s) => !s.rates);
  const human = [
    `dispatcher ${pinned.dir} (program tag ${pinned.tag}${pinned.tag === pinned.binaryTag ? "" : `; this edgeproxy's is ${pinned.binaryTag}: 'edgeproxy upgrade-program' switches to it`})`,
    "",
    ...table(["SERVICE", "MODE", "INSTANCE", "OPEN", "CONN/S", "BYTES/S", "ERR/S", "ORIGINS UP", "LOOKUPS", "STEERED", "NO-SOCKET", "DENIED", "LIMITED", "ASSIGN-ERR"], summary),
    ...(noRates && services.length ? ["-: unavailable: no live instance runs that service (its rates, open connections and origins are the serving process's)"] : []),
    "",
    ...(bindingRows.length ? table(["SERVICE", "PROTO", "PREFIX", "PORTS"], bindingRows) : ["no bindings"]),
    "",
    ...(originRows.length ? [...table(["SERVICE", "ORIGIN", "HEALTH", "ENDPOINTS UP", "OPEN"], originRows), ""] : []),
    ...(socketRows.length ? table(["SERVICE", "SOCKET", "PID", "FD", "COOKIE"], socketRows) : ["no sockets registered"]),
    "",
    `lookups that matched no binding: ${unmatched}`,
    ...(instances.length
      ? ["", ...table(["INSTANCE", "PID", "LIVE", "SERVICES", "CONFIG", "ADMIN"], instances.map((i) => [i.name, String(i.pid), i.live ? "yes" : "no", i.services.join(",") || "-", i.config || "-", i.admin || "-"]))]
      : []),
    ...(view ? instanceLines(view) : []),
    // Instance-wide figures: shown when no service was asked for.
    ...(view && only === undefined ? [...view.clients].flatMap(([name, c]) => ["", ...clientLines(c, 5).map((l, i) => (i === 0 ? `instance ${name}: ${l}` : l))]) : []),
  ];
  emit(human, {
    loaded: true,
    dir: pinned.dir,
    tag: pinned.tag,
    binaryTag: pinned.binaryTag,
    services,
    unmatchedLookups: unmatched,
    instances,
    ...(view ? { answering: view.live, clients: Object.fromEntries(view.clients) } : {}),
  });
  return 0;
}
