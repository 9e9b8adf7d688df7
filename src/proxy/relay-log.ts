// The access log line of a tcp relay on Bun's path (relay.ts), written when
// it ends (or at its connect, with the log's `connect` option): the usual
// line (plain TCP, no SNI route) in place through the ring's LineWriter, any
// other built as text, in the order the fields always had (ServiceLog.line).
import { jsonInner, jsonOrNull, jsonString, type ServiceLog } from "../log/access";
import type { Relay } from "./relay";

/** The usual access log line's bytes besides its texts: member names and punctuation (≈ 110) and three numbers (at most 20 each). */
const LINE_FIXED = 200;

/** `r`'s line for `event` ("connect", or how it ended) to `log`, the relay's service's (sampled there). */
export function relayLine(r: Relay, log: ServiceLog, event: string): void {
  if (!log.sampled()) return;
  const e = r.names;
  const duration = Math.round(performance.now() - r.startedAt);
  if (e && r.target && !r.tls && !r.routed && event !== "connect") {
    // The usual line, written in place (LineWriter: no string for it); addresses (the kernel's text), the event
    // and numbers need no escape. Text at most 6 bytes per UTF-16 unit, numbers at most 20, the rest fixed.
    const why = r.why ?? "shutdown";
    const w = log.begin(LINE_FIXED + event.length + e.client.length + e.edge.length + 6 * (r.target.length + why.length));
    if (w === null) return;
    if (w) {
      w.raw('"protocol":"tcp","event":"').raw(event).raw('","client":"').raw(e.client).raw('","edge":"').raw(e.edge).raw('","origin":"').text(r.target);
      w.raw('","bytes_in":').int(r.bytesIn).raw(',"bytes_out":').int(r.bytesOut).raw(',"duration_ms":').int(duration).raw(',"reason":"').text(why).raw('"}');
      return log.finish();
    }
    log.line(
      `"protocol":"tcp","event":"${event}","client":"${e.client}","edge":"${e.edge}","origin":"${jsonInner(r.target)}","bytes_in":${r.bytesIn},"bytes_out":${r.bytesOut},"duration_ms":${duration},"reason":"${jsonInner(r.why ?? "shutdown")}"}`,
    );
    return;
  }
  // Built by hand, in the order the fields always had (ServiceLog.line): addresses and numbers need no escape.
  let body = `"protocol":"tcp","event":"${event}"`;
  if (e) body += `,"client":"${e.client}","edge":"${e.edge}"`;
  if (r.target) body += `,"origin":${jsonString(r.target)}`;
  body += `,"bytes_in":${r.bytesIn},"bytes_out":${r.bytesOut},"duration_ms":${duration}`;
  if (r.tls) body += `,"tls_version":${jsonOrNull(r.tls.version)},"sni":${jsonOrNull(r.tls.sni)}`;
  if (r.routed) body += `,"sni":${jsonOrNull(r.routed.sni)},"route":${jsonOrNull(r.routed.route)}`;
  if (event !== "connect") body += `,"reason":${jsonString(r.why ?? "shutdown")}`;
  log.line(`${body}}`);
}
