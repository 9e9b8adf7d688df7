// The README's fenced blocks and shell lines, for the tests that check them
// (test/readme.test.ts parses them, test/readme-run.test.ts runs them).
import { readFileSync } from "node:fs";
import { join } from "node:path";

export const README_PATH = join(import.meta.dir, "../..", "README.md");
export const README = readFileSync(README_PATH, "utf8");

export interface Block {
  readonly lang: string;
  readonly line: number;
  readonly text: string;
  readonly marker?: string;
}

export function blocks(md: string): Block[] {
  const lines = md.split("\n");
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    const prev = lines.slice(0, start).reverse().find((l) => l.trim() !== "");
    const marker = prev ? /^<!--\s*(\w+)/.exec(prev.trim())?.[1] : undefined;
    out.push({ lang: open[1]!, line: start + 1, text: body.join("\n"), ...(marker ? { marker } : {}) });
  }
  return out;
}

/** Split a shell line into words: '…' and "…" quoting, # comments, and command separators (&&, ||, ;, |) as their own words. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'" || c === '"') {
      const end = line.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unterminated quote in: ${line}`);
      cur = (cur ?? "") + line.slice(i + 1, end);
      i = end;
    } else if (c === " " || c === "\t") {
      if (cur !== undefined) words.push(cur);
      cur = undefined;
    } else if (c === "#" && cur === undefined) {
      break;
    } else if (c === "&" || c === "|" || c === ";" || c === ">" || c === "<") {
      if (cur !== undefined) words.push(cur);
      cur = undefined;
      const two = line.slice(i, i + 2);
      const op = two === "&&" || two === "||" ? two : c;
      words.push(op);
      i += op.length - 1;
    } else {
      cur = (cur ?? "") + c;
    }
  }
  if (cur !== undefined) words.push(cur);
  return words;
}

const SEPARATORS = new Set(["&&", "||", ";", "|", "&"]);

/** Every edgeproxy invocation of a block (its arguments), with the README line it starts on. */
export function invocations(b: Block): { line: number; args: string[] }[] {
  const out: { line: number; args: string[] }[] = [];
  const lines = b.text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const first = i;
    let text = lines[i]!;
    while (/\\\s*$/.test(text) && i + 1 < lines.length) text = text.replace(/\\\s*$/, " ") + lines[++i]!;
    const words = shellWords(text);
    // Commands: runs of words between separators; a redirection ends a command's arguments.
    let cmd: string[] = [];
    const flush = () => {
      const redirect = cmd.findIndex((w) => w === ">" || w === "<");
      const argv = redirect < 0 ? cmd : cmd.slice(0, redirect);
      if (argv[0] === "edgeproxy" || argv[0] === "./edgeproxy") out.push({ line: b.line + 1 + first, args: argv.slice(1) });
      cmd = [];
    };
    for (const w of words) {
      if (SEPARATORS.has(w)) flush();
      else cmd.push(w);
    }
    flush();
  }
  return out;
}


export const readmeBlocks = (): Block[] => blocks(README);

/**
 * The command lines of a sh block: continuation lines joined, comments and
 * blank lines left out, whitespace runs made one space (the key a test
 * classifies a line by), with the README line each starts on.
 */
export function commandLines(b: Block): { line: number; command: string }[] {
  const out: { line: number; command: string }[] = [];
  const lines = b.text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const first = i;
    let text = lines[i]!;
    while (/\\\s*$/.test(text) && i + 1 < lines.length) text = text.replace(/\\\s*$/, " ") + lines[++i]!;
    const command = stripComment(text).replace(/\s+/g, " ").trim();
    if (command) out.push({ line: b.line + 1 + first, command });
  }
  return out;
}

/** A line without its # comment (a # that starts a word, outside quotes). */
function stripComment(line: string): string {
  let quote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]!))) return line.slice(0, i);
  }
  return line;
}
