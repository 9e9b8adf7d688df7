#!/usr/bin/env bash
# Install what building, running and testing edgeproxy needs on Debian 12, as
# root: clang and the libbpf headers for the BPF object, libbpf1 at run time,
# iproute2, bpftool, curl and node (its HTTP parser) for the tests, chromium (the
# dashboard test renders the admin page headless), man-db and groff-base (the man
# page test renders edgeproxy.1), zsh (the completion test loads _edgeproxy),
# nghttp2-client (h2load: the HTTP/2 tests and the h2 benchmark), openssl, haproxy and testssl.sh (the TLS
# tests: s_client, a balancer sending PROXY v2 before TLS, the policy graded), and Bun (from npm). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in clang libbpf-dev libbpf1 iproute2 bpftool linux-libc-dev util-linux ca-certificates curl chromium man-db groff-base zsh nghttp2-client openssl haproxy testssl.sh; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
command -v npm >/dev/null || need+=(npm)
# node (Debian's nodejs, which npm depends on): the framing tests check edgeproxy's output with Node's HTTP parser.
command -v node >/dev/null || need+=(nodejs)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v bun >/dev/null || npm install -g --silent bun
bun install --frozen-lockfile --silent
