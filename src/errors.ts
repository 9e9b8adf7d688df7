/**
 * Whose fault an error is, so metrics and exit codes can say so:
 * - config: the operator's flags, file or API call;
 * - kernel: the kernel refused or lacks a feature, or a privilege is missing;
 * - client / origin: a peer of the proxy misbehaved or went away;
 * - internal: a bug in edgeproxy.
 */
export type Fault = "config" | "kernel" | "client" | "origin" | "internal";

/** Base of every error edgeproxy raises on purpose: names what failed, where and whose fault. */
export class EdgeError extends Error {
  readonly fault: Fault;
  readonly where: string;

  constructor(where: string, message: string, fault: Fault, options?: { cause?: unknown }) {
    super(`${where}: ${message}`, options);
    this.name = new.target.name;
    this.where = where;
    this.fault = fault;
  }
}

/** Bad flags, config values or API input. The CLI exits 2 on these. */
export class ConfigError extends EdgeError {
  constructor(where: string, message: string) {
    super(where, message, "config");
  }
}

/**
 * The environment cannot run edgeproxy at all (no libbpf, kernel too old,
 * missing capability). The CLI prints one line and exits 2.
 */
export class EnvironmentError extends EdgeError {
  constructor(where: string, message: string) {
    super(where, message, "kernel");
  }
}

/**
 * An error as one line for a log: our own errors' message; anything else
 * (a bug) with its name and the frame that threw, so the line still points
 * at the code without a multi-line stack trace.
 */
export function errorLine(e: unknown): string {
  if (!(e instanceof Error)) return String(e).split("\n", 1)[0]!;
  const message = e.message.split("\n", 1)[0]!;
  if (e instanceof EdgeError) return message;
  const frame = e.stack?.split("\n").find((l) => /^\s+at /.test(l))?.trim();
  return `${e.name}: ${message}${frame ? ` (${frame})` : ""}`;
}
