import { describe, expect, test } from "bun:test";
import { detailOf, lateRefusal, OriginTls, OriginTlsError, reasonOf } from "./tls";

const err = (code: string) => Object.assign(new Error(code), { code });

describe("OriginTls", () => {
  test("SNI: origin_sni, else the origin's name (no trailing dot), else none for an IP literal (RFC 6066 §3)", () => {
    const plain = new OriginTls({ mode: "verify" });
    expect(plain.options("origin.example").serverName).toBe("origin.example");
    expect(plain.options("origin.example.").serverName).toBe("origin.example");
    expect(plain.options("192.0.2.1").serverName).toBe("");
    expect(plain.options("2001:db8::1").serverName).toBe("");
    const sni = new OriginTls({ mode: "verify", sni: "named.example" });
    expect(sni.options("192.0.2.1").serverName).toBe("named.example");
  });

  test("options are made once per origin host; verify rejects unauthorized, insecure does not", () => {
    const v = new OriginTls({ mode: "verify", cert: "C", key: "K" });
    expect(v.options("a.example")).toBe(v.options("a.example"));
    expect(v.options("a.example")).toEqual({ cert: "C", key: "K", serverName: "a.example", rejectUnauthorized: true });
    expect(new OriginTls({ mode: "insecure" }).options("a.example").rejectUnauthorized).toBe(false);
    expect(new OriginTls({ mode: "verify" }).id).not.toBe(new OriginTls({ mode: "verify" }).id);
  });

  test("reasons: the chain (verify), the names (name), anything else (protocol)", () => {
    expect(reasonOf(err("UNABLE_TO_VERIFY_LEAF_SIGNATURE"))).toBe("verify");
    expect(reasonOf(err("SELF_SIGNED_CERT_IN_CHAIN"))).toBe("verify");
    expect(reasonOf(err("DEPTH_ZERO_SELF_SIGNED_CERT"))).toBe("verify");
    expect(reasonOf(err("CERT_HAS_EXPIRED"))).toBe("verify");
    expect(reasonOf(err("ERR_TLS_CERT_ALTNAME_INVALID"))).toBe("name");
    expect(reasonOf(err("EPROTO"))).toBe("protocol");
    expect(reasonOf(err("ECONNRESET"))).toBe("protocol");
    expect(reasonOf(undefined)).toBe("protocol");
  });

  test("verdict: verify refuses any failure; insecure accepts certificate failures, never a broken protocol", () => {
    const v = new OriginTls({ mode: "verify" });
    const i = new OriginTls({ mode: "insecure" });
    expect(v.verdict(true, null)).toBeUndefined();
    expect(v.verdict(false, err("UNABLE_TO_VERIFY_LEAF_SIGNATURE"))).toEqual(new OriginTlsError("verify", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"));
    expect(v.verdict(false, err("ERR_TLS_CERT_ALTNAME_INVALID"))!.reason).toBe("name");
    expect(v.verdict(false, null)!.reason).toBe("protocol");
    // Bun reports an untrusted chain with success=true when not rejecting, a wrong name with success=false.
    expect(i.verdict(true, err("UNABLE_TO_VERIFY_LEAF_SIGNATURE"))).toBeUndefined();
    expect(i.verdict(false, err("ERR_TLS_CERT_ALTNAME_INVALID"))).toBeUndefined();
    expect(i.verdict(false, err("EPROTO"))!.reason).toBe("protocol");
  });

  test("an alert after our handshake is a late refusal, named by BoringSSL's reason; other errors are not", () => {
    const alert = Object.assign(new Error("error:1000045c:SSL routines:OPENSSL_internal:TLSV1_ALERT_CERTIFICATE_REQUIRED"), { code: "EPROTO" });
    expect(detailOf(alert)).toBe("TLSV1_ALERT_CERTIFICATE_REQUIRED");
    expect(lateRefusal(alert)).toEqual(new OriginTlsError("protocol", "TLSV1_ALERT_CERTIFICATE_REQUIRED"));
    expect(lateRefusal(err("ECONNRESET"))).toBeUndefined();
    expect(lateRefusal(undefined)).toBeUndefined();
    expect(detailOf(err("UNABLE_TO_GET_ISSUER_CERT"))).toBe("UNABLE_TO_GET_ISSUER_CERT");
  });
});
