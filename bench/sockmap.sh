#!/bin/bash
# Kernel splicing (bench/sockmap-relay.ts) against nginx stream and edgeproxy's tcp engine, side by side
# in one private network namespace, round-robin: wrk keep-alive and one connection per request
# (`-t1 -c50`, 5 s after 2 s of warm-up, SECS/ROUNDS), then one iperf3 stream each way (bulk).
# Per request: the proxy's process CPU (utime+stime, children included), the proxy core's busy time, and
# the whole machine's busy time (/proc/stat, both cores: wrk, the origin, softirq and kworkers included,
# since a spliced pair's bytes are moved by the kernel wherever its softirq and psock worker run).
# Proxies on core 0, wrk, the nginx origin and iperf3 on core 1.
#   bench/sockmap.sh [EDGEPROXY_BINARY]      (as root)
set -euo pipefail
if [ "${1:-}" != --inner ]; then
  [ "$(id -u)" = 0 ] || { echo "bench/sockmap.sh: needs root (network namespace, BPF)" >&2; exit 2; }
  BIN=$(readlink -f "${1:-./edgeproxy}")
  [ -x "$BIN" ] || { echo "bench/sockmap.sh: no edgeproxy binary at $BIN (bun build/build.ts)" >&2; exit 2; }
  exec unshare --net --mount --propagation private "$(readlink -f "$0")" --inner "$BIN"
fi
BIN=$2
HERE=$(dirname "$(readlink -f "$0")")
ROUNDS=${ROUNDS:-3} SECS=${SECS:-5}
D=$(mktemp -d /tmp/edgeproxy-sockmap-XXXXXX)
ip link set lo up; ip route add local 192.0.2.0/24 dev lo
sysctl -qw net.ipv4.tcp_tw_reuse=1; echo 10000 65535 > /proc/sys/net/ipv4/ip_local_port_range
mount -t bpf bpf /sys/fs/bpf; mount -t tmpfs tmpfs /run; unset EDGEPROXY_RUN_DIR
SM=""
if nginx -V 2>&1 | grep -q -- '--with-stream=dynamic'; then
  for m in /usr/lib/nginx/modules /usr/share/nginx/modules; do [ -f $m/ngx_stream_module.so ] && SM="load_module $m/ngx_stream_module.so;"; done
fi
printf 'worker_processes 1;\ndaemon off;\npid %s/o.pid;\nerror_log %s/o.err;\nevents { worker_connections 4096; }\nhttp { access_log off; server { listen 127.0.0.1:9000 reuseport backlog=4096; keepalive_requests 1000000; location / { return 200 "ok\\n"; } } }\n' $D $D > $D/o.conf
# nginx stream as its docs set a TCP proxy up (one worker, as each proxy here); bulk: proxy_buffer_size 64k as bench/bulk.ts gives it.
stream() { printf '%s\nworker_processes 1;\ndaemon off;\npid %s/%s.pid;\nerror_log %s/%s.err;\nevents { worker_connections 4096; }\nstream { server { listen 192.0.2.6:8081 reuseport backlog=4096; proxy_pass 127.0.0.1:%s; %s } }\n' "$SM" $D $1 $D $1 $2 "$3" > $D/$1.conf; }
stream s 9000 ""
stream sb 5201 "proxy_buffer_size 64k;"
# Our children, by pid, while they run (stop() takes a pid off the list once it has exited).
PIDS=()
stop() { # pids: SIGTERM, then up to 5 s for each to exit, then SIGKILL
  local p left
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    left=(); for q in "${PIDS[@]}"; do [ "$q" != "$p" ] && left+=("$q"); done; PIDS=("${left[@]}")
  done
}
trap 'stop "${PIDS[@]}"' EXIT
start() { # name, then the command
  local name=$1; shift
  taskset -c 0 "$@" > $D/$name.out 2>&1 & PIDS+=($!)
  eval "PID_$name=$!"
}
up() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/${1%:*}/${1#*:}) 2>/dev/null && return 0; sleep 0.05; done; echo "sockmap.sh: nothing answers on $1" >&2; exit 1; }
taskset -c 1 nginx -c $D/o.conf & PIDS+=($!)
up 127.0.0.1:9000
start nginx nginx -c $D/s.conf
start edgeproxy "$BIN" --mode tcp --ports 8080 --prefix 192.0.2.5/32 --origin 127.0.0.1:9000 --workers 1
start sockmap bun "$HERE/sockmap-relay.ts" --listen 192.0.2.10:8082 --origin 127.0.0.1:9000
up 192.0.2.6:8081; up 192.0.2.5:8080; up 192.0.2.10:8082
cpu_of() { local t=0 p; for p in $1 $(cat /proc/$1/task/*/children 2>/dev/null); do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
busy() { awk -v c="$1" '$1==c {print $2+$3+$4+$7+$8}' /proc/stat; }
tick=$(getconf CLK_TCK)
cores=$(nproc)
per() { echo "$1 * 1000000 / $tick / $2" | bc -l; }
echo "| load | proxy | round | requests | process µs/req | proxy core µs/req | machine µs/req |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for LOAD in keep-alive close; do
  H=(); [ $LOAD = close ] && H=(-H "Connection: close")
  for r in $(seq 1 "$ROUNDS"); do
    for p in nginx:192.0.2.6:8081 edgeproxy:192.0.2.5:8080 sockmap:192.0.2.10:8082; do
      IFS=: read -r name host port <<< "$p"
      pid=$(eval echo "\$PID_$name")
      taskset -c 1 wrk -t1 -c50 -d2 "${H[@]}" http://$host:$port/ > /dev/null
      c0=$(cpu_of $pid); m0=$(busy cpu); k0=$(busy cpu0)
      taskset -c 1 wrk -t1 -c50 -d"$SECS" "${H[@]}" http://$host:$port/ > $D/w
      c1=$(cpu_of $pid); m1=$(busy cpu); k1=$(busy cpu0)
      req=$(awk '/requests in/{print $1}' $D/w)
      [ "${req:-0}" -gt 0 ] || { echo "sockmap.sh: $name answered no request ($LOAD, round $r): $(tr '\n' ' ' < $D/w)" >&2; continue; }
      bad=$(grep -E "Non-2xx|Socket errors" $D/w | tr -s ' ' | tr '\n' ' ' || true)
      printf '| %s | %s | %d | %d | %.2f | %.2f | %.2f |%s\n' $LOAD $name $r "$req" "$(per $((c1 - c0)) "$req")" "$(per $((k1 - k0)) "$req")" "$(per $((m1 - m0)) "$req")" "${bad:+ $bad}"
    done
  done
done
# Bulk: the proxies again, now in front of iperf3 (nginx with its bulk buffer).
stop $PID_nginx $PID_edgeproxy $PID_sockmap
taskset -c 1 iperf3 -s -B 127.0.0.1 -p 5201 > $D/iperf-s.out 2>&1 & PIDS+=($!)
start nginx nginx -c $D/sb.conf
start edgeproxy "$BIN" --mode tcp --ports 8080 --prefix 192.0.2.5/32 --origin 127.0.0.1:5201 --workers 1
start sockmap bun "$HERE/sockmap-relay.ts" --listen 192.0.2.10:8082 --origin 127.0.0.1:5201
sleep 1; up 192.0.2.6:8081; up 192.0.2.5:8080; up 192.0.2.10:8082
echo
echo "| bulk | proxy | round | Gbit/s | machine busy % |"
echo "| --- | --- | ---: | ---: | ---: |"
for r in $(seq 1 "$ROUNDS"); do
  for p in nginx:192.0.2.6:8081 edgeproxy:192.0.2.5:8080 sockmap:192.0.2.10:8082; do
    IFS=: read -r name host port <<< "$p"
    for dir in upload download; do
      R=(); [ $dir = download ] && R=(-R)
      m0=$(busy cpu); t0=$(date +%s%N)
      g=$(taskset -c 1 timeout 30 iperf3 -c $host -p $port -t "$SECS" -J "${R[@]}" | python3 -c 'import json,sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null || echo failed)
      m1=$(busy cpu); t1=$(date +%s%N)
      printf '| %s | %s | %d | %s | %.0f |\n' $dir $name $r "$g" "$(echo "($m1 - $m0) * 100 / $tick / (($t1 - $t0) / 1000000000) / $cores" | bc -l)"
    done
  done
done
[ -n "${KEEP:-}" ] || rm -rf "$D"
