#!/usr/bin/env bash
# A second Slurm node on this host, for up.sh's SLURM_NODES=2: a slurmd in a
# network + UTS namespace of its own (hostname node2), linked to the host by
# a veth pair (host 198.19.255.1/30, node 198.19.255.2/30; no forwarding, no
# NAT: it reaches slurmctld and nothing else). Its repeatr makes its bridge
# in that namespace, with its own config and state dir, as on a host of its
# own. Unix sockets are not per network namespace, so it shares munged.
#   node.sh up DIR      make the namespaces and the link
#   node.sh start DIR   start its slurmd (after slurmctld)
#   node.sh down DIR    remove the namespaces and the link (after down.sh
#                       stopped its slurmd)
set -euo pipefail
cmd=${1:?usage: node.sh up|start|down DIR}
D=${2:?usage: node.sh up|start|down DIR}
host_if=rslurm-h2
case "$cmd" in
  up)
    # A holder process keeps the namespaces alive (no name in /run/netns,
    # so nothing outlives it but what down removes).
    unshare --net --uts sh -c 'hostname node2; ip link set lo up; exec sleep infinity' \
      </dev/null >/dev/null 2>&1 &
    echo $! > "$D/node2.ns.pid"
    ns=$(cat "$D/node2.ns.pid")
    for _ in $(seq 50); do
      [ "$(readlink "/proc/$ns/ns/uts")" != "$(readlink /proc/self/ns/uts)" ] && break
      sleep 0.05
    done
    ip link add "$host_if" type veth peer name eth0 netns "$ns"
    ip addr add 198.19.255.1/30 dev "$host_if"
    ip link set "$host_if" up
    nsenter --target "$ns" --net ip addr add 198.19.255.2/30 dev eth0
    nsenter --target "$ns" --net ip link set eth0 up
    ;;
  start)
    ns=$(cat "$D/node2.ns.pid")
    SLURM_CONF=$D/slurm.conf nsenter --target "$ns" --net --uts \
      slurmd -D -f "$D/slurm.conf" </dev/null >/dev/null 2>&1 &
    echo $! > "$D/slurmd.node2.pid.up"
    ;;
  down)
    if [ -f "$D/node2.ns.pid" ]; then
      kill -KILL "$(cat "$D/node2.ns.pid")" 2>/dev/null || true
    fi
    ip link del "$host_if" 2>/dev/null || true
    ;;
  *) echo "usage: node.sh up|start|down DIR" >&2; exit 2 ;;
esac
