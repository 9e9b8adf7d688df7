// The PROXY-header stage of an http service on the engine (accept_proxy): a
// connection from a trusted load balancer must start with a PROXY v1 or v2
// header naming the client, complete within proxy_header_timeout; only then
// is the client admitted (per-client limits, for the client it names) and its
// HTTP connection served (HttpEngine.serve). As Bun's pipeline does it
// (src/proxy/pipeline.ts), with its parser (HeaderReader, src/proxy/inbound.ts);
// the tcp engine's is header.ts.
import { formatAddress } from "../config/address";
import type { SourceKey } from "../dispatcher/sourceabi";
import { endNames, HeaderReader, type Ends } from "../proxy/inbound";
import type { HttpEngine } from "./http";
import type { EngineSocket } from "./httpsocket";
import type { EngineHttp, HeaderStage } from "./httpspec";

const EMPTY = new Uint8Array(0);

/**
 * The header complete within proxy_header_timeout, else the connection is
 * reset (§2.1: "abort the connection as soon as possible"); counted as Bun's
 * pipeline counts it.
 */
export function startHeader(engine: HttpEngine, svc: EngineHttp, s: EngineSocket, own: Ends): void {
  const reader = new HeaderReader();
  const st: HeaderStage = { reader, ends: own, deadline: engine.clock.now + svc.ctx.config.deadlines.proxyHeaderMs, startedAt: performance.now() };
  svc.headers.set(s, st);
  const refuse = (reason: string) => {
    svc.headers.delete(s);
    st.event ??= "close";
    st.why ??= `proxy_header_${reason}`;
    svc.ctx.stats.proxyHeaderError(reason);
    s.terminate();
  };
  s.events = {
    data: (chunk) => {
      const r = reader.feed(chunk, own);
      if (r === "more") return;
      if ("error" in r) return refuse(r.error);
      svc.headers.delete(s);
      // UNKNOWN and LOCAL hand back the socket's own ends: the balancer itself.
      let tracked: string | undefined;
      let source: SourceKey | undefined | null;
      if (r.ends !== own) {
        engine.clients.seen((tracked = formatAddress(r.ends.client.addr)));
        source = svc.admitSource(r.ends.client, true);
        if (source === null) {
          // Its line names the client the header named (as Bun's pipeline's).
          st.ends = r.ends;
          st.event = "limited";
          st.why = "source_limit";
          return engine.limited(s, tracked);
        }
      }
      // The rest of this read is the client's first bytes; more may follow in this same read loop.
      engine.serve(svc, s, r.ends, tracked, r.rest.length ? r.rest : EMPTY, source ?? undefined);
    },
    drain: () => {},
    // A balancer's TCP health check connects and closes without a byte: not an error.
    end: () => {
      if (!reader.started) return s.end();
      st.why = "client_fin";
      refuse("truncated");
    },
    close: (error) => {
      // Still in the stage (nothing counted it yet): a half header cut by the balancer's RST is a truncated one, as on Bun's path.
      if (svc.headers.delete(s) && reader.started) svc.ctx.stats.proxyHeaderError("truncated");
      svc.logEnded(endNames(st.ends), st.startedAt, st.event ?? "close", st.why ?? (error ? "client_reset" : "client_close"));
      engine.admission!.leave();
      if (svc.retired) engine.gone(svc);
    },
  };
}

/** The sweep found the header incomplete past its deadline: counted, and the connection reset. */
export function expireHeader(svc: EngineHttp, s: EngineSocket, h: HeaderStage): void {
  svc.headers.delete(s);
  h.event ??= "timeout";
  h.why ??= "proxy_header_timeout";
  svc.ctx.stats.proxyHeaderError("timeout");
  svc.ctx.stats.deadlineExpired("proxy_header");
  s.terminate();
}
