#!/bin/bash
# Two edgeproxy runs at the same time, each in a network namespace of its own
# on the same cores (proxies on core 0, wrk and the nginx origin on core 1),
# so the shared machine's noise hits both: variant A (the binary as given) and
# variant B (the same plus ON_ARGS), N times; prints each pair's process CPU
# per request (utime+stime of the proxy ÷ wrk's requests) and B/A.
#   bench/pair.sh BINARY tcp|http keep-alive|close N [B's extra args...]
#   e.g. bench/pair.sh ./edgeproxy http keep-alive 3 --access-log /tmp/a.log
# BINARY `nginx`: nginx is the proxy (http: a reverse proxy with bench/http.ts's forwarding headers,
# upstream keep-alive; tcp: stream), and B's `--access-log PATH` turns on nginx's own access log with
# the fields of ours (JSON, `buffer=64k` as its docs advise for busy logs; its time is per second
# where ours is per millisecond) and, as ours does with the log on, an X-Request-Id to the origin:
# what a log costs the reference proxy, in the same harness. BOTH does not apply to it.
# $BOTH: args for both runs (e.g. BOTH="--engine epoll"); $BIN_B: another binary for B (an A/B of two builds).
# 5 s of warm-up in the measured mode, then 5 s measured (WARM, SECS); cores: PROXY_CORE (0) and LOAD_CORE (1).
# $DELAY_MS: each wrk connection waits that long before each request (wrk's script delay()), so both variants
# get about the same request rate (connections ÷ delay) well below saturation: CPU per request at a fixed
# load, not at the most each variant can take (where any per-request cost also lowers the batching).
set -euo pipefail
# utime and stime of process $1 and its children (nginx's worker is the master's child), in ticks.
cpu_of() {
  local u=0 s=0 p
  for p in $1 $(cat /proc/$1/task/*/children 2>/dev/null); do
    read -r pu ps < <(awk '{print $14, $15}' /proc/$p/stat)
    u=$((u + pu)) s=$((s + ps))
  done
  echo "$u $s"
}
# nginx as the proxy on 192.0.2.5:8080 (listening on the wildcard, so $server_addr costs a getsockname as
# our edge does), with its access log when the args say `--access-log PATH`.
nginx_proxy() {
  local out=$1 mode=$2 log=off id=""; shift 2
  if [ "${1:-}" = --access-log ]; then log="$2 edge buffer=64k"; id='proxy_set_header X-Request-Id $request_id;'; fi
  local fmt="log_format edge escape=json '{\"time\":\"\$time_iso8601\",\"service\":\"bench\",\"protocol\":\"$mode\",\"client\":\"\$remote_addr:\$remote_port\",\"edge\":\"\$server_addr:\$server_port\","
  if [ "$mode" = http ]; then
    fmt+="\"method\":\"\$request_method\",\"host\":\"\$host\",\"path\":\"\$uri\",\"status\":\$status,\"bytes_in\":\$request_length,\"bytes_out\":\$bytes_sent,\"origin\":\"\$upstream_addr\",\"ttfb_ms\":\"\$upstream_header_time\",\"duration_ms\":\"\$request_time\",\"request_id\":\"\$request_id\",\"http_version\":\"\$server_protocol\"}';"
    printf 'worker_processes 1;\ndaemon off;\npid %s.proxy.pid;\nerror_log %s.proxy.err;\nevents { worker_connections 4096; }\nhttp { %s access_log %s; keepalive_requests 100000000; upstream o { server 127.0.0.1:9000; keepalive 64; keepalive_requests 100000000; } server { listen 8080 reuseport backlog=4096; location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host; proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\\"$http_host\\""; %s } } }\n' "$out" "$out" "$fmt" "$log" "$id" > "$out.proxy.conf"
  else
    fmt+="\"origin\":\"\$upstream_addr\",\"bytes_in\":\$bytes_received,\"bytes_out\":\$bytes_sent,\"duration_ms\":\"\$session_time\",\"status\":\$status}';"
    printf '%sworker_processes 1;\ndaemon off;\npid %s.proxy.pid;\nerror_log %s.proxy.err;\nevents { worker_connections 4096; }\nstream { %s access_log %s; server { listen 8080 reuseport backlog=4096; proxy_pass 127.0.0.1:9000; } }\n' "$(stream_module)" "$out" "$out" "$fmt" "$log" > "$out.proxy.conf"
  fi
}
# Debian's nginx loads the stream module dynamically.
stream_module() {
  nginx -V 2>&1 | grep -q -- '--with-stream=dynamic' || return 0
  for d in /usr/lib/nginx/modules /usr/share/nginx/modules; do [ -f $d/ngx_stream_module.so ] && { echo "load_module $d/ngx_stream_module.so;"; return; }; done
}
if [ "${1:-}" = --inner ]; then
  shift; BIN=$1 MODE=$2 LOAD=$3 OUT=$4; shift 4
  ip link set lo up
  ip route add local 192.0.2.0/24 dev lo
  sysctl -qw net.ipv4.tcp_tw_reuse=1
  echo 10000 65535 > /proc/sys/net/ipv4/ip_local_port_range
  mount -t bpf bpf /sys/fs/bpf
  mount -t tmpfs tmpfs /run
  # Each variant's run directory is the /run just mounted for it: a caller's (the bench's) would be shared by both.
  unset EDGEPROXY_RUN_DIR
  H=(); [ "$LOAD" = close ] && H=(-H "Connection: close")
  if [ -n "${DELAY_MS:-}" ]; then echo "function delay() return $DELAY_MS end" > "$OUT.lua"; H+=(-s "$OUT.lua"); fi
  printf 'worker_processes 1;\ndaemon off;\npid %s.pid;\nerror_log %s.err;\nevents { worker_connections 4096; }\nhttp { access_log off; server { listen 127.0.0.1:9000 reuseport backlog=4096; keepalive_requests 1000000; location / { return 200 "ok\\n"; } } }\n' "$OUT" "$OUT" > "$OUT.conf"
  P=${PROXY_CORE:-0} L=${LOAD_CORE:-1}
  taskset -c "$L" nginx -c "$OUT.conf" & NG=$!
  sleep 0.3
  up=""
  if [ "$BIN" = nginx ]; then
    nginx_proxy "$OUT" "$MODE" "$@"
    taskset -c "$P" nginx -c "$OUT.proxy.conf" & EP=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/192.0.2.5/8080) 2>/dev/null && { up=1; break; }; sleep 0.05; done
    # Its worker is the master's child: a /proc without task/*/children (CONFIG_PROC_CHILDREN) would count the master alone.
    [ -z "$up" ] || [ -n "$(cat /proc/$EP/task/*/children 2>/dev/null)" ] || { echo "pair.sh: nginx's worker is not visible in /proc/$EP/task/*/children" >&2; up=""; }
  else
    taskset -c "$P" "$BIN" --mode "$MODE" --ports 8080 --prefix 192.0.2.0/24 --origin 127.0.0.1:9000 --workers 1 ${BOTH:-} "$@" 2> "$OUT.stderr" & EP=$!
    for _ in $(seq 1 200); do grep -q ready "$OUT.stderr" 2>/dev/null && { up=1; break; }; sleep 0.05; done
  fi
  if [ -z "$up" ]; then
    echo "pair.sh: $BIN did not start ($OUT)" >&2
    kill $EP $NG 2>/dev/null; wait 2>/dev/null
    exit 1
  fi
  taskset -c "$L" wrk -t1 -c50 -d"${WARM:-5}" "${H[@]}" http://192.0.2.5:8080/ > /dev/null
  read -r u0 s0 < <(cpu_of $EP)
  taskset -c "$L" wrk -t1 -c50 -d"${SECS:-5}" "${H[@]}" http://192.0.2.5:8080/ > "$OUT.wrk"
  read -r u1 s1 < <(cpu_of $EP)
  req=$(awk '/requests in/{print $1}' "$OUT.wrk")
  if [ -z "$req" ] || [ "$req" = 0 ]; then
    echo "pair.sh: no request answered ($OUT.wrk)" >&2
    kill $EP $NG 2>/dev/null; wait 2>/dev/null
    exit 1
  fi
  tick=$(getconf CLK_TCK)
  echo "$req $(echo "($u1 + $s1 - $u0 - $s0) * 1000000 / $tick / $req" | bc -l)"
  kill $EP $NG; wait 2>/dev/null || true
  exit 0
fi
[ $# -ge 4 ] || { echo "usage: bench/pair.sh BINARY tcp|http keep-alive|close N [B's extra args...]" >&2; exit 2; }
BIN=$1 MODE=$2 LOAD=$3 N=$4; shift 4
[ "$BIN" = nginx ] || BIN=$(readlink -f "$BIN")
[ -z "${BIN_B:-}" ] || [ "$BIN_B" = nginx ] || BIN_B=$(readlink -f "$BIN_B")
DIR=$(mktemp -d /tmp/edgeproxy-pair-XXXXXX)
SELF=$(readlink -f "$0")
for i in $(seq 1 "$N"); do
  unshare --net --mount --propagation private "$SELF" --inner "$BIN" "$MODE" "$LOAD" "$DIR/a" > "$DIR/a.out" &
  A=$!
  unshare --net --mount --propagation private "$SELF" --inner "${BIN_B:-$BIN}" "$MODE" "$LOAD" "$DIR/b" "$@" > "$DIR/b.out" &
  B=$!
  wait $A || true
  wait $B || true
  if ! read -r ra ua < "$DIR/a.out" || ! read -r rb ub < "$DIR/b.out"; then
    echo "pair $i: not measured (a variant failed, said above)"
    continue
  fi
  printf 'pair %d: A %.2f µs/req (%d req), B %.2f µs/req (%d req), B/A %.3f\n' "$i" "$ua" "$ra" "$ub" "$rb" "$(echo "$ub / $ua" | bc -l)"
done
[ -n "${KEEP:-}" ] || rm -rf "$DIR"
