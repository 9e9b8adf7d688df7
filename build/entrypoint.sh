#!/bin/sh
# The image's entrypoint. The binary carries file capabilities
# (cap_bpf,cap_net_admin,cap_perfmon=ep), and the kernel refuses to execute such a file when
# the container's bounding set cannot grant them: all the user would see is
# "exec /usr/local/bin/edgeproxy: operation not permitted". Say what to add
# instead (exit 2, like edgeproxy's own environment errors).
bnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
missing=
[ "$(( (0x$bnd >> 39) & 1 ))" = 1 ] || missing="BPF"
[ "$(( (0x$bnd >> 12) & 1 ))" = 1 ] || missing="${missing:+$missing,}NET_ADMIN"
[ "$(( (0x$bnd >> 38) & 1 ))" = 1 ] || missing="${missing:+$missing,}PERFMON"
if [ -n "$missing" ]; then
  echo "edgeproxy: privileges: the container lacks $missing: run it with --cap-add BPF,NET_ADMIN,PERFMON (Kubernetes: securityContext.capabilities.add [BPF, NET_ADMIN, PERFMON])" >&2
  exit 2
fi
exec /usr/local/bin/edgeproxy "$@"
