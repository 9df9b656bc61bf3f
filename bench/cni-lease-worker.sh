#!/usr/bin/env bash
# N address acquire+release cycles through CNI's host-local IPAM plugin,
# called directly as a CNI runtime calls it (one exec per ADD and per DEL).
# host-local needs CNI_NETNS set but never opens it.
#   bench/cni-lease-worker.sh CONF N ID_PREFIX
set -euo pipefail
conf=$1 n=$2 prefix=$3
export CNI_NETNS=/dev/null CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni
for ((i = 0; i < n; i++)); do
  CNI_COMMAND=ADD CNI_CONTAINERID=$prefix-$i /usr/lib/cni/host-local <"$conf" >/dev/null
  CNI_COMMAND=DEL CNI_CONTAINERID=$prefix-$i /usr/lib/cni/host-local <"$conf" >/dev/null
done
