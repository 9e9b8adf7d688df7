#!/usr/bin/env bash
# Build edgeproxy's container image and test it, as root, with buildah and
# podman (no Docker engine, no registry needed):
#
#   bash build/test-image.sh            # build, test, remove the image
#   KEEP_IMAGE=1 bash build/test-image.sh
#   BASE=docker.io/library/debian:12-slim bash build/test-image.sh   # a base you can pull
#
# 1. Base: without $BASE, a Debian 12 minbase made with debootstrap from
#    deb.debian.org, slimmed like debian:12-slim and imported as
#    localhost/edgeproxy-base:bookworm-<key>. <key> hashes the recipe (suite,
#    mirror, the slimming steps below), so a changed recipe makes a new base and
#    reruns reuse the cached one. REFRESH_BASE=1 rebuilds it (security updates).
#    `podman --storage-driver vfs rmi` it to drop the cache.
# 2. Image: buildah bud of build/Containerfile; its size is printed.
# 3. Run, in a network and mount namespace of this script's own (steering never
#    touches the machine's namespace) with a private bpffs mounted into the
#    containers at /sys/fs/bpf:
#    - capabilities: the container as uid 10001 with only CAP_BPF,
#      CAP_NET_ADMIN and CAP_PERFMON serves; without any one it does not start;
#    - a steered port range answers; the health check passes;
#    - replacement: a second container takes the pinned state over (--take-over), the first drains
#      (SIGQUIT, the image's stop signal) while a client loops: no failure;
#    - stopping the last container removes the steering and the pins;
#    - a killed container (SIGKILL) leaves the pins, steered ports refuse, and a
#      new container with the same bpffs mount serves them again.
# Everything is bounded in time (TOTAL_TIMEOUT, default 1500 s); containers and
# the image this run made are removed on exit, the base is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

TOTAL_TIMEOUT=${TOTAL_TIMEOUT:-1500}
PODMAN=(podman --storage-driver vfs)
BUILDAH=(buildah --storage-driver vfs)
# The machine's 20,000 open-file cap is above what runc/podman's defaults accept.
RUN_LIMITS=(--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
IMAGE=${IMAGE:-localhost/edgeproxy-test:$$}
UIDNUM=10001
PORT_LO=8000 PORT_HI=8999 # deploy/edgeproxy.toml, the image's own config

say() { printf '[%5ss] %s\n' "$SECONDS" "$*"; }
fail() { say "FAIL: $*"; exit 1; }

if [[ ${1:-} != --in-netns ]]; then
  [[ $(id -u) == 0 ]] || { echo "test-image.sh: run as root" >&2; exit 2; }
  for tool in buildah podman runc unshare curl; do command -v "$tool" >/dev/null || { echo "test-image.sh: $tool is missing" >&2; exit 2; }; done
  # Be gentle with whatever else this machine measures.
  if [[ -z ${TEST_IMAGE_NICE:-} ]]; then exec env TEST_IMAGE_NICE=1 nice -n 19 ionice -c3 timeout --foreground -k 10 "$TOTAL_TIMEOUT" bash "$0" "$@"; fi
  TMP=$(mktemp -d /var/tmp/edgeproxy-image.XXXXXX)
  cleanup_build() {
    rm -rf "$TMP"
    if [[ -z ${KEEP_IMAGE:-} ]]; then "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true; fi
  }
  trap cleanup_build EXIT

  # --- 1. base -------------------------------------------------------------
  if [[ -z ${BASE:-} ]]; then
    SUITE=bookworm MIRROR=http://deb.debian.org/debian
    # Paths debian:12-slim leaves out (its /etc/dpkg/dpkg.cfg.d/docker), kept out of later installs too.
    SLIM_CFG='path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*'
    SOURCES="deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main"
    key=$(printf '%s\n' recipe-1 "$SUITE" "$MIRROR" minbase "$SLIM_CFG" "$SOURCES" | sha256sum | cut -c1-12)
    BASE=localhost/edgeproxy-base:$SUITE-$key
    if [[ -n ${REFRESH_BASE:-} ]] || ! "${PODMAN[@]}" image exists "$BASE"; then
      command -v debootstrap >/dev/null || { echo "test-image.sh: debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
      say "base: debootstrap --variant=minbase $SUITE from $MIRROR"
      t=$SECONDS
      debootstrap --variant=minbase "$SUITE" "$TMP/rootfs" "$MIRROR" >"$TMP/debootstrap.log" 2>&1 || { tail -20 "$TMP/debootstrap.log"; fail "debootstrap"; }
      printf '%s\n' "$SLIM_CFG" >"$TMP/rootfs/etc/dpkg/dpkg.cfg.d/slim"
      printf '%s\n' "$SOURCES" >"$TMP/rootfs/etc/apt/sources.list"
      # No package caches or lists in any layer (debian:12-slim's docker-clean does the same).
      printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$TMP/rootfs/etc/apt/apt.conf.d/docker-clean"
      (cd "$TMP/rootfs" && rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/* \
        usr/share/man/* usr/share/info/* usr/share/groff/* usr/share/lintian/* \
        && find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete \
        && find usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +)
      tar -C "$TMP/rootfs" --numeric-owner -cf - . | "${PODMAN[@]}" import --change 'CMD ["bash"]' - "$BASE" >/dev/null
      rm -rf "$TMP/rootfs"
      say "base: made $BASE in $((SECONDS - t)) s ($("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE" | numfmt --to=iec))"
    else
      say "base: cached $BASE"
    fi
  fi

  # --- 2. image ------------------------------------------------------------
  t=$SECONDS
  say "image: buildah bud build/Containerfile (BASE=$BASE)"
  secret=()
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] && secret=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
  rev=$(git rev-parse --short HEAD 2>/dev/null || true)
  "${BUILDAH[@]}" bud --isolation chroot --format docker -f build/Containerfile -t "$IMAGE" \
    --build-arg BASE="$BASE" --build-arg EDGEPROXY_REVISION="$rev" "${secret[@]}" . >"$TMP/build.log" 2>&1 \
    || { tail -40 "$TMP/build.log"; fail "buildah bud (log above)"; }
  size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
  say "image: built $IMAGE in $((SECONDS - t)) s: $size bytes ($(numfmt --to=iec "$size")); base $(numfmt --to=iec "$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE")")"

  # --- 3. run, in namespaces of our own ------------------------------------
  IMAGE=$IMAGE unshare --net --mount --propagation private bash "$0" --in-netns
  exit $?
fi

# ============================ inside the namespaces ==========================
ip link set lo up
BPFFS=$(mktemp -d /tmp/edgeproxy-image-bpffs.XXXXXX)
mount -t bpf bpf "$BPFFS"
# The pins' directory belongs to the image's user: it needs no CAP_DAC_OVERRIDE.
install -d -o "$UIDNUM" -g "$UIDNUM" -m 0700 "$BPFFS/edgeproxy"
PINS=$BPFFS/edgeproxy/$(stat -L -c %i /proc/self/ns/net)
CONTAINERS=()
LOAD_PID=
LISTEN_PID=
cleanup() {
  [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
  [[ -n $LISTEN_PID ]] && kill "$LISTEN_PID" 2>/dev/null
  rm -f "${LOAD:-}" "${LOAD:-}.tmp"
  for c in "${CONTAINERS[@]}"; do timeout 60 "${PODMAN[@]}" rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  umount "$BPFFS" 2>/dev/null || true
  rmdir "$BPFFS" 2>/dev/null || true
}
trap cleanup EXIT

# podman 4.3's default seccomp profile allows bpf() only with CAP_SYS_ADMIN.
CAPS=(--cap-drop all --cap-add BPF,NET_ADMIN,PERFMON --security-opt seccomp=unconfined)
# run NAME [podman run options] -- [command]: start a container detached; its id
# in $RUN_ID (not printed: a command substitution's subshell would lose CONTAINERS).
run() {
  local name=$1; shift
  local opts=() cmd=()
  while (($#)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
  (($#)) && { shift; cmd=("$@"); }
  local id
  id=$("${PODMAN[@]}" run -d --name "$name-$$" "${RUN_LIMITS[@]}" --network host -v "$BPFFS:/sys/fs/bpf" "${opts[@]}" "$IMAGE" "${cmd[@]}")
  CONTAINERS+=("$id")
  RUN_ID=$id
}
# get PORT: the built-in responder's page, or nothing.
get() { curl -s -m 2 "http://127.0.0.1:$1/" 2>/dev/null || true; }
# until_serves PORT SECONDS
until_serves() {
  local end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    [[ $(get "$1") == *"127.0.0.1:$1"* ]] && return 0
    sleep 0.2
  done
  return 1
}
# until_exited ID SECONDS
until_exited() {
  local end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$1") == false ]] && return 0
    sleep 0.2
  done
  return 1
}
logs() { "${PODMAN[@]}" logs "$1" 2>&1 | sed 's/^/    | /'; }
# sockets_of ID: "pid/fd/cookie ..." of the registered sockets, from `edgeproxy status` in the container
sockets_of() {
  timeout 30 "${PODMAN[@]}" exec "$1" edgeproxy status --json | python3 -c 'import json, sys
print(" ".join(sorted("%s/%s/%s" % (s["pid"], s["fd"], s["cookie"]) for v in json.load(sys.stdin)["services"] for s in v["sockets"])))'
}
# A plain listener on 127.0.0.1:PORT that writes "plain" to each connection:
# reaching it proves the kernel's normal lookup, not edgeproxy, got the connection.
plain_listener() {
  python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
while True:
    c,_=s.accept(); c.recv(1024); c.sendall(b"HTTP/1.0 200 OK\r\n\r\nplain\n"); c.close()' "$1" &
  LISTEN_PID=$!
  sleep 0.5
}

say "run: in network namespace $(stat -L -c %i /proc/self/ns/net), bpffs $BPFFS"

# --- capabilities --------------------------------------------------------------
for caps in "--cap-drop all --cap-add NET_ADMIN,PERFMON" "--cap-drop all --cap-add BPF,PERFMON" "--cap-drop all --cap-add BPF,NET_ADMIN" "--cap-drop all"; do
  # shellcheck disable=SC2086
  out=$(timeout 60 "${PODMAN[@]}" run --rm "${RUN_LIMITS[@]}" --network host -v "$BPFFS:/sys/fs/bpf" $caps "$IMAGE" 2>&1) && fail "started with only '$caps'"
  say "caps: '$caps': does not start: $(tail -1 <<<"$out")"
  [[ $out == *"the container lacks"* ]] || fail "no clear message for a missing capability: $out"
done
out=$(timeout 60 "${PODMAN[@]}" run --rm "${RUN_LIMITS[@]}" --network host -v "$BPFFS:/sys/fs/bpf" --cap-drop all --cap-add BPF,NET_ADMIN,PERFMON "$IMAGE" 2>&1) && fail "started under podman's default seccomp profile"
say "caps: BPF,NET_ADMIN,PERFMON under podman's default seccomp profile: $(tail -1 <<<"$out")"
[[ $out == *"seccomp filter refuses bpf()"* ]] || fail "no seccomp hint"
[[ -e $PINS ]] && fail "a failed start left pins"

# --- a steered port range answers ---------------------------------------------------------
t=$SECONDS
run ep-a "${CAPS[@]}"; A=$RUN_ID
until_serves 8123 30 || { logs "$A"; fail "container A does not answer on 127.0.0.1:8123"; }
say "serve: container A answers on 127.0.0.1:8123 after $((SECONDS - t)) s"
for p in $PORT_LO 8500 $PORT_HI; do [[ $(get $p) == *"127.0.0.1:$p"* ]] || fail "port $p not steered"; done
say "serve: ports $PORT_LO, 8500, $PORT_HI steered by $(ss -Hltn | grep -c 127.0.0.1) listening socket(s) in the namespace (one per worker, one reuseport group)"
pid=$("${PODMAN[@]}" inspect --format '{{.State.Pid}}' "$A")
kids=$(pgrep -P "$pid" | head -1)
say "serve: supervisor pid $pid: $(grep -E '^(Uid|CapEff)' /proc/"$pid"/status | tr -s '\t\n' ' ')"
[[ -n $kids ]] && say "serve: worker pid $kids: $(grep -E '^(Uid|CapEff)' /proc/"$kids"/status | tr -s '\t\n' ' ')"
[[ $(awk '/^Uid/ {print $2}' /proc/"$pid"/status) == "$UIDNUM" ]] || fail "not running as uid $UIDNUM"
hc=$(timeout 30 "${PODMAN[@]}" healthcheck run "$A" 2>&1) || fail "healthcheck: $hc"
say "health: podman healthcheck run: ${hc:-ok (exit 0)}"
# The man page and completions the image installs (made by the binary at build time).
docs=$(timeout 30 "${PODMAN[@]}" exec "$A" sh -c 'head -c 4 /usr/local/share/man/man1/edgeproxy.1; grep -c _edgeproxy /usr/share/bash-completion/completions/edgeproxy; head -1 /usr/share/zsh/vendor-completions/_edgeproxy' 2>&1) || fail "man page or completion missing: $docs"
[[ $docs == ".TH "*"#compdef edgeproxy"* ]] || fail "man page or completion not as built: $docs"
say "docs: man page, bash and zsh completion installed"
[[ -d $PINS ]] || fail "no pins at $PINS"
say "pins: $(ls "$PINS" | tr '\n' ' ')"

# --- replacement: B joins, A drains, a client keeps going --------------------------------
# B is the same instance as A (same config): without --take-over it is refused while A is live.
SOCKETS_A=$(sockets_of "$A")
run ep-b "${CAPS[@]}" -- serve --config /etc/edgeproxy/edgeproxy.toml --take-over; B=$RUN_ID
t=$SECONDS
until_exited_or_ready() { # wait for B's ready line
  local end=$((SECONDS + 30))
  while ((SECONDS < end)); do "${PODMAN[@]}" logs "$B" 2>&1 | grep -q "ready (setup" && return 0; sleep 0.2; done
  return 1
}
until_exited_or_ready || { logs "$B"; fail "container B not ready"; }
say "replace: container B joined the pinned state, ready after $((SECONDS - t)) s"
# Each container has its own PID namespace: B's workers may register with the
# same pid/fd pairs as A's did; the cookies say whose sockets they are.
SOCKETS_B=$(sockets_of "$B")
say "replace: registered sockets (pid/fd/cookie): A's before B joined: $SOCKETS_A; after B joined: $SOCKETS_B"
[[ -n $SOCKETS_B && $SOCKETS_B != "$SOCKETS_A" ]] || fail "B did not take the member entries over"
LOAD=$(mktemp /tmp/edgeproxy-image-load.XXXXXX)
(
  ok=0 bad=0
  trap 'echo "$ok $bad" >"$LOAD"; exit 0' TERM
  while :; do
    if [[ $(curl -s -m 2 http://127.0.0.1:8321/ 2>/dev/null) == *127.0.0.1:8321* ]]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    echo "$ok $bad" >"$LOAD.tmp"; mv "$LOAD.tmp" "$LOAD"
  done
) &
LOAD_PID=$!
sleep 1
t=$SECONDS
timeout 60 "${PODMAN[@]}" stop -t 45 "$A" >/dev/null
say "replace: podman stop A (SIGQUIT: drain) took $((SECONDS - t)) s"
sleep 2
kill "$LOAD_PID"; wait "$LOAD_PID" 2>/dev/null || true; LOAD_PID=
read -r ok bad <"$LOAD"
say "replace: client during the stop of A: $ok ok, $bad failed"
logs "$A" | grep -E "drain|withdrew|stopped" | tail -4
((bad == 0 && ok > 0)) || { logs "$B"; fail "requests failed while A was replaced by B"; }
[[ $(get 8123) == *"127.0.0.1:8123"* ]] || fail "B does not serve after A stopped"
after=$(sockets_of "$B")
say "replace: registered sockets after A stopped: $after"
[[ $after == "$SOCKETS_B" ]] || fail "A's stop changed B's registered sockets (was: $SOCKETS_B)"

# --- stopping the last container removes the steering -----------------------------------
t=$SECONDS
timeout 60 "${PODMAN[@]}" stop -t 45 "$B" >/dev/null
say "stop: podman stop B (the last one) took $((SECONDS - t)) s; exit code $("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$B")"
logs "$B" | grep -E "drain|withdrew|stopped" | tail -3
[[ -e $PINS ]] && fail "pins left after the last container stopped: $(ls "$PINS")"
plain_listener 8124
r=$(get 8124)
kill "$LISTEN_PID"; wait "$LISTEN_PID" 2>/dev/null || true; LISTEN_PID=
[[ $r == *plain* ]] || fail "127.0.0.1:8124 still steered after the stop (got '$r')"
say "stop: pins removed; 127.0.0.1:8124 reaches a plain listener again (no steering)"

# --- a killed container leaves the pins; a new one picks them up --------------------------
run ep-c "${CAPS[@]}"; C=$RUN_ID
until_serves 8123 30 || { logs "$C"; fail "container C does not serve"; }
timeout 30 "${PODMAN[@]}" kill -s KILL "$C" >/dev/null
until_exited "$C" 20 || fail "C did not exit on SIGKILL"
[[ -d $PINS ]] || fail "SIGKILL removed the pins"
plain_listener 8125
r=$(curl -s -m 2 http://127.0.0.1:8125/ 2>&1; echo "exit $?")
kill "$LISTEN_PID"; wait "$LISTEN_PID" 2>/dev/null || true; LISTEN_PID=
[[ $r == *plain* ]] && fail "a killed container's ports fell through to a plain listener"
say "kill: podman kill -s KILL C: pins kept ($(ls "$PINS" | wc -l) entries); 127.0.0.1:8125 refused (curl $(tail -1 <<<"$r")), not given to the plain listener there"
t=$SECONDS
run ep-d "${CAPS[@]}"; D=$RUN_ID
until_serves 8125 30 || { logs "$D"; fail "container D does not serve after C was killed"; }
say "kill: container D with the same bpffs mount serves 127.0.0.1:8125 after $((SECONDS - t)) s"
"${PODMAN[@]}" logs "$D" 2>&1 | grep -E "dispatcher (joined|created)" | sed 's/^/    | /'
timeout 60 "${PODMAN[@]}" stop -t 45 "$D" >/dev/null
[[ -e $PINS ]] && fail "pins left after D stopped"
say "PASS (${SECONDS} s in the namespace)"
