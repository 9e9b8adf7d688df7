import { expect, test } from "bun:test";
import { parseArgs, SERVE_FLAGS } from "../src/cli/args";
import { completion } from "../src/cli/completion";
import { CONTROL_COMMANDS, parseControl } from "../src/cli/control";
import { commandHelp, COMMANDS, manPage, wantsHelp } from "../src/cli/help";
import { INSTANCE_COMMANDS, parseInstanceCommand, type InstanceCommand } from "../src/cli/instance-commands";
import { LIVE_COMMANDS, parseLive, type LiveCommand } from "../src/cli/live";
import { ADMIN_FIELDS, BIND_FIELDS, CERTIFICATE_FIELDS, parseConfig, SERVICE_FIELDS, TOP_FIELDS } from "../src/config/file";
import { EJECT_FIELDS, HEALTH_FIELDS, ROUTE_FIELDS } from "../src/config/pool-file";
import { SNI_ROUTE_FIELDS } from "../src/config/sni";
import { fdBudget } from "../src/server/server";
import { invocations, README, readmeBlocks } from "./helpers/readme";

/*
 * The README's examples, checked with the project's own parsers, so they
 * cannot drift from the code: every ```toml block is a config parseConfig
 * accepts (and whose connection/flow caps fit Debian's default open-file
 * limit, 1024); every `edgeproxy ...` line in a ```sh block parses as the CLI
 * (src/cli/main.ts) would parse it; the configuration reference names every
 * key the parser knows and no other. Pure parsing: no kernel, no network.
 *
 * A block preceded by `<!-- fragment ... -->` (toml) is only syntax- and
 * key-checked; one preceded by `<!-- synopsis ... -->` (sh, with placeholders)
 * is skipped. Both are counted, so a new marker is a deliberate change here.
 * test/readme-run.test.ts runs the command lines in a network namespace.
 */

const all = readmeBlocks();
const toml = all.filter((b) => b.lang === "toml");
const sh = all.filter((b) => b.lang === "sh");
/** Debian's default soft RLIMIT_NOFILE: what an operator who copies the example has. */
const DEFAULT_NOFILE = 1024;

/** Parse a command line as src/cli/main.ts does, without running it. */
function parseCommandLine(args: readonly string[]): void {
  const [first, ...rest] = args;
  if (first !== undefined && COMMANDS.some((c) => c.name === first) && wantsHelp(rest)) return void commandHelp(first);
  if (first === "help") {
    expect(rest.length).toBeLessThanOrEqual(1);
    if (rest[0] !== undefined) commandHelp(rest[0]);
    return;
  }
  if (first === "man") return void manPage();
  if (first === "completion") {
    expect(rest.length).toBe(1);
    return void completion(rest[0]);
  }
  if ((INSTANCE_COMMANDS as readonly string[]).includes(first ?? "")) return void parseInstanceCommand(first as InstanceCommand, rest);
  if ((LIVE_COMMANDS as readonly string[]).includes(first ?? "")) return void parseLive(first as LiveCommand, rest);
  if ((CONTROL_COMMANDS as readonly string[]).includes(first ?? "")) return void parseControl(args);
  const command = parseArgs(args);
  if (command.kind === "serve") fdBudget(command.config, DEFAULT_NOFILE);
}

test("the README opens with the two commands (CI and the brief require them)", () => {
  const first = all[0]!;
  expect(first.lang).toBe("sh");
  expect(first.text).toContain("bash build/setup.sh && bun run build && ./edgeproxy");
  expect(first.text).toContain("bash build/setup.sh && bun run test");
});

test("every toml block parses with the config parser and fits the default open-file limit", () => {
  expect(toml.length).toBeGreaterThanOrEqual(2);
  const fragments = toml.filter((b) => b.marker === "fragment");
  const known = new Set([...TOP_FIELDS, ...SERVICE_FIELDS, ...ADMIN_FIELDS, ...BIND_FIELDS, ...HEALTH_FIELDS, ...EJECT_FIELDS, ...ROUTE_FIELDS, ...SNI_ROUTE_FIELDS, ...CERTIFICATE_FIELDS]);
  for (const b of toml) {
    const where = `README.md:${b.line}`;
    if (b.marker === "fragment") {
      // Syntax and key names only: a fragment is not a whole config.
      const keys = (v: unknown): string[] =>
        v && typeof v === "object" ? Object.entries(v).flatMap(([k, x]) => [k, ...(Array.isArray(x) ? x.flatMap(keys) : keys(x))]) : [];
      for (const k of keys(Bun.TOML.parse(b.text))) expect(`${where}: ${k} ${known.has(k)}`).toBe(`${where}: ${k} true`);
      continue;
    }
    let config;
    try {
      config = parseConfig(b.text, where, { readFile: (p) => { throw new Error(`${where} reads ${p}: examples must not need files`); } });
    } catch (e) {
      throw new Error(`${where}: ${(e as Error).message}`);
    }
    expect(() => fdBudget(config, DEFAULT_NOFILE)).not.toThrow();
  }
  // One fragment (the TLS section's certificates: a whole config would need the files); a new one is a deliberate change to this count.
  expect(fragments.length).toBe(1);
});

test("every edgeproxy command line in the sh blocks parses", () => {
  const synopses = sh.filter((b) => b.marker === "synopsis");
  // The control commands' synopsis (SERVICE, PREFIXES … placeholders) is the one skipped block.
  expect(synopses.length).toBe(1);
  const lines = sh.filter((b) => b.marker !== "synopsis").flatMap(invocations);
  expect(lines.length).toBeGreaterThanOrEqual(15);
  for (const { line, args } of lines) {
    try {
      parseCommandLine(args);
    } catch (e) {
      throw new Error(`README.md:${line}: edgeproxy ${args.join(" ")}: ${(e as Error).message}`);
    }
  }
});

/** The "## Configuration reference" section, up to the next ## heading. */
function referenceSection(): string {
  const start = README.indexOf("\n## Configuration reference\n");
  expect(start).toBeGreaterThan(0);
  const end = README.indexOf("\n## ", start + 1);
  return README.slice(start, end < 0 ? undefined : end);
}

test("the configuration reference lists exactly the keys the parser knows", () => {
  const documented = new Set<string>();
  for (const row of referenceSection().split("\n").filter((l) => l.startsWith("| `"))) {
    const cell = row.split("|")[1]!;
    for (const m of cell.matchAll(/`([a-z0-9_.]+)`/g)) documented.add(m[1]!);
  }
  const known = new Set([
    ...TOP_FIELDS,
    ...SERVICE_FIELDS,
    ...ADMIN_FIELDS.map((k) => `admin.${k}`),
    ...HEALTH_FIELDS.map((k) => `health.${k}`),
    ...EJECT_FIELDS.map((k) => `eject.${k}`),
    ...BIND_FIELDS.map((k) => `bind.${k}`),
    ...ROUTE_FIELDS.map((k) => `route.${k}`),
    ...SNI_ROUTE_FIELDS.map((k) => `route.${k}`),
    ...CERTIFICATE_FIELDS.map((k) => `certificate.${k}`),
  ]);
  expect([...documented].filter((k) => !known.has(k)).sort()).toEqual([]);
  expect([...known].filter((k) => !documented.has(k)).sort()).toEqual([]);
});

test("the configuration reference names only real flags, and every serve flag", () => {
  const section = referenceSection();
  const mentioned = new Set([...section.matchAll(/(?<![\w-])(--[a-z][a-z0-9-]*[a-z0-9])/g)].map((m) => m[1]!));
  const flags = new Set(SERVE_FLAGS.map((f) => f.name));
  expect([...mentioned].filter((f) => !flags.has(f)).sort()).toEqual([]);
  expect([...flags].filter((f) => !mentioned.has(f)).sort()).toEqual([]);
});

test("every link to a section of the README points at a heading", () => {
  const slug = (h: string) => h.trim().toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-");
  const anchors = new Set(README.split("\n").filter((l) => /^#{1,4} /.test(l)).map((l) => slug(l.replace(/^#+ /, ""))));
  const links = [...README.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]!);
  expect(links.filter((a) => !anchors.has(a))).toEqual([]);
  // The contents list every ## section.
  const contents = README.slice(README.indexOf("\n## Contents\n"), README.indexOf("\n## ", README.indexOf("\n## Contents\n") + 1));
  for (const h of README.split("\n").filter((l) => l.startsWith("## ") && l !== "## Contents")) expect(contents).toContain(`(#${slug(h.slice(3))})`);
});
