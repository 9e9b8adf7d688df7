import { ConfigError, EdgeError } from "../errors";
import { tokenize, type FlagSpec } from "./flags";
import { askAdmin, pickInstance } from "./instances";

/** Commands on a running serve, through its admin API. */
export const INSTANCE_COMMANDS = ["reload", "upgrade", "health", "drain"] as const;
export type InstanceCommand = (typeof INSTANCE_COMMANDS)[number];

export const CHOOSE_INSTANCE: readonly FlagSpec[] = [
  { name: "--admin", value: "PATH", complete: "file", help: "the serve answering on this admin socket" },
  { name: "--instance", value: "NAME", help: "the live instance of this name (default: the only live one)" },
];
const CHOOSE = CHOOSE_INSTANCE;
/** Each command's flags (src/cli/flags.ts: `--flag VALUE` or `--flag=VALUE`). */
export const INSTANCE_FLAGS: Readonly<Record<InstanceCommand, readonly FlagSpec[]>> = {
  reload: CHOOSE,
  upgrade: [...CHOOSE, { name: "--binary", value: "PATH", complete: "file", help: "start this executable as the successor (default: the running one's)" }],
  health: CHOOSE,
  drain: CHOOSE,
};

export interface InstanceOptions {
  readonly admin?: string;
  readonly instance?: string;
  readonly binary?: string;
}

/** Parse `edgeproxy reload|upgrade|health|drain [flags]`; ConfigError (exit 2) with the usage line. */
export function parseInstanceCommand(command: InstanceCommand, args: readonly string[]): InstanceOptions {
  const specs = INSTANCE_FLAGS[command];
  const usage = `usage: edgeproxy ${command} ${specs.map((s) => `[${s.name} ${s.value}]`).join(" ")}`;
  const options: Record<string, string> = {};
  for (const t of tokenize(args, specs, command)) {
    if ("arg" in t) throw new ConfigError(`${command} ${t.arg}`, usage);
    const key = t.flag.slice(2);
    if (key in options) throw new ConfigError(`${command} ${t.flag}`, "given twice");
    options[key] = t.value!;
  }
  return options;
}

type Print = (text: string) => Promise<void>;

/** How long a POST's answer may take. */
const answerLimit = (command: InstanceCommand) => (command === "upgrade" ? 90_000 : 30_000);

/** Run one; resolves to the exit code, throws (ConfigError, EdgeError) for the CLI's reporter. */
export async function runInstanceCommand(command: InstanceCommand, options: InstanceOptions, print: Print): Promise<number> {
  // A probe that finds no serve fails (exit 1); the others are the operator's to fix (exit 2).
  const fault = command === "health" ? "internal" : "config";
  const { socket } = await pickInstance(command, options, fault);
  const ask = async (route: string, init: RequestInit): Promise<Response> => {
    try {
      return await askAdmin(socket, route, init);
    } catch (e) {
      // AbortSignal.timeout: the request went in, its answer did not come (a DOMException, whose code is 23).
      if ((e as Error).name === "TimeoutError") throw new EdgeError(command, `the admin API on ${socket} took the request but did not answer within ${answerLimit(command) / 1000} s; it may still be applying it: see its log`, "internal");
      const hint = fault === "config" ? "; is serve running with its admin API on?" : "";
      throw new EdgeError(command, `no edgeproxy admin API answers on ${socket} (${(e as { code?: string }).code ?? (e as Error).message})${hint}`, fault);
    }
  };
  const post = (route: string, body: unknown = {}) =>
    // The upgrade's answer waits for the successor (up to a minute); the others are quick.
    ask(route, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" }, signal: AbortSignal.timeout(answerLimit(command)) });
  const answer = async (res: Response) => (await res.json().catch(() => ({}))) as { error?: string; summary?: string };

  switch (command) {
    case "health": {
      const res = await ask("/healthz", {});
      if (!res.ok) {
        // The reason (e.g. "steering lost: …") is one line of text/plain; bounded, a probe's output is a log line.
        const why = (await res.text().catch(() => "")).trim().split("\n")[0]!.slice(0, 300);
        throw new EdgeError("health", `admin API on ${socket} answered HTTP ${res.status}${why ? `: ${why}` : ""}`, "internal");
      }
      await print("ok\n");
      return 0;
    }
    case "reload": {
      const res = await post("/reload");
      const body = await answer(res);
      if (!res.ok) throw new ConfigError("reload rejected, nothing changed", body.error ?? `HTTP ${res.status}`);
      await print(`reloaded${body.summary ? `: ${body.summary}` : ""}\n`);
      return 0;
    }
    case "upgrade": {
      const res = await post("/upgrade", options.binary ? { binary: options.binary } : {});
      const body = await answer(res);
      // 400: the request was bad (exit 2); otherwise the new process failed (exit 1).
      if (!res.ok) throw new EdgeError("upgrade failed, the running edgeproxy keeps serving", body.error ?? `HTTP ${res.status}`, res.status === 400 ? "config" : "internal");
      await print(`upgraded: ${body.summary ?? ""}\n`);
      return 0;
    }
    case "drain": {
      const res = await post("/drain");
      const body = await answer(res);
      if (!res.ok) throw new EdgeError("drain", body.error ?? `HTTP ${res.status}`, res.status < 500 ? "config" : "internal");
      await print(`draining: ${body.summary ?? ""}\n`);
      return 0;
    }
  }
}
