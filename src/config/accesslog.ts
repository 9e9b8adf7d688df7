import { ConfigError } from "../errors";
import type { AccessLogConfig } from "./service";

/*
 * The access log's settings (src/log/access.ts): top-level keys are the
 * instance-wide default, a service's own keys override them; completed here,
 * once, into each ServiceConfig.accessLog (absent: off).
 */

export const ACCESS_LOG_DEFAULTS = {
  sample: 1,
  connect: false,
  /** Queued and in-flight bytes per log file before lines are dropped (and counted). */
  bufferBytes: 1024 * 1024,
} as const;

/** What a table (top level or a service) or the command line says; undefined: not said. */
export interface AccessLogSettings {
  /** A path, "-" (stdout) or "off". */
  readonly path?: string;
  readonly sample?: number;
  readonly connect?: boolean;
  readonly bufferBytes?: number;
}

/** Check a path as given (`where` names the key or flag). */
export function checkAccessLogPath(path: string, where: string): string {
  if (path === "-" || path === "off") return path;
  if (!path.startsWith("/") || path.endsWith("/")) throw new ConfigError(where, `"${path}" must be an absolute file path, "-" (stdout) or "off"`);
  return path;
}

/** A sampling ratio: a number from 0 to 1. */
export function checkSample(v: unknown, where: string): number {
  const n = typeof v === "string" && /^\d*\.?\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== "number" || !(n >= 0 && n <= 1)) throw new ConfigError(where, `${JSON.stringify(v)} must be a number from 0 to 1 (the share of lines written)`);
  return n;
}

/** A service's log: its own settings over the instance's; undefined when off. */
export function completeAccessLog(service: AccessLogSettings, top: AccessLogSettings, instance: string | undefined): AccessLogConfig | undefined {
  const path = service.path ?? top.path ?? "off";
  if (path === "off") return undefined;
  return {
    path,
    sample: service.sample ?? top.sample ?? ACCESS_LOG_DEFAULTS.sample,
    connect: service.connect ?? top.connect ?? ACCESS_LOG_DEFAULTS.connect,
    bufferBytes: top.bufferBytes ?? ACCESS_LOG_DEFAULTS.bufferBytes,
    ...(instance !== undefined ? { instance } : {}),
  };
}
