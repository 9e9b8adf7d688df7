// Parsers for the TLS scenarios' load generators: `openssl s_time` (full
// handshakes, bench/tls-handshake.ts) and `h2load` (HTTP/2 over TLS,
// bench/h2.ts). Pure, so bench/tls-parse.test.ts checks them on captured output.

export interface STimeResult {
  /** Connections s_time completed (each one TLS handshake). */
  connections: number;
  /** Connections it marked new ("*") and resumed ("r"): with -new every one must be new. */
  fresh: number;
  resumed: number;
  /** Bytes read over all connections (0 without -www). */
  bytesRead: number;
}

/**
 * `openssl s_time -new|-reuse` output. s_time prints one "*" per new and one
 * "r" per resumed connection, then "N connections in Xs; … bytes read B".
 * Its "real seconds" figure is whole seconds (time(NULL)), so the caller times
 * the run itself.
 */
export function parseSTime(raw: string): STimeResult {
  const done = raw.match(/^(\d+) connections in [\d.]+s;.*bytes read (\d+)/m);
  if (!done) throw new Error(`s_time: no "connections in" line: ${raw.trim().slice(-400) || "(no output)"}`);
  let fresh = 0;
  let resumed = 0;
  for (const line of raw.split("\n")) {
    if (!/^[*r]+$/.test(line.trim())) continue;
    for (const c of line.trim()) c === "*" ? fresh++ : resumed++;
  }
  return { connections: Number(done[1]), fresh, resumed, bytesRead: Number(done[2]) };
}

export interface H2loadResult {
  /** The measured duration ("finished in"), seconds. */
  seconds: number;
  rps: number;
  total: number;
  started: number;
  done: number;
  succeeded: number;
  failed: number;
  errored: number;
  timeout: number;
  status2xx: number;
  /** What ALPN gave the first client ("h2", "http/1.1"); undefined when h2load printed none. */
  protocol?: string;
  /** TLS version, cipher and key-exchange group the first client negotiated. */
  tls?: string;
  cipher?: string;
  tempKey?: string;
  /** The whole output, for the report's anomalies. */
  raw: string;
}

/**
 * h2load (nghttp2) output. Every client negotiates on its own; h2load prints
 * the TLS and ALPN details of the first one per thread. A server without
 * ALPN h2 makes h2load fall back to HTTP/1.1 and complete nothing.
 */
export function parseH2load(raw: string): H2loadResult {
  const fin = raw.match(/^finished in ([\d.]+)(s|ms), ([\d.]+) req\/s/m);
  const req = raw.match(/^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m);
  if (!fin || !req) throw new Error(`h2load: no "finished in" / "requests:" lines: ${raw.trim().slice(-400) || "(no output)"}`);
  const n = req.slice(1).map(Number) as [number, number, number, number, number, number, number];
  const line = (label: string) => raw.match(new RegExp(`^${label}: (.+)$`, "m"))?.[1]?.trim();
  const out: H2loadResult = {
    seconds: Number(fin[1]) / (fin[2] === "ms" ? 1000 : 1),
    rps: Number(fin[3]),
    total: n[0],
    started: n[1],
    done: n[2],
    succeeded: n[3],
    failed: n[4],
    errored: n[5],
    timeout: n[6],
    status2xx: Number(raw.match(/^status codes: (\d+) 2xx/m)?.[1] ?? 0),
    raw,
  };
  const optional = { protocol: line("Application protocol"), tls: line("TLS Protocol"), cipher: line("Cipher"), tempKey: line("Server Temp Key") };
  for (const [k, v] of Object.entries(optional)) if (v !== undefined) (out as unknown as Record<string, string>)[k] = v;
  return out;
}

export interface SClientResult {
  /** "TLSv1.3" */
  version: string;
  cipher: string;
  /** Key exchange, e.g. "X25519, 253 bits". */
  tempKey?: string;
  /** The server's signature, e.g. "ECDSA". */
  signature?: string;
  /** ALPN result; undefined for "No ALPN negotiated". */
  alpn?: string;
}

/** `openssl s_client` session summary (OpenSSL 3): what one handshake negotiated. */
export function parseSClient(raw: string): SClientResult {
  const s = raw.match(/^(?:New|Reused), (TLSv[\d.]+|SSLv3), Cipher is (\S+)/m);
  if (!s) throw new Error(`s_client: no handshake: ${raw.trim().split("\n").filter((l) => /error|errno|refused|alert/i.test(l)).join("; ").slice(0, 300) || "(no session line)"}`);
  const line = (label: string) => raw.match(new RegExp(`^${label}: (.+)$`, "m"))?.[1]?.trim();
  const out: SClientResult = { version: s[1]!, cipher: s[2]! };
  const optional = { tempKey: line("Server Temp Key"), signature: line("Peer signature type"), alpn: line("ALPN protocol") };
  for (const [k, v] of Object.entries(optional)) if (v !== undefined) (out as unknown as Record<string, string>)[k] = v;
  return out;
}

/** One line for the report: "TLSv1.3, TLS_AES_256_GCM_SHA384, X25519, ECDSA, ALPN h2". */
export const describeSClient = (r: SClientResult): string =>
  [r.version, r.cipher, r.tempKey?.replace(/, \d+ bits$/, ""), r.signature, r.alpn ? `ALPN ${r.alpn}` : "no ALPN"].filter(Boolean).join(", ");
