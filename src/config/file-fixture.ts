import { expect } from "bun:test";
import { ConfigError } from "../errors";
import { parseConfig } from "./file";

/*
 * What the config file's unit tests (file*.test.ts) share: the file name
 * errors start with, an admin token, a one-service config, and the one-line
 * error a config gets.
 */

export const FILE = "edgeproxy.toml";
export const TOKEN = "0123456789abcdef0123";

/** One service "web" with one bind; extra lines go into the service and the bind. */
export const web = (bind = 'prefixes = "192.0.2.0/24"\nports = 80', service = "", name = "web") =>
  `[[service]]\nname = "${name}"\n${service}\n[[service.bind]]\n${bind}\n`;

/** The ConfigError `text` gets, checked to be one line. */
export function error(text: string, readFile?: (path: string) => string): string {
  try {
    parseConfig(text, FILE, { readFile });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const message = (e as Error).message;
    expect(message).not.toContain("\n");
    return message;
  }
  throw new Error("parsed without error");
}
