import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { COMMANDS } from "./help";
import { flagLabel } from "./flags";
import { MIN_KERNEL_TEXT } from "../system/environment";

const MAIN = join(import.meta.dir, "..", "main.ts");

// zsh -f cap.zsh FPATH_DIR OUTFILE LINE...: see the zsh completion test.
const ZSH_CAPTURE = String.raw`# zsh -f cap.zsh FPATH_DIR OUTFILE LINE...: type each LINE and a Tab into an interactive zsh with
# compinit, and append the edit buffer after completion to OUTFILE (a widget on ^T writes it).
zmodload zsh/zpty
local dir=$1 out=$2; shift 2
drain() { local chunk; while zpty -r -t z chunk; do :; done }
zpty z zsh -f -i
zpty -w z "fpath=($dir \$fpath); autoload -U compinit; compinit -u -D; bindkey '^I' complete-word"
zpty -w z "show() { print -r -- \"\$BUFFER\" >> $out; BUFFER=''; }; zle -N show; bindkey '^T' show"
for line in "$@"; do zpty -w -n z "$line"$'\t\C-T'; done
integer i
for (( i = 0; i < 200; i++ )); do
  drain
  [[ -f $out ]] && (( $(wc -l < $out) >= $# )) && break
  sleep 0.1
done
zpty -d z
`;

function edgeproxy(...args: string[]): { code: number; out: string; err: string } {
  const p = Bun.spawnSync(["bun", MAIN, ...args], { stdout: "pipe", stderr: "pipe", env: { ...process.env, EDGEPROXY_RUN_DIR: "/nonexistent" } });
  return { code: p.exitCode ?? -1, out: p.stdout.toString(), err: p.stderr.toString() };
}

const has = (cmd: string) => Bun.spawnSync(["sh", "-c", `command -v ${cmd}`]).exitCode === 0;

describe("help for every command", () => {
  for (const c of COMMANDS) {
    test(`${c.name} --help exits 0, lists each flag, equals help ${c.name}`, () => {
      const own = edgeproxy(c.name, "--help");
      expect(own.err).toBe("");
      expect(own.code).toBe(0);
      expect(own.out).toContain(c.name === "serve" ? "edgeproxy [serve]" : `edgeproxy ${c.name}`);
      // Each flag as the parser knows it, with its value placeholder, and its short form.
      for (const f of c.flags) expect(own.out).toContain(flagLabel(f));
      expect(edgeproxy("help", c.name)).toEqual(own);
      expect(edgeproxy(c.name, "-h").out).toBe(own.out);
    }, 60_000);
  }

  test("every flag of every command says what it does", () => {
    const silent = COMMANDS.flatMap((c) => c.flags.filter((f) => !f.help?.trim()).map((f) => `${c.name} ${f.name}`));
    expect(silent).toEqual([]);
  });

  test("help lists every command; an unknown one is one line, exit 2", () => {
    const all = edgeproxy("help");
    expect(all.code).toBe(0);
    for (const c of COMMANDS) expect(all.out).toMatch(new RegExp(`^  ${c.name} `, "m"));
    expect(edgeproxy("--help").out).toBe(all.out);
    const bad = edgeproxy("help", "nope");
    expect(bad.code).toBe(2);
    expect(bad.err.trim().split("\n")).toHaveLength(1);
    expect(edgeproxy("completion", "fish").code).toBe(2);
  }, 60_000);

  test("the kernel --help names is the one startup checks", () => {
    const serve = edgeproxy("serve", "--help").out;
    expect(serve).toContain(`Linux ${MIN_KERNEL_TEXT} or later`);
    expect(serve).not.toContain("5.9 ");
    expect(edgeproxy("man").out).toContain(`Linux ${MIN_KERNEL_TEXT} or later`);
  }, 60_000);
});

describe("man page", () => {
  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-man-"));
  const page = join(dir, "edgeproxy.1");

  test("renders with man -l and groff without a warning, every flag in it", () => {
    const man = edgeproxy("man");
    expect(man.code).toBe(0);
    writeFileSync(page, man.out);
    const groff = Bun.spawnSync(["groff", "-ww", "-z", "-man", page], { stderr: "pipe" });
    expect(groff.stderr.toString()).toBe("");
    expect(groff.exitCode).toBe(0);
    const rendered = Bun.spawnSync(["man", "-l", page], { stdout: "pipe", stderr: "pipe", env: { ...process.env, MANWIDTH: "80", MAN_KEEP_FORMATTING: "" } });
    expect(rendered.stderr.toString()).toBe("");
    // man -l on a pipe: plain text (hyphenation may split long words, so look for the flags).
    const text = rendered.stdout.toString().replace(/‐\n\s*/g, "");
    for (const c of COMMANDS) {
      expect(text).toContain(`edgeproxy ${c.name === "serve" ? "[serve]" : c.name}`);
      for (const f of c.flags) expect(text).toContain(f.name);
    }
  }, 60_000);
});

describe("shell completion", () => {
  const dir = mkdtempSync(join(tmpdir(), "edgeproxy-completion-"));

  /** COMPREPLY for the command line `words`, completing the last word. */
  function bashComplete(words: string[]): string[] {
    const script = join(dir, "edgeproxy.bash");
    const words_ = words.map((w) => `'${w}'`).join(" ");
    const p = Bun.spawnSync(["bash", "-c", `source ${script}; COMP_WORDS=(${words_}); COMP_CWORD=${words.length - 1}; _edgeproxy; printf '%s\\n' "\${COMPREPLY[@]}"`], { stdout: "pipe", stderr: "pipe" });
    expect(p.stderr.toString()).toBe("");
    return p.stdout.toString().split("\n").filter(Boolean);
  }

  test("bash: commands, each command's flags, flag values", () => {
    const bash = edgeproxy("completion", "bash");
    expect(bash.code).toBe(0);
    writeFileSync(join(dir, "edgeproxy.bash"), bash.out);
    expect(bashComplete(["edgeproxy", "st"])).toEqual(["status"]);
    expect(bashComplete(["edgeproxy", "--wor"])).toEqual(["--workers"]);
    expect(bashComplete(["edgeproxy", "serve", "--wor"])).toEqual(["--workers"]);
    expect(bashComplete(["edgeproxy", "--mode", ""]).sort()).toEqual(["http", "tcp", "udp"]);
    // --flag=VALUE, as bash splits it at the =.
    expect(bashComplete(["edgeproxy", "--mode", "=", "u"])).toEqual(["udp"]);
    expect(bashComplete(["edgeproxy", "--balance", "="]).sort()).toEqual(["hash", "least-connections", "round-robin"]);
    expect(bashComplete(["edgeproxy", "status", "--"]).sort()).toEqual(["--bpffs", "--help", "--instance", "--json"]);
    expect(bashComplete(["edgeproxy", "upgrade", "--b"])).toEqual(["--binary"]);
    expect(bashComplete(["edgeproxy", "help", "upgrade"]).sort()).toEqual(["upgrade", "upgrade-program"]);
    expect(bashComplete(["edgeproxy", "completion", ""]).sort()).toEqual(["bash", "zsh"]);
    // Every flag of every command is offered after its command.
    for (const c of COMMANDS) {
      if (!c.flags.length) continue;
      const offered = bashComplete(c.name === "serve" ? ["edgeproxy", "-"] : ["edgeproxy", c.name, "-"]);
      expect(offered.sort()).toEqual(c.flags.flatMap((f) => [f.name, ...(f.short ? [f.short] : [])]).sort());
    }
  }, 60_000);

  test("zsh: the script parses and completes under compinit", () => {
    if (!has("zsh")) {
      console.warn("zsh not installed (apt-get install zsh): zsh completion not checked");
      return;
    }
    const zsh = edgeproxy("completion", "zsh");
    expect(zsh.code).toBe(0);
    const script = join(dir, "_edgeproxy");
    writeFileSync(script, zsh.out);
    const p = Bun.spawnSync(["zsh", "-n", script], { stderr: "pipe" });
    expect(p.stderr.toString()).toBe("");
    expect(p.exitCode).toBe(0);
    // Completed as a user would: typed into an interactive zsh (on zpty's pseudo-terminal) with compinit, Tab, and the edit buffer read back.
    writeFileSync(join(dir, "cap.zsh"), ZSH_CAPTURE);
    const lines = ["edgeproxy st", "edgeproxy --wor", "edgeproxy --mode u", "edgeproxy --mode=u", "edgeproxy status --ins", "edgeproxy status --json --bp", "edgeproxy upgrade --bin", "edgeproxy completion z", "edgeproxy help upgrade-p"];
    const out = join(dir, "buffers.txt");
    const run = Bun.spawnSync(["timeout", "30", "zsh", "-f", join(dir, "cap.zsh"), dir, out, ...lines], { stdout: "pipe", stderr: "pipe" });
    expect(run.exitCode).toBe(0);
    expect(readFileSync(out, "utf8").split("\n").slice(0, -1)).toEqual([
      "edgeproxy status ",
      "edgeproxy --workers=",
      "edgeproxy --mode udp ",
      "edgeproxy --mode=udp ",
      "edgeproxy status --instance=",
      "edgeproxy status --json --bpffs=",
      "edgeproxy upgrade --binary=",
      "edgeproxy completion zsh ",
      "edgeproxy help upgrade-program ",
    ]);
  }, 60_000);
});
