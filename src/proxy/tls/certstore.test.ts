import { afterAll, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { certificateNames, parseTls, readCertificate, TLS_DEFAULTS, type TlsConfig } from "../../config/tls";
import { testPem } from "../../config/tls-fixture";
import { ServiceStats } from "../stats";
import { alpnWire, CertStore, pollAll } from "./certstore";

// PEMs by (made-up) path, read by parseTls as files would be.
const files = new Map<string, string>();
function pair(name: string, o: Parameters<typeof testPem>[0]) {
  const p = testPem(o);
  files.set(`/${name}.crt`, p.cert);
  files.set(`/${name}.key`, p.key);
  return { cert: `/${name}.crt`, key: `/${name}.key`, certWhere: "cert", keyWhere: "key" };
}
const read = (p: string) => {
  const t = files.get(p);
  if (t === undefined) throw Object.assign(new Error("no such file"), { code: "ENOENT" });
  return t;
};

const first = pair("first", { cn: "first.example", names: ["first.example"] });
const aRsa = pair("a-rsa", { cn: "a.example", names: ["a.example", "www.a.example"], type: "rsa" });
const aEc = pair("a-ec", { cn: "a.example", names: ["a.example", "www.a.example"] });
const wild = pair("wild", { cn: "w", names: ["*.w.example", "exact.w.example"] });
const cn = pair("cn", { cn: "CN.Example" });
const config = parseTls({ pairs: [first, aRsa, aEc, wild, cn] }, "tcp", read)!;
const stores: CertStore[] = [];
afterAll(() => stores.forEach((s) => s.close()));
const store = (c: TlsConfig = config, alpn: string[] = []) => {
  const s = new CertStore(c, "test", new ServiceStats(), alpn, () => {});
  stores.push(s);
  return s;
};

test("names: SAN DNS names; the CN only without SAN; lower case", () => {
  expect(config.certificates.map((c) => c.names)).toEqual([["first.example"], ["a.example", "www.a.example"], ["a.example", "www.a.example"], ["*.w.example", "exact.w.example"], ["cn.example"]]);
  expect(certificateNames(new X509Certificate(files.get("/cn.crt")!))).toEqual(["cn.example"]);
  expect([config.minVersion, config.ciphers]).toEqual([TLS_DEFAULTS.minVersion, TLS_DEFAULTS.ciphers]);
});

test("pick: exact beats wildcard, a wildcard is one label, case and a trailing dot do not matter, unknown names get the first", () => {
  const s = store();
  const ctx = (n: string) => s.pick(n).context;
  expect(s.pick("a.example").match).toBe("exact");
  expect(s.pick("A.EXAMPLE.").match).toBe("exact");
  expect(ctx("A.EXAMPLE.")).toBe(ctx("a.example"));
  // RSA and ECDSA with the same names: one context (BoringSSL picks per client).
  expect(ctx("www.a.example")).toBe(ctx("a.example"));
  expect(s.pick("x.w.example").match).toBe("wildcard");
  expect(s.pick("exact.w.example").match).toBe("exact");
  expect(ctx("exact.w.example")).toBe(ctx("x.w.example"));
  for (const n of ["w.example", "y.x.w.example", "nobody.example", ""]) expect(s.pick(n)).toEqual({ context: undefined, match: "default" });
  // The first certificate's own name: the default context (undefined keeps it).
  expect(s.pick("first.example")).toEqual({ context: undefined, match: "exact" });
  expect(s.pick("cn.example").match).toBe("exact");
  expect(s.options.secureContext).toBeDefined();
  expect(s.options.ALPNProtocols).toBeUndefined();
});

test("ALPN in the wire format (RFC 7301 §3.1)", () => {
  expect(alpnWire(["h2", "http/1.1"])).toEqual(Buffer.from("\x02h2\x08http/1.1"));
  expect(alpnWire([])).toBeUndefined();
  expect(store(config, ["http/1.1"]).options.ALPNProtocols).toEqual(Buffer.from("\x08http/1.1"));
});

test("parseTls: pairs, policy and the files checked", () => {
  const w = { minVersion: { value: "1.3", where: "tls_min_version" }, ciphers: { value: "ECDHE-RSA-AES128-GCM-SHA256 : ECDHE-ECDSA-AES128-GCM-SHA256", where: "tls_ciphers" } };
  const c = parseTls({ pairs: [first], ...w }, "http", read)!;
  expect([c.minVersion, c.ciphers]).toEqual(["1.3", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"]);
  expect(parseTls({ pairs: [] }, "tcp", read)).toBeUndefined();
  const bad: [Parameters<typeof parseTls>[0], string][] = [
    [{ pairs: [first], minVersion: { value: "1.1", where: "tls_min_version" } }, 'tls_min_version: "1.1" is not one of 1.2, 1.3'],
    [{ pairs: [first], ciphers: { value: "ECDHE-RSA-AES128-GCM-SHA256:BOGUS", where: "tls_ciphers" } }, 'tls_ciphers: "BOGUS" is not a cipher suite or rule BoringSSL knows'],
    [{ pairs: [], ciphers: { value: "x", where: "tls_ciphers" } }, "tls_ciphers: applies to TLS-terminating services"],
    [{ pairs: [{ ...first, key: "/a-ec.key" }] }, 'key: "/a-ec.key" is not the key of the certificate in "/first.crt"'],
    [{ pairs: [{ ...first, cert: "/none.crt" }] }, 'cert: cannot read "/none.crt": ENOENT'],
    [{ pairs: [{ ...first, key: undefined }] }, "key: is needed with the certificate"],
  ];
  for (const [s, message] of bad) expect(() => parseTls(s, "tcp", read)).toThrow(message);
  expect(() => parseTls({ pairs: [first] }, "udp", read)).toThrow("udp has no TLS");
});

test("an expired certificate is a warning line, not an error", () => {
  const lines: string[] = [];
  const c = readCertificate("/first.crt", "/first.key", read, { cert: "tls_cert", key: "tls_key" }, (l) => lines.push(l), Date.now() + 365 * 86400e3);
  expect(c.names).toEqual(["first.example"]);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^tls_cert: warning: "\/first\.crt" \(first\.example\) expired on \d{4}-/);
  readCertificate("/first.crt", "/first.key", read, { cert: "tls_cert", key: "tls_key" }, (l) => lines.push(l));
  expect(lines).toHaveLength(1);
});

test("polling: one stat per distinct file per poll, however many stores share it; nothing reloaded when no stamp changed", () => {
  const stats = new ServiceStats();
  const many = Array.from({ length: 50 }, () => new CertStore(config, "test", stats, [], () => {}));
  try {
    const calls: string[] = [];
    // The made-up paths do not exist: "missing", as each store stamped them at start.
    pollAll((f) => (calls.push(f), "missing"));
    expect(calls.sort()).toEqual(config.certificates.flatMap((c) => [c.certFile, c.keyFile]).sort());
    expect(stats.tlsCertificateReloads.size).toBe(0);
  } finally {
    for (const s of many) s.close();
  }
});
