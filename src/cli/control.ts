import { parseCount } from "../config/numbers";
import { formatPrefix, parsePrefix, type Prefix } from "../config/address";
import { formatPorts, parsePorts, type PortRange } from "../config/ports";
import { ConfigError } from "../errors";
import type { Protocol } from "../dispatcher/binding";
import { readFileSync } from "node:fs";
import { bpffsPath, pinDir } from "../dispatcher/pins";
import { ControlPlane, describeInstance } from "../dispatcher/controlplane";
import type { Registry } from "../dispatcher/registry";
import type { Pinned } from "../dispatcher/pins";
import { checkEnvironment } from "../system/environment";
import { socketKind, takeFd } from "../system/sockets";
import { table } from "./table";
import { tokenize, type FlagSpec } from "./flags";
import { checkInstance } from "../config/service";
import type { StatusView } from "./instances";

/** The tubectl-style commands that act on the namespace's pinned dispatcher. */
export type ControlCommand =
  | { kind: "status" }
  | { kind: "bindings" }
  | { kind: "down"; force: boolean }
  | { kind: "bind" | "unbind"; service: string; protocol: Protocol; prefixes: Prefix[]; ports: PortRange[]; takeOver: boolean; create: boolean }
  | { kind: "register"; service: string; pid: number; fd: number }
  | { kind: "unregister"; service: string }
  | { kind: "upgrade-program"; object?: string };

export interface ControlOptions {
  readonly json: boolean;
  readonly bpffs?: string;
  /** status: only this live instance's services. */
  readonly instance?: string;
}

export const CONTROL_COMMANDS = ["status", "bindings", "bind", "unbind", "register", "unregister", "down", "upgrade-program"] as const;

export const CONTROL_USAGE = `Commands on the pinned dispatcher of this network namespace (no serve process needed):
  edgeproxy status                                   services, bindings, sockets (owner pid and fd, cookie), counters
  edgeproxy bindings                                 every binding
  edgeproxy bind SERVICE tcp|udp PREFIXES PORTS      steer, e.g. bind echo tcp 127.0.0.1/32 7,77,777
                                                     (SERVICE must exist; --create makes it)
  edgeproxy unbind SERVICE tcp|udp PREFIXES PORTS    stop steering those
  edgeproxy register SERVICE --pid PID --fd FD       steer SERVICE to another process's socket
  edgeproxy unregister SERVICE                       drop SERVICE's sockets (its bindings then refuse)
  edgeproxy down [--force]                           remove all of edgeproxy's kernel state here (refused
                                                     while an instance serves; --force: they exit 1)
  edgeproxy upgrade-program [--object FILE]          switch the pinned dispatcher to this edgeproxy's BPF
                                                     program (or FILE's), keeping its maps and steering
  status also lists the instances the pins record (live or not) and the serves answering in
  $EDGEPROXY_RUN_DIR or /run/edgeproxy; status --instance NAME shows only that instance's services.
Options: --json (machine-readable output), --bpffs PATH, --take-over and --create (bind),
--force (down).

Commands on a running serve (an instance), through its admin socket: the only live instance,
or --instance NAME (its socket is /run/edgeproxy/NAME.sock by default), or --admin PATH:
  edgeproxy reload                                   re-read the config file
  edgeproxy upgrade [--binary PATH]                  start a successor, then drain
  edgeproxy drain                                    stop taking connections, let open ones finish, exit
  edgeproxy health                                   exit 0 if the admin API answers /healthz (probes)
Every --flag VALUE may also be written --flag=VALUE.`;

const COMMON: readonly FlagSpec[] = [{ name: "--json" }, { name: "--bpffs", value: "PATH" }];
/** Each command's flags (src/cli/flags.ts: `--flag VALUE` or `--flag=VALUE`). */
export const CONTROL_FLAGS: Readonly<Record<(typeof CONTROL_COMMANDS)[number], readonly FlagSpec[]>> = {
  status: [...COMMON, { name: "--instance", value: "NAME" }],
  bindings: COMMON,
  bind: [...COMMON, { name: "--take-over" }, { name: "--create" }],
  unbind: COMMON,
  register: [...COMMON, { name: "--pid", value: "PID" }, { name: "--fd", value: "FD" }],
  unregister: COMMON,
  down: [...COMMON, { name: "--force" }],
  "upgrade-program": [...COMMON, { name: "--object", value: "FILE", needs: "an ELF file (a compiled bpf/dispatcher.bpf.c)" }],
};

/** Parse `edgeproxy <command> ...`. Throws ConfigError (exit 2). */
export function parseControl(argv: readonly string[]): { command: ControlCommand; options: ControlOptions } {
  const [kind, ...rest] = argv as [string, ...string[]];
  const specs = CONTROL_FLAGS[kind as (typeof CONTROL_COMMANDS)[number]];
  if (!specs) throw new ConfigError(String(kind), "unknown command (see --help)");
  const positional: string[] = [];
  let json = false;
  let bpffs: string | undefined;
  let takeOver = false;
  let create = false;
  let force = false;
  let pid: number | undefined;
  let fd: number | undefined;
  let object: string | undefined;
  let instance: string | undefined;
  // pid_max is at most 2^22 (PID_MAX_LIMIT); a descriptor is a non-negative int.
  const number = (flag: string, v: string) => parseCount(v, `${kind} ${flag}`, flag === "--pid" ? { min: 1, max: 2 ** 22 } : { min: 0 });
  for (const t of tokenize(rest, specs, kind)) {
    if ("arg" in t) positional.push(t.arg);
    else if (t.flag === "--json") json = true;
    else if (t.flag === "--take-over") takeOver = true;
    else if (t.flag === "--create") create = true;
    else if (t.flag === "--force") force = true;
    else if (t.flag === "--bpffs") bpffs = t.value;
    else if (t.flag === "--pid") pid = number(t.flag, t.value!);
    else if (t.flag === "--fd") fd = number(t.flag, t.value!);
    else if (t.flag === "--object") object = t.value;
    else if (t.flag === "--instance") instance = checkInstance(t.value!, `${kind} --instance`);
  }
  const arity = (n: number, shape: string) => {
    if (positional.length !== n) throw new ConfigError(kind, `usage: edgeproxy ${kind}${shape ? ` ${shape}` : ""}`);
  };
  const options = { json, bpffs, ...(instance !== undefined ? { instance } : {}) };
  switch (kind) {
    case "status":
    case "bindings":
      arity(0, "");
      return { command: { kind } as ControlCommand, options };
    case "down":
      arity(0, "[--force]");
      return { command: { kind, force }, options };
    case "bind":
    case "unbind": {
      arity(4, "SERVICE tcp|udp PREFIXES PORTS");
      const [service, protocol, prefixes, ports] = positional as [string, string, string, string];
      if (protocol !== "tcp" && protocol !== "udp") throw new ConfigError(`${kind} protocol`, `"${protocol}" is not tcp or udp`);
      return {
        command: {
          kind,
          service,
          protocol,
          prefixes: prefixes.split(",").map((p) => parsePrefix(p.trim(), `${kind} prefix`)),
          ports: parsePorts(ports, `${kind} ports`),
          takeOver,
          create,
        },
        options,
      };
    }
    case "register":
      arity(1, "SERVICE --pid PID --fd FD");
      if (pid === undefined || fd === undefined) throw new ConfigError("register", "needs --pid PID and --fd FD");
      return { command: { kind, service: positional[0]!, pid, fd }, options };
    case "unregister":
      arity(1, "SERVICE");
      return { command: { kind, service: positional[0]! }, options };
    case "upgrade-program":
      arity(0, "[--object FILE]");
      return { command: { kind, object }, options };
    default:
      throw new ConfigError(String(kind), "unknown command (see --help)");
  }
}

type Out = (line: string) => void;

/** Run a control command; resolves to the exit code. Errors propagate to the CLI's reporter. */
export function runControl(command: ControlCommand, options: ControlOptions, image: Uint8Array, out: Out, view?: StatusView): number {
  checkEnvironment();
  const bpffs = bpffsPath(options.bpffs);
  const emit = (human: string[], json: unknown) => {
    if (options.json) out(JSON.stringify(json, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    else for (const l of human) out(l);
  };

  if (command.kind === "down") return down(bpffs, image, command.force, emit);

  if (command.kind === "upgrade-program") {
    const use = command.object === undefined ? image : readObject(command.object);
    const u = ControlPlane.upgradeProgram(bpffs, use);
    const line = u.unchanged
      ? `dispatcher program unchanged (tag ${u.to})`
      : `dispatcher program upgraded from tag ${u.from} to ${u.to} (maps kept${u.created.length ? `; created ${u.created.join(", ")}` : ""})`;
    emit([line], { ...u, dir: pinDir(bpffs) });
    return 0;
  }

  const creates = (command.kind === "bind" && command.create) || command.kind === "register";
  // Never upgrades: a differing pinned program is used as it is (status
  // shows both tags); serve and upgrade-program switch programs. A namespace
  // this command just equipped gets nothing half-done (ControlPlane.with).
  const code = ControlPlane.with(bpffs, image, { create: creates, upgrade: false }, (plane) => {
    try {
      return act(command, plane, emit, view);
    } finally {
      plane.close();
    }
  });
  if (code !== undefined) return code;
  if (command.kind === "status" || command.kind === "bindings") {
    const live = view && command.kind === "status" ? instanceLines(view) : [];
    emit([`edgeproxy is not loaded in this network namespace (${pinDir(bpffs)} does not exist)`, ...live], { loaded: false, dir: pinDir(bpffs), ...(view ? { answering: view.live } : {}) });
    return 0;
  }
  if (command.kind === "bind") throw new ConfigError(`service ${command.service}`, "no such service: nothing is pinned in this network namespace; --create makes it");
  throw new ConfigError(command.kind, `edgeproxy is not loaded in this network namespace (${pinDir(bpffs)} does not exist)`);
}

/**
 * Remove the pinned state (ControlPlane.down): refused while instances serve
 * through it, naming them; with `force` removed anyway: each instance notices
 * within a second (server/watchdog.ts), its health check fails, it drains and
 * exits 1.
 */
function down(bpffs: string, image: Uint8Array, force: boolean, emit: (human: string[], json: unknown) => void): number {
  const dir = pinDir(bpffs);
  const { removed, live } = ControlPlane.down(bpffs, image, force);
  const instances = live.map((r) => ({ name: r.name, pid: r.pid, services: r.services }));
  if (!removed) {
    emit([`nothing pinned for this network namespace (${dir})`], { removed: false, dir, instances });
    return 0;
  }
  const also = live.length ? `; ${live.map(describeInstance).join(", ")} will notice within a second and exit 1` : "";
  emit([`removed ${dir}: nothing is steered here any more${also}`], { removed: true, dir, instances });
  return 0;
}

function readObject(path: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (e) {
    throw new ConfigError("upgrade-program --object", `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  // libbpf would say so in an errno of its own (LIBBPF_ERRNO__FORMAT) and a log line.
  if (bytes.length < 4 || bytes[0] !== 0x7f || String.fromCharCode(...bytes.subarray(1, 4)) !== "ELF") {
    throw new ConfigError("upgrade-program --object", `${path} is not an ELF file (build it with clang -target bpf, as build/build.ts does)`);
  }
  return bytes;
}

function act(command: Exclude<ControlCommand, { kind: "down" | "upgrade-program" }>, plane: ControlPlane, emit: (human: string[], json: unknown) => void, view?: StatusView): number {
  const reg = plane.registry;
  const pinned = plane.pinned;
  const named = (name: string) => {
    const s = reg.find(name);
    if (!s) throw new ConfigError(`service ${name}`, "no such service (see edgeproxy status)");
    return s;
  };
  switch (command.kind) {
    case "status":
      return status(reg, pinned, plane, emit, view);
    case "bindings": {
      const names = new Map(reg.services().map((s) => [s.id, s.name]));
      const stored = reg.bindings().sort((a, b) => a.service - b.service || a.protocol.localeCompare(b.protocol) || a.prefix.length - b.prefix.length || a.lo - b.lo);
      const rows = stored.map((b) => ({ service: names.get(b.service) ?? `#${b.service}`, protocol: b.protocol, prefix: formatPrefix(b.prefix), ports: formatPorts(b) }));
      emit(table(["SERVICE", "PROTO", "PREFIX", "PORTS"], rows.map((r) => [r.service, r.protocol, r.prefix, r.ports])), rows);
      return 0;
    }
    case "bind":
    case "unbind": {
      const existing = reg.find(command.service);
      if (!existing && !(command.kind === "bind" && command.create)) {
        throw new ConfigError(`service ${command.service}`, `no such service (see edgeproxy status)${command.kind === "bind" ? "; --create makes it" : ""}`);
      }
      const wanted = command.prefixes.flatMap((prefix) => command.ports.map((r) => ({ protocol: command.protocol, prefix, lo: r.lo, hi: r.hi })));
      // Checked before anything is written: another live instance's traffic, and every live instance's admin listener.
      if (command.kind === "bind") {
        plane.checkBindingsLocked(undefined, command.service, wanted);
        plane.checkAdminReachLocked(command.service, wanted);
      }
      const { svc, changed, skipped } = plane.transactionLocked([command.service], () => new Set(), () => {
        const svc = command.kind === "bind" ? reg.ensure(command.service) : named(command.service);
        let changed = 0;
        for (const b of wanted) if (command.kind === "bind" ? reg.addBinding({ ...b, service: svc.id, takeOver: command.takeOver }) : reg.removeBinding({ ...b, service: svc.id })) changed++;
        if (command.kind === "unbind" && changed === 0) throw new ConfigError("unbind", `service ${svc.name} has no such binding (see edgeproxy bindings)`);
        return { svc, changed };
      });
      const what = `${command.protocol} ${command.prefixes.map(formatPrefix).join(",")} ${command.ports.map(formatPorts).join(",")}`;
      const human = [`${command.kind === "bind" ? "bound" : "unbound"} ${what} ${command.kind === "bind" ? "to" : "from"} service ${svc.name}`];
      if (skipped.length) human.push(`left alone, already listening: ${skipped.join(", ")} (--take-over steers them too)`);
      emit(human, { service: svc.name, changed, skipped });
      return 0;
    }
    case "register": {
      const taken = takeFd(command.pid, command.fd);
      try {
        const fd = taken.raw;
        const kind = socketKind(fd, `process ${command.pid} fd ${command.fd}`);
        if (!kind.listening) throw new ConfigError("register", `process ${command.pid} fd ${command.fd} is a TCP socket that is not listening`);
        const owner = { pid: command.pid, fd: command.fd };
        // A dual-stack IPv6 socket takes IPv4 lookups too (bpf_sk_assign allows it).
        const families: (4 | 6)[] = kind.family === 4 ? [4] : kind.dualStack ? [4, 6] : [6];
        const { svc } = plane.transactionLocked([command.service], () => new Set(), () => {
          const svc = reg.ensure(command.service);
          for (const family of families) reg.setSocket(svc.id, kind.protocol, family, fd, owner);
          return { svc };
        });
        emit([`service ${svc.name}: ${kind.protocol}/ipv${families.join("+ipv")} socket of process ${command.pid} (fd ${command.fd}) registered`], {
          service: svc.name,
          protocol: kind.protocol,
          families,
          ...owner,
        });
        return 0;
      } finally {
        taken.close(); // the SOCKMAP holds its own reference
      }
    }
    case "unregister": {
      const svc = named(command.service);
      let n = 0;
      for (const protocol of ["tcp", "udp"] as const) for (const family of [4, 6] as const) if (reg.removeSocket(svc.id, protocol, family)) n++;
      emit([`service ${svc.name}: ${n} socket(s) unregistered; its bindings now refuse connections`], { service: svc.name, removed: n });
      return 0;
    }
    default:
      return command satisfies never;
  }
}

/** One line per live instance (status), or where none answers. */
function instanceLines(view: StatusView): string[] {
  if (!view.live.length) return [`no edgeproxy instance answers in ${view.dir}`];
  return view.live.map(
    (i) => `instance ${i.instance}: pid ${i.pid}, ${i.workers} worker(s), ${i.source ? `config ${i.source}` : "started from flags"}, admin socket ${i.socket}`,
  );
}

function status(reg: Registry, pinned: Pinned, plane: ControlPlane, emit: (human: string[], json: unknown) => void, view?: StatusView): number {
  // The instances the pins record (the control plane's truth: live by leader or sockets); with --instance, that one.
  const instances = plane
    .instanceViews()
    .filter((r) => !view?.services || view.live.some((l) => l.instance === r.name))
    .map((r) => ({ name: r.name, pid: r.pid, live: r.live, config: r.config, admin: r.admin, services: r.services, takenOverBy: r.by || undefined }));
  const d = pinned.dispatcher;
  const sockets = reg.sockets();
  const bindings = reg.bindingsByService();
  const only = view?.services && new Set(view.services);
  const services = reg.services().filter((s) => !only || only.has(s.name)).map((s) => ({
    name: s.name,
    id: s.id,
    takeOver: s.takeOver,
    bindings: bindings.get(s.id)?.length ?? 0,
    sockets: sockets.filter((k) => k.service === s.id).map(({ protocol, family, pid, fd, cookie }) => ({ protocol, family, pid, fd, cookie })),
    counters: d.counters(s.id),
    limited: d.limitCounters(s.id),
  }));
  const unmatched = d.counters(0).lookups;
  const rows = services.map((s) => [
    s.name,
    String(s.id),
    String(s.bindings),
    s.sockets.map((k) => `${k.protocol}/${k.family} pid ${k.pid} fd ${k.fd} cookie ${k.cookie}`).join("; ") || "none",
    String(s.counters.lookups),
    String(s.counters.steered),
    String(s.counters.missingSocket),
    String(s.counters.denied),
    String(s.limited.connections + s.limited.rate),
    String(s.counters.assignError),
  ]);
  emit(
    [
      `dispatcher ${pinned.dir} (program tag ${pinned.tag}${pinned.tag === pinned.binaryTag ? "" : `; this edgeproxy's is ${pinned.binaryTag}: 'edgeproxy upgrade-program' switches to it`})`,
      ...table(["SERVICE", "ID", "BINDINGS", "SOCKETS", "LOOKUPS", "STEERED", "NO-SOCKET", "DENIED", "LIMITED", "ASSIGN-ERR"], rows),
      `lookups that matched no binding: ${unmatched}`,
      ...(instances.length ? table(["INSTANCE", "PID", "LIVE", "SERVICES", "CONFIG", "ADMIN"], instances.map((i) => [i.name, String(i.pid), i.live ? "yes" : "no", i.services.join(",") || "-", i.config || "-", i.admin || "-"])) : []),
      ...(view ? instanceLines(view) : []),
    ],
    { loaded: true, dir: pinned.dir, tag: pinned.tag, binaryTag: pinned.binaryTag, services, unmatchedLookups: unmatched, instances, ...(view ? { answering: view.live } : {}) },
  );
  return 0;
}
