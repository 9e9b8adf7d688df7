/*
 * `edgeproxy help [COMMAND]`, `COMMAND --help`, `edgeproxy man` and
 * `edgeproxy completion bash|zsh`: all made from the flag tables the parsers
 * read (SERVE_FLAGS, CONTROL_FLAGS, INSTANCE_FLAGS, LIVE_FLAGS), so what help,
 * the man page and completion offer is what the parsers accept.
 */
import { ConfigError } from "../errors";
import { VERSION } from "../version";
import { CONTROL_FLAGS } from "./control";
import { flagLabel, flagLines, type FlagSpec } from "./flags";
import { CHOOSE_INSTANCE, INSTANCE_FLAGS } from "./instance-commands";
import { LIVE_FLAGS } from "./live";
import { SERVE_FLAGS, SERVE_NOTES, SERVE_SUMMARY, USAGE } from "./serve-flags";

export interface CommandDef {
  readonly name: string;
  /** What follows `edgeproxy NAME` in the usage line (flags are listed below it). */
  readonly args: string;
  /** One line, for the command list. */
  readonly summary: string;
  /** More, when there is more to say. */
  readonly text?: string;
  readonly flags: readonly FlagSpec[];
  /** Completion of positional arguments: these words. */
  readonly words?: readonly string[];
}

const HELP_FLAG: FlagSpec = { name: "--help", short: "-h", help: "this text" };
const withHelp = (flags: readonly FlagSpec[]) => [...flags, HELP_FLAG];
const PINNED = "Acts on the pinned dispatcher of this network namespace (no serve process needed).";
const LIVE = "Talks to a running serve through its admin socket: the only live instance, --instance NAME (its socket is /run/edgeproxy/NAME.sock by default), or --admin PATH.";

/** Every command, in the order help lists them. */
export const COMMANDS: readonly CommandDef[] = [
  { name: "serve", args: "[options]", summary: "run the proxy (the default command)", flags: SERVE_FLAGS },
  {
    name: "status",
    args: "[SERVICE]",
    summary: "services: bindings, sockets, origins with health, open connections, rates, counters",
    text: `${PINNED} Also lists the instances the pins record (live or not; --json: instances) and the serves answering in $EDGEPROXY_RUN_DIR or /run/edgeproxy (--json: answering) and, from their admin API, each service's mode, origins with health, open connections and rates (the instance's once-a-second reading: up to a second old); a service no live instance runs shows what the pins say, the rest '-' (null in --json). SERVICE: only that service. --json: counters are JSON numbers (decimal strings above 2^53).`,
    flags: withHelp(CONTROL_FLAGS.status),
  },
  { name: "bindings", args: "", summary: "every binding (service, protocol, prefix, ports)", text: PINNED, flags: withHelp(CONTROL_FLAGS.bindings) },
  {
    name: "bind",
    args: "SERVICE tcp|udp PREFIXES PORTS",
    summary: "steer, e.g. bind echo tcp 127.0.0.1/32 7,77,777",
    text: `${PINNED} SERVICE must exist (--create makes it); a binding overlapping a live instance's is refused.`,
    flags: withHelp(CONTROL_FLAGS.bind),
  },
  { name: "unbind", args: "SERVICE tcp|udp PREFIXES PORTS", summary: "stop steering those", text: PINNED, flags: withHelp(CONTROL_FLAGS.unbind) },
  { name: "register", args: "SERVICE --pid PID --fd FD", summary: "steer SERVICE to another process's socket", text: PINNED, flags: withHelp(CONTROL_FLAGS.register) },
  { name: "unregister", args: "SERVICE", summary: "drop SERVICE's sockets (its bindings then refuse)", text: PINNED, flags: withHelp(CONTROL_FLAGS.unregister) },
  {
    name: "down",
    args: "",
    summary: "remove all of edgeproxy's kernel state in this network namespace",
    text: `${PINNED} Refused while an instance serves through it (naming it); --force removes it anyway and each live instance exits 1 within a second.`,
    flags: withHelp(CONTROL_FLAGS.down),
  },
  {
    name: "upgrade-program",
    args: "",
    summary: "switch the pinned dispatcher to this edgeproxy's BPF program (or --object FILE's), keeping its maps and steering",
    text: PINNED,
    flags: withHelp(CONTROL_FLAGS["upgrade-program"]),
  },
  { name: "reload", args: "", summary: "make a running serve re-read its config file", text: LIVE, flags: withHelp(INSTANCE_FLAGS.reload) },
  { name: "upgrade", args: "", summary: "start a successor of a running serve, then drain it", text: LIVE, flags: withHelp(INSTANCE_FLAGS.upgrade) },
  { name: "drain", args: "", summary: "a running serve stops taking connections, lets open ones finish, exits", text: LIVE, flags: withHelp(INSTANCE_FLAGS.drain) },
  { name: "health", args: "", summary: "exit 0 if a running serve's admin API answers /healthz (probes)", text: LIVE, flags: withHelp(INSTANCE_FLAGS.health) },
  {
    name: "dashboard",
    args: "",
    summary: "serve a running serve's dashboard on http://127.0.0.1:PORT/ (GET only; Ctrl-C stops it)",
    text: LIVE,
    flags: withHelp(LIVE_FLAGS.dashboard),
  },
  {
    name: "top",
    args: "",
    summary: "services, rates and origin health of a running serve, refreshed every second (q or Ctrl-C quits)",
    text: LIVE,
    flags: withHelp(LIVE_FLAGS.top),
  },
  { name: "help", args: "[COMMAND]", summary: "this overview, or a command's help", flags: [], words: [] },
  { name: "man", args: "", summary: "print the man page (roff): edgeproxy man > edgeproxy.1", flags: [] },
  { name: "completion", args: "bash|zsh", summary: "print a shell completion script", flags: [], words: ["bash", "zsh"] },
  { name: "version", args: "", summary: "print the version (also -V, --version)", flags: [] },
];

export const HELP_COMMANDS = ["help", "man", "completion", "version"] as const;

const byName = new Map(COMMANDS.map((c) => [c.name, c]));

function wrap(text: string, width = 100, indent = ""): string[] {
  const out: string[] = [];
  let line = "";
  for (const w of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + w.length > width) {
      out.push(line);
      line = indent;
    }
    line += line.trim() ? ` ${w}` : (line ? "" : indent) + w;
  }
  if (line.trim()) out.push(line);
  return out;
}

function synopsis(c: CommandDef): string {
  return c.name === "serve" ? "edgeproxy [serve] [options]" : `edgeproxy ${c.name}${c.args ? ` ${c.args}` : ""}${c.flags.length ? " [options]" : ""}`;
}

/** `edgeproxy help`: serve's help, then every command. */
export function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length)) + 2;
  return [
    USAGE,
    "",
    "Commands (edgeproxy help COMMAND, or edgeproxy COMMAND --help, for each one's options):",
    ...COMMANDS.flatMap((c) => wrap(c.summary, 100 - width - 2).map((l, i) => `  ${(i ? "" : c.name).padEnd(width)}${l}`)),
    "",
  ].join("\n");
}

/** `edgeproxy help COMMAND` and `edgeproxy COMMAND --help`. */
export function commandHelp(name: string): string {
  const c = byName.get(name);
  if (!c) throw new ConfigError(`help ${name}`, `unknown command (commands: ${COMMANDS.map((x) => x.name).join(", ")})`);
  if (c.name === "serve") return `${USAGE}\n`;
  const lines = [`Usage: ${synopsis(c)}`, "", ...wrap(c.summary), ...(c.text ? ["", ...wrap(c.text)] : [])];
  if (c.flags.length) lines.push("", "Options:", ...flagLines(c.flags), "", "Every --flag VALUE may also be written --flag=VALUE.");
  return `${lines.join("\n")}\n`;
}

/** Was help asked for in `args` (a command's own argv, after its name)? */
export const wantsHelp = (args: readonly string[]) => args.some((a) => a === "--help" || a === "-h");

// roff: a backslash is \e, a hyphen in a flag \-, and a line must not start with . or '.
const roff = (s: string) => s.replace(/\\/g, "\\e").replace(/^([.'])/gm, "\\&$1");
const roffFlag = (s: string) => roff(s).replace(/-/g, "\\-");

function manFlag(f: FlagSpec): string {
  const names = [f.short, f.name].filter((n): n is string => n !== undefined).map(roffFlag).join(", ");
  return f.value ? `.BI "${names} " "${roff(f.value)}"` : `.B "${names}"`;
}

/** The man page, edgeproxy(1), in roff (man -l renders it). */
export function manPage(): string {
  const out = [
    `.TH EDGEPROXY 1 "" "edgeproxy ${roff(VERSION)}" "User Commands"`,
    ".SH NAME",
    "edgeproxy \\- steer port ranges and prefixes with BPF sk_lookup and proxy them to origins",
    ".SH SYNOPSIS",
    ...COMMANDS.flatMap((c) => [".B edgeproxy", c.name === "serve" ? "[\\fBserve\\fR] [\\fIoptions\\fR]" : `\\fB${roffFlag(c.name)}\\fR${c.args ? ` \\fI${roff(c.args)}\\fR` : ""}${c.flags.length ? " [\\fIoptions\\fR]" : ""}`, ".br"]),
    ".SH DESCRIPTION",
    roff(SERVE_SUMMARY.replace(/\n/g, " ")),
    ".PP",
    "Every \\fB\\-\\-flag\\fR \\fIVALUE\\fR may also be written \\fB\\-\\-flag\\fR=\\fIVALUE\\fR.",
    ".SH COMMANDS",
  ];
  for (const c of COMMANDS) {
    out.push(`.SS ${roffFlag(c.name)}`, roff(c.summary));
    if (c.text) out.push(".PP", roff(c.text));
    for (const f of c.flags) {
      out.push(".TP", manFlag(f), roff(f.help ?? ""));
    }
  }
  out.push(".SH NOTES", ...SERVE_NOTES.split("\n").filter(Boolean).flatMap((l) => [roff(l), ".PP"]).slice(0, -1));
  out.push(".SH FILES", ".TP", ".I /run/edgeproxy/INSTANCE.sock", "a serve's admin socket ($EDGEPROXY_RUN_DIR moves it)", ".TP", ".I /sys/fs/bpf/edgeproxy", "the pinned dispatcher state ($EDGEPROXY_BPFFS moves the mount)");
  return `${out.join("\n")}\n`;
}
