import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * For unit tests: a real self-signed certificate and its key, PEM (openssl
 * makes them once per call; config parsing checks the key is the
 * certificate's). `names`: its subjectAltName DNS names; `type`: P-256 or
 * RSA 2048 key. test/helpers/certs.ts writes these to files for kernel tests.
 */
export function testPem(o: { cn?: string; names?: string[]; type?: "ec" | "rsa"; days?: number } = {}): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "ep-pem-"));
  try {
    const key = join(dir, "k.pem");
    const cert = join(dir, "c.pem");
    const alg = o.type === "rsa" ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    const san = o.names?.length ? ["-addext", `subjectAltName=${o.names.map((n) => `DNS:${n}`).join(",")}`] : [];
    const when = ["-days", String(o.days ?? 30)];
    const r = Bun.spawnSync(["openssl", "req", "-x509", ...alg, "-nodes", ...when, "-subj", `/CN=${o.cn ?? "edge.test"}`, ...san, "-keyout", key, "-out", cert], { stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`openssl req: ${r.stderr.toString()}`);
    return { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
