#!/bin/bash
# The CPU an idle edgeproxy burns: A and B at the same time, each in a network
# namespace of its own (fresh bpffs and /run), no traffic; after WARM s (3)
# the CPU of the whole process tree (supervisor and workers, every thread)
# over SECS s (30), as ms of CPU per second of wall time, from utime+stime
# (/proc/PID/task/*/stat, 10 ms ticks) and from schedstat (ns).
#   bench/idle.sh BINARY_A BINARY_B [edgeproxy args...]
#   e.g. bench/idle.sh /work/main/edgeproxy ./edgeproxy --mode http --workers 2
# Default args: --ports 8080 --prefix 192.0.2.0/24 --origin 127.0.0.1:9000 (given args are added).
# VERBOSE=1: per-thread figures too. POKE=1: one request (tcp/http: a connection to 192.0.2.5:8080 with a GET, no origin
# listening; udp: a datagram) right after ready, so what starts at a first connection (an access log's ring) runs too.
set -euo pipefail
if [ "${1:-}" = --inner ]; then
  shift; BIN=$1 OUT=$2; shift 2
  ip link set lo up
  ip route add local 192.0.2.0/24 dev lo
  mount -t bpf bpf /sys/fs/bpf
  mount -t tmpfs tmpfs /run
  unset EDGEPROXY_RUN_DIR
  "$BIN" --ports 8080 --prefix 192.0.2.0/24 --origin 127.0.0.1:9000 "$@" 2> "$OUT.stderr" > "$OUT.stdout" & EP=$!
  for _ in $(seq 1 200); do grep -q ready "$OUT.stderr" 2>/dev/null && break; sleep 0.05; done
  if [ -n "${POKE:-}" ]; then
    timeout 3 bash -c 'exec 3<>/dev/tcp/192.0.2.5/8080 && printf "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" >&3 && cat <&3 > /dev/null' 2> /dev/null || true
    timeout 1 bash -c 'echo x > /dev/udp/192.0.2.5/8080' 2> /dev/null || true
  fi
  sleep "${WARM:-3}"
  tree() { local p=$1; echo "$p"; for c in $(cat /proc/$p/task/*/children 2>/dev/null); do tree "$c"; done; }
  snap() { for p in $(tree $EP); do for t in /proc/$p/task/*; do
    echo "$p/$(basename $t) $(tr ' ' _ < $t/comm) $(awk '{print $14+$15}' $t/stat) $(cut -d' ' -f1 $t/schedstat)"; done; done | sort; }
  snap > "$OUT.t0"; sleep "${SECS:-30}"; snap > "$OUT.t1"
  join "$OUT.t0" "$OUT.t1" | awk -v s="${SECS:-30}" -v tck="$(getconf CLK_TCK)" -v v="${VERBOSE:-}" '
    { dt=$6-$3; dn=$7-$4; T+=dt; N+=dn; if (v && dn > 0) printf "  %-14s %-16s %7.3f ms/s\n", $1, $2, dn/1e6/s }
    END { printf "%.3f ms/s (schedstat) %.2f ms/s (utime+stime)\n", N/1e6/s, T*1000/tck/s }'
  kill $EP; wait 2>/dev/null || true
  exit 0
fi
[ $# -ge 2 ] || { echo "usage: bench/idle.sh BINARY_A BINARY_B [edgeproxy args...]" >&2; exit 2; }
A=$(readlink -f "$1") B=$(readlink -f "$2"); shift 2
DIR=$(mktemp -d /tmp/edgeproxy-idle-XXXXXX)
SELF=$(readlink -f "$0")
unshare --net --mount --propagation private "$SELF" --inner "$A" "$DIR/a" "$@" > "$DIR/a.out" & PA=$!
unshare --net --mount --propagation private "$SELF" --inner "$B" "$DIR/b" "$@" > "$DIR/b.out" & PB=$!
wait $PA $PB
echo "A: $(cat "$DIR/a.out")"; echo "B: $(cat "$DIR/b.out")"
[ -n "${KEEP:-}" ] || rm -rf "$DIR"
