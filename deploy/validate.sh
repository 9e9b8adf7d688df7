#!/usr/bin/env bash
# Check the deployment files offline:
# - deploy/edgeproxy.service with `systemd-analyze verify` (in a private mount
#   namespace where /usr/local/bin/edgeproxy exists: verify insists on ExecStart's
#   binary, and this must not install anything on the machine);
# - deploy/kubernetes/*.yaml against the Kubernetes OpenAPI schemas from the
#   kubernetes-models npm package (types, enums, required fields; unknown fields
#   are not caught), installed in $VALIDATE_CACHE, not in the project.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${VALIDATE_CACHE:-/var/cache/edgeproxy-validate}
MODELS_VERSION=5.1.0

echo "== systemd-analyze verify deploy/edgeproxy.service ($(systemd-analyze --version | head -1))"
unshare --mount --propagation private bash -c '
  mount -t tmpfs tmpfs /usr/local/bin
  printf "#!/bin/sh\n" >/usr/local/bin/edgeproxy && chmod +x /usr/local/bin/edgeproxy
  systemd-analyze verify deploy/edgeproxy.service'
echo "ok"

echo "== Kubernetes schemas (kubernetes-models $MODELS_VERSION)"
if [[ ! -f $CACHE/node_modules/kubernetes-models/package.json ]] || ! grep -q "\"version\": \"$MODELS_VERSION\"" "$CACHE/node_modules/kubernetes-models/package.json"; then
  mkdir -p "$CACHE"
  [[ -f $CACHE/package.json ]] || echo '{"private":true}' >"$CACHE/package.json"
  (cd "$CACHE" && npm install --silent --no-save "kubernetes-models@$MODELS_VERSION")
fi
bun deploy/validate.ts "$CACHE" deploy/kubernetes/*.yaml
