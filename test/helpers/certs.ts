// Self-signed test certificates as files, for the tests that hand edgeproxy
// --tls-cert/--tls-key (or tls_cert/tls_key) paths. One generator for unit and
// kernel tests: testPem (src/config/tls-fixture.ts) makes the pair with openssl.
import { afterAll, beforeAll } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testPem } from "../../src/config/tls-fixture";

export type CertOptions = NonNullable<Parameters<typeof testPem>[0]>;
/** Paths of a certificate file and its key file. */
export interface CertPaths {
  cert: string;
  key: string;
}

/**
 * A self-signed certificate (`o`: CN, SAN DNS names, ec P-256 or rsa) written
 * to `into`: a directory (its cert.pem and key.pem) or the two paths. The key
 * file is 0600, as openssl writes it.
 */
export function writeCert(into: string | CertPaths, o: CertOptions = {}): CertPaths {
  const to = typeof into === "string" ? { cert: join(into, "cert.pem"), key: join(into, "key.pem") } : into;
  const p = testPem(o);
  writeFileSync(to.key, p.key, { mode: 0o600 });
  writeFileSync(to.cert, p.cert);
  return to;
}

export interface CertFiles extends CertPaths {
  /** The calling file's temporary directory (its tests may put other files there). */
  readonly dir: string;
  /** Another certificate in the directory: `name`.crt and `name`.key. */
  make(name: string, o?: CertOptions): CertPaths;
}

/**
 * A temporary directory for the calling test file, made before its tests with
 * a certificate in cert.pem/key.pem (`o`; `pair: false`: none) and removed
 * after them. Read `dir`, `cert` and `key` inside tests or later hooks: they are
 * set by the beforeAll this registers.
 */
export function certFiles(o: CertOptions & { prefix?: string; pair?: boolean } = {}): CertFiles {
  const { prefix = "ep-certs-", pair = true, ...pem } = o;
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
    if (pair) writeCert(dir, pem);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const inDir = (name: string) => {
    if (!dir) throw new Error("certFiles: read before its beforeAll ran");
    return join(dir, name);
  };
  return {
    get dir() {
      return inDir("");
    },
    get cert() {
      return inDir("cert.pem");
    },
    get key() {
      return inDir("key.pem");
    },
    make: (name, c = {}) => writeCert({ cert: inDir(`${name}.crt`), key: inDir(`${name}.key`) }, c),
  };
}
