/*
 * GET /: the live view, one self-contained page (no external assets: the
 * admin listener is often reachable only on loopback or through `edgeproxy
 * dashboard`, and a page that loads nothing else works offline and leaks
 * nothing). It polls dashboard.json once a second and draws its charts as
 * inline SVG. The page holds no figures itself, so it is served without the
 * admin token; with a token (a TCP admin listener, `edgeproxy dashboard`) it
 * is given in the URL's fragment (#token=...), which browsers never send to
 * the server, and the page passes it on as a bearer token.
 */
import type { Context, Hono } from "hono";
import type { DashboardSampler } from "./dashboard";

const STYLE = `
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:baseline}
header h1{font-size:16px;margin:0}#meta{opacity:.8}#err{color:#ffb4a9}
main{padding:12px 16px;display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:12px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:8px 12px}
section.wide{grid-column:1/-1}h2{font-size:13px;margin:0 0 6px;color:#4a5366;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px 3px 0;border-bottom:1px solid #eef0f4;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.up{color:#1a7f37}.down{color:#c62828;font-weight:600}
svg text{font:10px system-ui,sans-serif;fill:#6b7385}.legend span{display:inline-block;margin-right:10px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}.note{color:#6b7385}`;

const SCRIPT = `
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const COLORS = ["#c62828","#1565c0","#ef6c00","#6a1b9a","#2e7d32","#00838f","#ad1457","#5d4037","#455a64","#9e9d24","#283593","#d84315"];
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
function si(v, unit) {
  const u = ["", "k", "M", "G", "T"]; let i = 0;
  while (Math.abs(v) >= 1000 && i < u.length - 1) { v /= 1000; i++; }
  return (v >= 100 || i === 0 && Number.isInteger(v) ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2)) + u[i] + unit;
}
function nice(max) {
  if (max <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(max))); const f = max / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}
// One chart: series [{name, color, points: [[t, v]]}] over the window ending at now.
function chart(id, series, unit, now, window) {
  const W = 560, H = 170, L = 52, R = 8, T = 8, B = 20, w = W - L - R, h = H - T - B;
  let max = 0; for (const s of series) for (const p of s.points) max = Math.max(max, p[1]);
  const top = nice(max);
  const x = (t) => L + w * (1 - (now - t) / window), y = (v) => T + h * (1 - v / top);
  let g = "";
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4, yy = y(v).toFixed(1);
    g += '<line x1="' + L + '" x2="' + (W - R) + '" y1="' + yy + '" y2="' + yy + '" stroke="#eef0f4"/>';
    g += '<text x="' + (L - 4) + '" y="' + (+yy + 3) + '" text-anchor="end">' + si(v, unit) + '</text>';
  }
  for (const ago of [window, window / 2, 0]) {
    const label = !ago ? "now" : ago < 120 ? "-" + ago + " s" : "-" + ago / 60 + " min";
    g += '<text x="' + x(now - ago).toFixed(1) + '" y="' + (H - 6) + '" text-anchor="' + (ago === window ? "start" : ago ? "middle" : "end") + '">' + label + '</text>';
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join("");
    g += '<path d="' + d + '" fill="none" stroke="' + s.color + '" stroke-width="1.5"/>';
  }
  $(id).innerHTML = '<svg viewBox="0 0 ' + W + ' ' + H + '" width="100%" role="img">' + g + '</svg>' +
    '<div class="legend">' + series.map((s) => '<span><i style="background:' + s.color + '"></i>' + esc(s.name) + '</span>').join("") + '</div>';
}
function render(v) {
  $("meta").textContent = "edgeproxy " + v.version + " · pid " + v.pid + (v.workers > 1 ? " · " + v.workers + " workers" : "") +
    " · " + v.samples.length + " samples (" + v.intervalSeconds + " s each)";
  const pts = (f) => v.samples.map((s) => [s.t, f(s)]);
  // The charts span what was sampled, a minute at least, in whole minutes: a fresh sampler's seconds are not a sliver at the edge.
  const held = v.samples.length ? v.now - v.samples[0].t + v.intervalSeconds : 0;
  const span = Math.min(v.windowSeconds, Math.max(60, Math.ceil(held / 60) * 60));
  chart("c-conn", [{ name: "connections/s (udp: flows/s)", color: COLORS[1], points: pts((s) => s.connections) }], "/s", v.now, span);
  chart("c-bytes", [{ name: "bytes/s, both directions", color: COLORS[4], points: pts((s) => s.bytes) }], "B/s", v.now, span);
  const seen = v.reasons.filter((r) => v.samples.some((s) => s.errors[r] > 0));
  chart("c-err", seen.map((r) => ({ name: r, color: COLORS[v.reasons.indexOf(r) % COLORS.length], points: pts((s) => s.errors[r]) })), "/s", v.now, span);
  if (!seen.length) $("c-err").insertAdjacentHTML("beforeend", '<div class="note">no errors in the window</div>');
  $("services").innerHTML = '<tr><th>service</th><th>mode</th><th>bindings</th><th class="n">open</th><th class="n">conn/s</th><th class="n">bytes/s</th><th class="n">errors/s</th><th class="n">connections</th></tr>' +
    v.services.map((s) => {
      const e = Object.values(s.rates.errors).reduce((a, b) => a + b, 0);
      return '<tr><td>' + esc(s.name) + '</td><td>' + esc(s.mode ? (s.engine ? s.mode + "/" + s.engine : s.mode) : "external") + '</td><td>' + s.bindings.map(esc).join("<br>") +
        '</td><td class="n">' + s.active + '</td><td class="n">' + si(s.rates.connections, "") + '</td><td class="n">' + si(s.rates.bytes, "B") +
        '</td><td class="n">' + si(e, "") + '</td><td class="n">' + s.totals.connections + '</td></tr>';
    }).join("");
  const origins = v.services.flatMap((s) => s.origins.map((o) => [s.name, o]));
  $("origins").innerHTML = origins.length ? '<tr><th>service</th><th>origin</th><th>health</th><th class="n">endpoints up</th><th class="n">open</th></tr>' +
    origins.map(([n, o]) => '<tr><td>' + esc(n) + '</td><td>' + esc(o.origin) + '</td><td class="' + (o.healthy ? "up" : "down") + '">' +
      (o.healthy ? "healthy" : "down") + '</td><td class="n">' + o.up + "/" + o.endpoints + '</td><td class="n">' + o.active + '</td></tr>').join("")
    : '<tr><td class="note">no origin pools (external services, or built-in responders only)</td></tr>';
  const top = v.clients.top || [];
  $("clients").innerHTML = top.length ? '<tr><th>client address</th><th class="n">connections</th><th class="n">±</th><th class="n">refused</th><th class="n">bytes</th></tr>' +
    top.map((c) => '<tr><td>' + esc(c.address) + '</td><td class="n">' + c.connections + '</td><td class="n">' + (c.error ? c.error : "") +
      '</td><td class="n">' + (c.refused ? c.refused : "") + '</td><td class="n">' + si(c.bytes || 0, "B") + '</td></tr>').join("")
    : v.clients.available ? '<tr><td class="note">no connections in the window</td></tr>' : "";
  $("clients-note").textContent = v.clients.note;
}
// The samples held here: each poll asks only for the ones after the last (?since=), and the window's worth is kept.
let held = [], pid = 0;
async function poll() {
  try {
    const since = held.length ? "?since=" + held[held.length - 1].t : "";
    const res = await fetch("dashboard.json" + since, token ? { headers: { Authorization: "Bearer " + token } } : {});
    if (!res.ok) throw new Error("HTTP " + res.status + (res.status === 401 ? ": open this page as /#token=YOUR_TOKEN" : ""));
    const v = await res.json();
    if (v.pid !== pid) held = []; // another process (an upgrade): its samples only
    pid = v.pid;
    held = held.concat(v.samples).slice(-Math.round(v.windowSeconds / v.intervalSeconds));
    v.samples = held;
    render(v);
    $("err").textContent = "";
  } catch (e) { $("err").textContent = "update failed: " + e.message; }
}
poll(); setInterval(poll, 1000);`;

/** The page, whole. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgeproxy</title><style>${STYLE}</style></head>
<body><header><h1>edgeproxy</h1><span id="meta">loading…</span><span id="err"></span></header>
<main>
<section class="wide"><h2>Services</h2><table id="services"></table></section>
<section><h2>Connections per second</h2><div id="c-conn"></div></section>
<section><h2>Bytes per second</h2><div id="c-bytes"></div></section>
<section><h2>Errors per second, by reason</h2><div id="c-err"></div></section>
<section><h2>Origins</h2><table id="origins"></table></section>
<section class="wide"><h2>Busiest clients</h2><table id="clients"></table><div id="clients-note" class="note"></div></section>
</main><script>${SCRIPT}</script></body></html>
`;

/** GET / and GET /dashboard.json on an admin app (a process's, or a supervisor's over its workers). */
export function dashboardRoutes(app: Hono, sampler: DashboardSampler): void {
  // The page is not cached: an upgrade may change it.
  app.get("/", (c: Context) => c.html(DASHBOARD_HTML, 200, { "Cache-Control": "no-store" }));
  app.get("/dashboard.json", async (c: Context) => {
    const since = c.req.query("since");
    // ?since=T (Unix seconds): only the samples after T. Anything but a number is a 400, as every bad API call.
    if (since !== undefined && !/^\d+(\.\d+)?$/.test(since)) return c.json({ error: `since must be Unix seconds, not ${JSON.stringify(since.slice(0, 40))}` }, 400);
    await sampler.touch();
    return c.json(sampler.view(since === undefined ? undefined : Number(since)), 200, { "Cache-Control": "no-store" });
  });
}
