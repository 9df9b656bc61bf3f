#!/usr/bin/env bash
# One networked container the way people assemble it by hand from runc and
# CNI: netns, CNI bridge+host-local ADD, `runc run` in that netns, CNI DEL,
# netns gone. bench/network.sh times the whole cycle.
#   bench/cni-run.sh CNI_CONF RUNC_CONFIG_TEMPLATE ID
# RUNC_CONFIG_TEMPLATE is a runc config.json whose network namespace path is
# the placeholder @NETNS@; the bundle is made next to it and removed after.
# Exits with the container's status.
set -euo pipefail
conf=$1 tmpl=$2 id=$3
ns=/run/netns/$id
bundle=$(dirname "$tmpl")/bundle-$id
export CNI_CONTAINERID=$id CNI_NETNS=$ns CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni

added=0
teardown() {
  if [ "$added" = 1 ]; then
    CNI_COMMAND=DEL /usr/lib/cni/bridge <"$conf" >/dev/null || true
  fi
  ip netns del "$id" 2>/dev/null || true
  rm -rf "$bundle"
}
trap teardown EXIT

ip netns add "$id"
mkdir -p "$bundle"
sed "s|@NETNS@|$ns|" "$tmpl" >"$bundle/config.json"
added=1
CNI_COMMAND=ADD /usr/lib/cni/bridge <"$conf" >/dev/null
status=0
runc run -b "$bundle" "$id" </dev/null || status=$?
exit "$status"
