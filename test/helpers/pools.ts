// Helpers of the origin-pool tests: config files, origins that hold
// connections, a tiny authoritative DNS server.
import type { Socket, udp } from "bun";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import parsePrometheusTextFormat from "parse-prometheus-text-format";

export function workdir() {
  const dir = mkdtempSync(join(tmpdir(), "ep-pools-"));
  return { dir, admin: join(dir, "admin.sock"), file: join(dir, "edgeproxy.toml"), done: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A config file with one service (name "p") and the admin socket. `extra` is TOML inside the service table (before its sub-tables). */
export function writeConfig(w: ReturnType<typeof workdir>, s: { mode?: string; origins: string[]; balance?: string; ports: string; extra?: string }): void {
  writeFileSync(
    w.file,
    `[admin]\nsocket = "${w.admin}"\n\n[[service]]\nname = "p"\nmode = "${s.mode ?? "tcp"}"\norigins = ${JSON.stringify(s.origins)}\n` +
      `balance = "${s.balance ?? "round-robin"}"\n${s.extra ?? ""}\n[[service.bind]]\nprefixes = ["192.0.2.0/24"]\nports = "${s.ports}"\n`,
  );
}

type Family = { name: string; metrics: { labels?: Record<string, string>; value: string }[] };

/** One scrape of /metrics over the admin unix socket (reached by path, whatever fetch's namespace). */
export async function scrape(admin: string): Promise<(name: string, labels?: Record<string, string>) => number | undefined> {
  const res = await fetch("http://localhost/metrics", { unix: admin } as RequestInit);
  const families = parsePrometheusTextFormat(await res.text()) as Family[];
  return (name, labels = {}) => {
    const want: Record<string, string> = { service: "p", ...labels };
    const m = families.find((x) => x.name === name)?.metrics.find((s) => Object.entries(want).every(([k, v]) => s.labels?.[k] === v));
    return m ? Number(m.value) : undefined;
  };
}

/** A connection kept open: who greeted it (the origin's first bytes), and how to end it. */
export interface Held {
  readonly name: string;
  close(): void;
}

/** Connect and wait for the origin's greeting; the connection stays open until close(). */
export function hold(host: string, port: number, timeoutMs = 3000): Promise<Held> {
  return new Promise((resolve, reject) => {
    let sock: Socket | undefined;
    const timer = setTimeout(() => {
      sock?.terminate();
      reject(new Error(`no greeting from ${host}:${port} within ${timeoutMs}ms`));
    }, timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open(s) {
          sock = s;
        },
        data(s, d) {
          clearTimeout(timer);
          resolve({ name: d.toString(), close: () => s.end() });
        },
        close() {
          clearTimeout(timer);
          reject(new Error(`${host}:${port} closed before a greeting`));
        },
        connectError(_s, e) {
          clearTimeout(timer);
          reject(e);
        },
      },
    }).catch(reject);
  });
}

/** An origin that greets with `name` and keeps the connection open until the client ends it. */
export function holdingOrigin(name: string, port = 0) {
  return Bun.listen({ hostname: "127.0.0.1", port, socket: { open: (s) => void s.write(name), data() {}, end: (s) => void s.end() } });
}

/**
 * An authoritative DNS server for one name (RFC 1035 section 4.1): A queries
 * get `answer` with `ttl`; other types NOERROR without records; other names
 * NXDOMAIN. Counts the A queries it answered.
 */
export async function dnsServer(name: string, state: { answer: string[]; ttl: number }): Promise<{ socket: udp.Socket<"buffer">; queries: number }> {
  const out = { socket: undefined as unknown as udp.Socket<"buffer">, queries: 0 };
  out.socket = await Bun.udpSocket({
    hostname: "127.0.0.1",
    port: 53,
    socket: {
      data(s, q, port, address) {
        if (q.length < 17) return;
        // Question: labels up to a zero byte, then QTYPE and QCLASS.
        let at = 12;
        const labels: string[] = [];
        while (at < q.length && q[at]! !== 0 && labels.length < 64) {
          labels.push(q.subarray(at + 1, at + 1 + q[at]!).toString("latin1"));
          at += 1 + q[at]!;
        }
        const end = at + 5;
        if (end > q.length) return;
        const qtype = q.readUInt16BE(at + 1);
        const known = labels.join(".").toLowerCase() === name;
        const answers = known && qtype === 1 ? state.answer : [];
        if (known && qtype === 1) out.queries++;
        const head = Buffer.alloc(12);
        head.writeUInt16BE(q.readUInt16BE(0), 0); // ID
        head.writeUInt16BE(known ? 0x8580 : 0x8583, 2); // QR, AA, RD, RA; RCODE 0 or 3 (NXDOMAIN)
        head.writeUInt16BE(1, 4);
        head.writeUInt16BE(answers.length, 6);
        const rrs = answers.map((a) => {
          const rr = Buffer.alloc(16);
          rr.writeUInt16BE(0xc00c, 0); // a pointer to the question's name
          rr.writeUInt16BE(1, 2); // A
          rr.writeUInt16BE(1, 4); // IN
          rr.writeUInt32BE(state.ttl, 6);
          rr.writeUInt16BE(4, 10);
          a.split(".").forEach((x, i) => rr.writeUInt8(Number(x), 12 + i));
          return rr;
        });
        s.send(Buffer.concat([head, q.subarray(12, end), ...rrs]), port, address);
      },
    },
  });
  return out;
}
