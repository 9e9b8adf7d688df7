import { ConfigError } from "../errors";
import { hostName } from "../proxy/sni/hello";
import type { PoolConfig, SniRouteConfig } from "./pool";
import { parsePool, POOL_FIELDS } from "./pool-file";
import { Fields } from "./schema";

/** The keys of a tcp service's [[service.route]]: the names, and the pool's. */
export const SNI_ROUTE_FIELDS = ["sni", ...POOL_FIELDS];
const HTTP_ONLY = "host and path route http services; a tcp service's routes match the TLS server name (sni)";

/**
 * A tcp service's [[service.route]] tables: `sni` names (exact, or "*."
 * and a name for exactly one label more) and a pool of their own. Names are
 * written as the ClientHello parser reads them (lower case, one trailing dot
 * stripped) and must be unique across routes, so one name has one route.
 */
export function parseSniRoutes(raw: readonly unknown[], where: string): SniRouteConfig[] | undefined {
  if (raw.length === 0) return undefined;
  const owner = new Map<string, number>();
  return raw.map((r, i) => {
    const f = Fields.of(r, `${where}: route[${i + 1}]`, ".", SNI_ROUTE_FIELDS, { host: HTTP_ONLY, path: HTTP_ONLY });
    const texts = f.list("sni");
    if (!texts) throw f.missing("sni", 'the TLS server names this route takes, like ["a.example", "*.b.example"]');
    if (texts.length === 0) throw new ConfigError(f.at("sni"), "must not be empty");
    const names = texts.map((text) => {
      const name = sniName(text);
      if (name === undefined) throw new ConfigError(f.at("sni"), `"${text}" is not a host name, or "*." and a host name`);
      const first = owner.get(name);
      if (first !== undefined) throw new ConfigError(f.at("sni"), `"${text}" is already ${first === i ? "in this route" : `route[${first + 1}]'s`}`);
      owner.set(name, i);
      return name;
    });
    const pool: PoolConfig | undefined = parsePool(f, "tcp");
    if (!pool) throw f.missing("origins", "an sni route sends its connections to origins of its own");
    return { names, pool };
  });
}

/** "A.Example." → "a.example"; "*.B.example" → "*.b.example"; undefined for anything else. */
function sniName(text: string): string | undefined {
  const wild = text.startsWith("*.");
  const name = hostName(new TextEncoder().encode(wild ? text.slice(2) : text));
  return name === undefined ? undefined : wild ? `*.${name}` : name;
}
