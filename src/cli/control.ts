import { parseCount } from "../config/numbers";
import { formatPrefix, parsePrefix, type Prefix } from "../config/address";
import { formatPorts, parsePorts, type PortRange } from "../config/ports";
import { ConfigError } from "../errors";
import type { Protocol } from "../dispatcher/binding";
import { readFileSync } from "node:fs";
import { bpffsPath, openPinned, pinDir, removePinned, upgradeProgram, withPinLock, type Pinned } from "../dispatcher/pins";
import { Registry } from "../dispatcher/registry";
import { liveInstances, liveInstancesRaw, type LiveInstance } from "../server/live";
import { libc } from "../ebpf/libc";
import { checkEnvironment } from "../system/environment";
import { socketKind, takeFd } from "../system/sockets";
import { table } from "./table";

/** The tubectl-style commands that act on the namespace's pinned dispatcher. */
export type ControlCommand =
  | { kind: "status" }
  | { kind: "bindings" }
  | { kind: "down"; force: boolean }
  | { kind: "bind" | "unbind"; service: string; protocol: Protocol; prefixes: Prefix[]; ports: PortRange[]; takeOver: boolean }
  | { kind: "register"; service: string; pid: number; fd: number }
  | { kind: "unregister"; service: string }
  | { kind: "upgrade-program"; object?: string };

export interface ControlOptions {
  readonly json: boolean;
  readonly bpffs?: string;
}

export const CONTROL_COMMANDS = ["status", "bindings", "bind", "unbind", "register", "unregister", "down", "upgrade-program"] as const;

export const CONTROL_USAGE = `Commands on the pinned dispatcher of this network namespace (no serve process needed):
  edgeproxy status                                   services, bindings, sockets (owner pid and fd, cookie), counters
  edgeproxy bindings                                 every binding
  edgeproxy bind SERVICE tcp|udp PREFIXES PORTS      steer, e.g. bind echo tcp 127.0.0.1/32 7,77,777
  edgeproxy unbind SERVICE tcp|udp PREFIXES PORTS    stop steering those
  edgeproxy register SERVICE --pid PID --fd FD       steer SERVICE to another process's socket
  edgeproxy unregister SERVICE                       drop SERVICE's sockets (its bindings then refuse)
  edgeproxy down [--force]                           remove all of edgeproxy's kernel state here (refused
                                                     while an instance serves; --force: they exit 1)
  edgeproxy upgrade-program [--object FILE]          switch the pinned dispatcher to this edgeproxy's BPF
                                                     program (or FILE's), keeping its maps and steering
Options: --json (machine-readable output), --bpffs PATH, --take-over (bind), --force (down).

Commands on a running serve, through its admin socket (--admin PATH, default /run/edgeproxy/admin.sock):
  edgeproxy reload                                   re-read the config file
  edgeproxy upgrade [--binary PATH]                  start a successor, then drain
  edgeproxy health                                   exit 0 if the admin API answers /healthz (probes)`;

/** Parse `edgeproxy <command> ...`. Throws ConfigError (exit 2). */
export function parseControl(argv: readonly string[]): { command: ControlCommand; options: ControlOptions } {
  const [kind, ...rest] = argv as [string, ...string[]];
  const positional: string[] = [];
  let json = false;
  let bpffs: string | undefined;
  let takeOver = false;
  let force = false;
  let pid: number | undefined;
  let fd: number | undefined;
  let object: string | undefined;
  // pid_max is at most 2^22 (PID_MAX_LIMIT); a descriptor is a non-negative int.
  const number = (flag: string, v: string | undefined) => {
    if (v === undefined) throw new ConfigError(`${kind} ${flag}`, "needs a whole number, got nothing");
    return parseCount(v, `${kind} ${flag}`, flag === "--pid" ? { min: 1, max: 2 ** 22 } : { min: 0 });
  };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === "--json") json = true;
    else if (a === "--take-over" && kind === "bind") takeOver = true;
    else if (a === "--force" && kind === "down") force = true;
    else if (a === "--bpffs") {
      bpffs = rest[++i];
      if (!bpffs) throw new ConfigError(`${kind} --bpffs`, "needs a path");
    }
    else if (a === "--pid" && kind === "register") pid = number(a, rest[++i]);
    else if (a === "--fd" && kind === "register") fd = number(a, rest[++i]);
    else if (a === "--object" && kind === "upgrade-program") {
      object = rest[++i];
      if (!object) throw new ConfigError(`${kind} --object`, "needs an ELF file (a compiled bpf/dispatcher.bpf.c)");
    }
    else if (a.startsWith("-")) throw new ConfigError(`${kind} ${a}`, "unknown option (see --help)");
    else positional.push(a);
  }
  const arity = (n: number, shape: string) => {
    if (positional.length !== n) throw new ConfigError(kind, `usage: edgeproxy ${kind}${shape ? ` ${shape}` : ""}`);
  };
  const options = { json, bpffs };
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
export function runControl(command: ControlCommand, options: ControlOptions, image: Uint8Array, out: Out): number {
  checkEnvironment();
  const bpffs = bpffsPath(options.bpffs);
  const emit = (human: string[], json: unknown) => {
    if (options.json) out(JSON.stringify(json, (_k, v) => (typeof v === "bigint" ? v.toString() : v)));
    else for (const l of human) out(l);
  };

  if (command.kind === "down") return down(bpffs, image, command.force, emit);

  if (command.kind === "upgrade-program") {
    const use = command.object === undefined ? image : readObject(command.object);
    const u = withPinLock(bpffs, () => upgradeProgram(bpffs, use));
    const line = u.unchanged
      ? `dispatcher program unchanged (tag ${u.to})`
      : `dispatcher program upgraded from tag ${u.from} to ${u.to} (maps kept${u.created.length ? `; created ${u.created.join(", ")}` : ""})`;
    emit([line], { ...u, dir: pinDir(bpffs) });
    return 0;
  }

  const creates = command.kind === "bind" || command.kind === "register";
  return withPinLock(bpffs, () => {
    // Never upgrades: a differing pinned program is used as it is (status
    // shows both tags); serve and upgrade-program switch programs.
    const pinned = openPinned(bpffs, image, creates, false);
    if (!pinned) {
      if (command.kind === "status" || command.kind === "bindings") {
        emit([`edgeproxy is not loaded in this network namespace (${pinDir(bpffs)} does not exist)`], { loaded: false, dir: pinDir(bpffs) });
        return 0;
      }
      throw new ConfigError(command.kind, `edgeproxy is not loaded in this network namespace (${pinDir(bpffs)} does not exist)`);
    }
    try {
      return act(command, new Registry(pinned.dispatcher), pinned, emit);
    } catch (e) {
      // A namespace this command just equipped gets nothing half-done.
      if (pinned.created) removePinned(bpffs);
      throw e;
    } finally {
      pinned.dispatcher.close();
    }
  });
}

/**
 * Remove the pinned state. Refused while instances serve through it (they
 * would go on running with nothing steered to them), naming them; with
 * `force` removed anyway: each instance notices within a second
 * (server/watchdog.ts), its health check fails, it drains and exits 1.
 */
function down(bpffs: string, image: Uint8Array, force: boolean, emit: (human: string[], json: unknown) => void): number {
  const dir = pinDir(bpffs);
  return withPinLock(bpffs, () => {
    let live: LiveInstance[] = [];
    let unreadable: string | undefined;
    try {
      const pinned = openPinned(bpffs, image, false, false);
      if (!pinned) {
        emit([`nothing pinned for this network namespace (${dir})`], { removed: false, dir, instances: [] });
        return 0;
      }
      try {
        live = liveInstances(new Registry(pinned.dispatcher));
      } finally {
        pinned.dispatcher.close();
      }
    } catch (e) {
      // Another version's maps: its sockets and their owners can still be read.
      try {
        live = liveInstancesRaw(dir);
      } catch {
        unreadable = (e as Error).message;
      }
    }
    if (!force && unreadable) throw new ConfigError("down", `cannot tell which instances serve here (${unreadable}); --force removes ${dir} anyway`);
    if (!force && live.length) {
      throw new ConfigError("down", `refused: ${live.length === 1 ? "an instance serves" : "instances serve"} here: ${live.map((l) => l.describe).join(", ")}; stop ${live.length === 1 ? "it" : "them"} first, or --force (they then exit 1 within a second)`);
    }
    removePinned(bpffs);
    const also = live.length ? `; ${live.map((l) => l.describe).join(", ")} will notice within a second and exit 1` : "";
    emit([`removed ${dir}: nothing is steered here any more${also}`], { removed: true, dir, instances: live.map(({ pid, supervisor, services }) => ({ pid, supervisor, services })) });
    return 0;
  });
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

function act(command: Exclude<ControlCommand, { kind: "down" | "upgrade-program" }>, reg: Registry, pinned: Pinned, emit: (human: string[], json: unknown) => void): number {
  const named = (name: string) => {
    const s = reg.find(name);
    if (!s) throw new ConfigError(`service ${name}`, "no such service (see edgeproxy status)");
    return s;
  };
  switch (command.kind) {
    case "status":
      return status(reg, pinned, emit);
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
      const svc = command.kind === "bind" ? reg.ensure(command.service, command.takeOver || undefined) : named(command.service);
      const list = command.prefixes.flatMap((prefix) => command.ports.map((r) => ({ service: svc.id, protocol: command.protocol, prefix, lo: r.lo, hi: r.hi })));
      const before = reg.bindings(svc.id);
      let changed = 0;
      for (const b of list) if (command.kind === "bind" ? reg.addBinding(b) : reg.removeBinding(b)) changed++;
      if (command.kind === "unbind" && changed === 0) throw new ConfigError("unbind", `service ${svc.name} has no such binding (see edgeproxy bindings)`);
      let skipped: string[];
      try {
        skipped = reg.commit().skipped;
      } catch (e) {
        reg.setBindings(svc.id, before);
        if (!existing) reg.remove(svc.id);
        throw e;
      }
      const what = `${command.protocol} ${command.prefixes.map(formatPrefix).join(",")} ${command.ports.map(formatPorts).join(",")}`;
      const human = [`${command.kind === "bind" ? "bound" : "unbound"} ${what} ${command.kind === "bind" ? "to" : "from"} service ${svc.name}`];
      if (skipped.length) human.push(`left alone, already listening: ${skipped.join(", ")} (--take-over steers them too)`);
      emit(human, { service: svc.name, changed, skipped });
      return 0;
    }
    case "register": {
      const fd = takeFd(command.pid, command.fd);
      try {
        const kind = socketKind(fd, `process ${command.pid} fd ${command.fd}`);
        if (!kind.listening) throw new ConfigError("register", `process ${command.pid} fd ${command.fd} is a TCP socket that is not listening`);
        const svc = reg.ensure(command.service);
        const owner = { pid: command.pid, fd: command.fd };
        // A dual-stack IPv6 socket takes IPv4 lookups too (bpf_sk_assign allows it).
        const families: (4 | 6)[] = kind.family === 4 ? [4] : kind.dualStack ? [4, 6] : [6];
        for (const family of families) reg.setSocket(svc.id, kind.protocol, family, fd, owner);
        reg.commit();
        emit([`service ${svc.name}: ${kind.protocol}/ipv${families.join("+ipv")} socket of process ${command.pid} (fd ${command.fd}) registered`], {
          service: svc.name,
          protocol: kind.protocol,
          families,
          ...owner,
        });
        return 0;
      } finally {
        libc.close(fd); // the SOCKMAP holds its own reference
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

function status(reg: Registry, pinned: Pinned, emit: (human: string[], json: unknown) => void): number {
  const d = pinned.dispatcher;
  const sockets = reg.sockets();
  const bindings = reg.bindingsByService();
  const services = reg.services().map((s) => ({
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
    ],
    { loaded: true, dir: pinned.dir, tag: pinned.tag, binaryTag: pinned.binaryTag, services, unmatchedLookups: unmatched },
  );
  return 0;
}
