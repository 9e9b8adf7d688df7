// http services from edgeproxy.toml: routes parsed by the config code reach
// the data plane, steered by sk_lookup, with the admin API's figures.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EdgeproxyProcess } from "./helpers/edgeproxy";
import { proxyFixture } from "./helpers/fixture";
import { httpOrigin, parseReply } from "./helpers/http";
import { exchange, text } from "./helpers/net";

const f = proxyFixture();

describe("http from a config file", () => {
  test("[[service.route]] by host and path, first_byte_timeout, and the figures in /status", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ep-http-config-"));
    try {
      const api = httpOrigin("127.0.0.1", "api");
      const www = httpOrigin("127.0.0.1", "www");
      const wwwAlt = httpOrigin("127.0.0.1", "www on 8443");
      const fallback = httpOrigin("127.0.0.1", "fallback");
      const silent = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      f.servers.push(api.listener, www.listener, wwwAlt.listener, fallback.listener, silent);
      const file = join(dir, "edgeproxy.toml");
      const admin = join(dir, "admin.sock");
      writeFileSync(
        file,
        `[admin]\nsocket = "${admin}"\n\n[[service]]\nname = "web"\nmode = "http"\norigin = "127.0.0.1:${fallback.port}"\nfirst_byte_timeout = "300ms"\n\n` +
          `[[service.bind]]\nprefixes = ["192.0.2.0/24", "2001:db8::/64"]\nports = ["80", "8000-8999"]\n\n` +
          `[[service.route]]\nhost = "www.example:8443"\norigin = "127.0.0.1:${wwwAlt.port}"\n\n` +
          `[[service.route]]\nhost = "www.example"\norigin = "127.0.0.1:${www.port}"\n\n` +
          `[[service.route]]\npath = "/api"\norigin = "127.0.0.1:${api.port}"\n\n` +
          `[[service.route]]\npath = "/slow"\norigin = "127.0.0.1:${silent.port}"\n\n` +
          `[[service.route]]\npath = "/about"\n`,
      );
      f.ep = await EdgeproxyProcess.start(["serve", "--config", file]);
      const get = async (host: string, port: number, hostHeader: string, path: string) =>
        parseReply(text(await exchange(host, port, `GET ${path} HTTP/1.1\r\nHost: ${hostHeader}\r\nConnection: close\r\n\r\n`, 5000)));
      expect((await get("192.0.2.1", 80, "WWW.example", "/api/x")).body).toBe("www");
      // A route with a port takes only requests for that port, as the client dialled it.
      expect((await get("192.0.2.1", 8443, "www.example:8443", "/")).body).toBe("www on 8443");
      expect((await get("192.0.2.1", 8443, "www.example", "/")).body).toBe("www on 8443");
      expect((await get("192.0.2.1", 8444, "www.example", "/")).body).toBe("www");
      expect((await get("192.0.2.2", 8080, "other.example:8080", "/api/x")).body).toBe("api");
      expect((await get("2001:db8::3", 8999, "other.example", "/apix")).body).toBe("fallback");
      expect((await get("192.0.2.4", 80, "other.example", "/about")).body).toContain("edgeproxy");
      const slow = await get("192.0.2.5", 80, "a", "/slow");
      expect(slow.status).toBe(504);
      expect(slow.body).toBe("origin first byte timeout\n");
      // Ports outside the binding are not steered.
      expect((await exchange("192.0.2.1", 9000, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 2000)).kind).toBe("refused");

      const status = (await (await fetch("http://localhost/status", { unix: admin } as RequestInit)).json()) as { services: { name: string; http?: { responses: Record<string, number>; requests: number } }[] };
      const web = status.services.find((s) => s.name === "web")!;
      expect(web.http).toMatchObject({ requests: 8, responses: { "2xx": 7, "5xx": 1 } });
      const metrics = await (await fetch("http://localhost/metrics", { unix: admin } as RequestInit)).text();
      expect(metrics).toContain('edgeproxy_http_responses_total{service="web",class="2xx"} 7');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
