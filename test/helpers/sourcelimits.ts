import type { Socket } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/*
 * What the per-client limits' end-to-end tests (test/source-limits*.test.ts)
 * share: a connection from a chosen client address that stays open, and
 * reading the counters back.
 */

export interface Held {
  readonly outcome: "open" | "refused" | "reset" | "timeout";
  close(): void;
}

/** A connection from `from` that proves it reached the origin (an echo) and stays open until close(). */
export function hold(host: string, port: number, from: string, preamble: Uint8Array = new Uint8Array(0), timeoutMs = 3000, say = "ping", answered: (got: string) => boolean = (got) => got === "ping"): Promise<Held> {
  return new Promise((resolve) => {
    let sock: Socket<undefined> | undefined;
    let settled = false;
    let got = "";
    const close = () => sock?.end();
    const settle = (outcome: Held["outcome"]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (outcome !== "open") sock?.terminate();
      resolve({ outcome, close });
    };
    const timer = setTimeout(() => settle("timeout"), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      ...{ localAddress: from },
      socket: {
        open(s) {
          sock = s;
          s.write(Buffer.concat([preamble, Buffer.from(say)]));
        },
        data(_s, d) {
          got += d.toString();
          if (answered(got)) settle("open");
        },
        close() {
          settle("reset");
        },
        connectError(_s, err) {
          settle((err as { code?: string }).code === "ECONNREFUSED" ? "refused" : "reset");
        },
      },
    }).catch((err) => settle(err?.code === "ECONNREFUSED" ? "refused" : "reset"));
  });
}

export async function metrics(admin: string): Promise<string> {
  return (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
}

/** Sum of the samples of `name` whose label text contains every one of `labels`. */
export function sum(text: string, name: string, ...labels: string[]): number {
  let n = 0;
  for (const m of text.matchAll(new RegExp(`^edgeproxy_${name}\\{([^}]*)\\} (\\d+)$`, "gm"))) if (labels.every((l) => m[1]!.includes(l))) n += Number(m[2]);
  return n;
}

export function adminDir(): { admin: string; done: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "ep-srclimit-"));
  return { admin: join(dir, "admin.sock"), done: () => rmSync(dir, { recursive: true, force: true }) };
}

