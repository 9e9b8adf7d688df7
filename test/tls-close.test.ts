// A client that closes right after its TLS handshake (openssl s_time -new:
// connect, handshake, close, as a full-handshake benchmark does) must cost the
// server one handshake, not its life: by the time Bun reports the handshake
// done, such a client may be gone, and the session must not be made for it.
import { expect, test } from "bun:test";
import { certFiles } from "./helpers/certs";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin } from "./helpers/http";
import { echoOrigin } from "./helpers/net";

const f = proxyFixture();
const certs = certFiles({ prefix: "ep-tls-close-", cn: "edge.test" });

/** `openssl s_time -new` for `seconds` (4 at once, so handshakes overlap); the connections each completed. */
async function sTime(host: string, port: number, seconds: number): Promise<number[]> {
  const one = async () => {
    const p = Bun.spawn(["openssl", "s_time", "-connect", `${host}:${port}`, "-new", "-time", String(seconds)], { stdout: "pipe", stderr: "pipe" });
    const kill = setTimeout(() => p.kill("SIGKILL"), (seconds + 10) * 1000);
    const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    clearTimeout(kill);
    return Number(out.match(/^(\d+) connections in/m)?.[1] ?? 0);
  };
  return Promise.all([one(), one(), one(), one()]);
}

for (const mode of ["http", "tcp"] as const) {
  test(`${mode}: clients closing right after the handshake (s_time -new, 2 s) leave edgeproxy serving`, async () => {
    const origin = mode === "http" ? httpOrigin("127.0.0.1", "o") : { listener: echoOrigin("127.0.0.1") };
    f.servers.push(origin.listener);
    f.ep = await EdgeproxyProcess.start(["--mode", mode, "--ports", "8443", "--prefix", "192.0.2.0/24", "--origin", `127.0.0.1:${origin.listener.port}`, "--tls-cert", certs.cert, "--tls-key", certs.key]);
    const counts = await sTime("192.0.2.10", 8443, 2);
    // Every s_time got handshakes through (it stops at the first failed connection).
    for (const n of counts) expect(n).toBeGreaterThan(10);
    expect(f.ep.proc.exitCode).toBeNull();
    expect(f.ep.stderr).not.toContain("internal error");
    // And it still serves a whole connection afterwards.
    expect((await sTime("192.0.2.10", 8443, 1)).every((n) => n > 0)).toBe(true);
  }, 40_000);
}
