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
import { instanceLines, status } from "./status";
import { jsonReplacer } from "../json";

/** The tubectl-style commands that act on the namespace's pinned dispatcher. */
export type ControlCommand =
  | { kind: "status"; service?: string }
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

const COMMON: readonly FlagSpec[] = [
  { name: "--json", help: "machine-readable output (one JSON document)" },
  { name: "--bpffs", value: "PATH", complete: "dir", help: "bpffs mount of the pinned state (default $EDGEPROXY_BPFFS or /sys/fs/bpf)" },
];
/** Each command's flags (src/cli/flags.ts: `--flag VALUE` or `--flag=VALUE`; help, man page and completion: src/cli/help.ts). */
export const CONTROL_FLAGS: Readonly<Record<(typeof CONTROL_COMMANDS)[number], readonly FlagSpec[]>> = {
  status: [...COMMON, { name: "--instance", value: "NAME", help: "only that live instance's services" }],
  bindings: COMMON,
  bind: [
    ...COMMON,
    { name: "--take-over", help: "also steer ports where another socket already listens" },
    { name: "--create", help: "make SERVICE if the pins have no such service (without it, an unknown name is refused)" },
  ],
  unbind: COMMON,
  register: [...COMMON, { name: "--pid", value: "PID", help: "the process holding the socket" }, { name: "--fd", value: "FD", help: "the socket's descriptor in that process" }],
  unregister: COMMON,
  down: [...COMMON, { name: "--force", help: "remove it even while instances serve through it (each notices within a second, drains and exits 1)" }],
  "upgrade-program": [...COMMON, { name: "--object", value: "FILE", needs: "an ELF file (a compiled bpf/dispatcher.bpf.c)", complete: "file", help: "this BPF object instead of the one built into edgeproxy" }],
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
      if (positional.length > 1) arity(1, "[SERVICE]");
      return { command: { kind, ...(positional[0] !== undefined ? { service: positional[0] } : {}) }, options };
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
    if (options.json) out(JSON.stringify(json, jsonReplacer));
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
      return status(reg, pinned, plane.instanceViews(), emit, view, command.service);
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
