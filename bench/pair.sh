#!/bin/bash
# Two edgeproxy runs at the same time, each in a network namespace of its own
# on the same cores (proxies on core 0, wrk and the nginx origin on core 1),
# so the shared machine's noise hits both: variant A (the binary as given) and
# variant B (the same plus ON_ARGS), N times; prints each pair's process CPU
# per request (utime+stime of the proxy ÷ wrk's requests) and B/A.
#   bench/pair.sh BINARY tcp|http keep-alive|close N [B's extra args...]
#   e.g. bench/pair.sh ./edgeproxy http keep-alive 3 --access-log /tmp/a.log
# $BOTH: args for both runs (e.g. BOTH="--engine epoll"); $BIN_B: another binary for B (an A/B of two builds).
# 5 s of warm-up in the measured mode, then 5 s measured (WARM, SECS); cores: PROXY_CORE (0) and LOAD_CORE (1).
set -euo pipefail
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
  printf 'worker_processes 1;\ndaemon off;\npid %s.pid;\nerror_log %s.err;\nevents { worker_connections 4096; }\nhttp { access_log off; server { listen 127.0.0.1:9000 reuseport backlog=4096; keepalive_requests 1000000; location / { return 200 "ok\\n"; } } }\n' "$OUT" "$OUT" > "$OUT.conf"
  P=${PROXY_CORE:-0} L=${LOAD_CORE:-1}
  taskset -c "$L" nginx -c "$OUT.conf" & NG=$!
  sleep 0.3
  taskset -c "$P" "$BIN" --mode "$MODE" --ports 8080 --prefix 192.0.2.0/24 --origin 127.0.0.1:9000 --workers 1 ${BOTH:-} "$@" 2> "$OUT.stderr" & EP=$!
  for _ in $(seq 1 200); do grep -q ready "$OUT.stderr" 2>/dev/null && break; sleep 0.05; done
  taskset -c "$L" wrk -t1 -c50 -d"${WARM:-5}" "${H[@]}" http://192.0.2.5:8080/ > /dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/$EP/stat)
  taskset -c "$L" wrk -t1 -c50 -d"${SECS:-5}" "${H[@]}" http://192.0.2.5:8080/ > "$OUT.wrk"
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/$EP/stat)
  req=$(awk '/requests in/{print $1}' "$OUT.wrk")
  tick=$(getconf CLK_TCK)
  echo "$req $(echo "($u1 + $s1 - $u0 - $s0) * 1000000 / $tick / $req" | bc -l)"
  kill $EP $NG; wait 2>/dev/null || true
  exit 0
fi
[ $# -ge 4 ] || { echo "usage: bench/pair.sh BINARY tcp|http keep-alive|close N [B's extra args...]" >&2; exit 2; }
BIN=$(readlink -f "$1") MODE=$2 LOAD=$3 N=$4; shift 4
[ -z "${BIN_B:-}" ] || BIN_B=$(readlink -f "$BIN_B")
DIR=$(mktemp -d /tmp/edgeproxy-pair-XXXXXX)
SELF=$(readlink -f "$0")
for i in $(seq 1 "$N"); do
  unshare --net --mount --propagation private "$SELF" --inner "$BIN" "$MODE" "$LOAD" "$DIR/a" > "$DIR/a.out" &
  A=$!
  unshare --net --mount --propagation private "$SELF" --inner "${BIN_B:-$BIN}" "$MODE" "$LOAD" "$DIR/b" "$@" > "$DIR/b.out" &
  B=$!
  wait $A $B
  read -r ra ua < "$DIR/a.out"; read -r rb ub < "$DIR/b.out"
  printf 'pair %d: A %.2f µs/req (%d req), B %.2f µs/req (%d req), B/A %.3f\n' "$i" "$ua" "$ra" "$ub" "$rb" "$(echo "$ub / $ua" | bc -l)"
done
[ -n "${KEEP:-}" ] || rm -rf "$DIR"
