#!/usr/bin/env bash
# Stops what examples/slurm/up.sh started and removes what it made: the
# jobs (scancel, then their slurmstepds), slurmd(s), slurmctld, munged,
# Slurm's freezer cgroups, each node's repeatr bridge and state, the second
# node's namespaces and link, and DIR. Safe to run more than once, and after
# a half-finished up.sh.
#   examples/slurm/down.sh [DIR]      (as root; DIR default /tmp/repeatr-slurm)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
D=${1:-${RPT_SLURM_DIR:-/tmp/repeatr-slurm}}
repeatr=${REPEATR:-$(command -v repeatr || echo "$here/../../target/$(rustc -vV | sed -n 's/^host: //p')/release/repeatr")}
[ -d "$D" ] || exit 0
export SLURM_CONF=$D/slurm.conf

# What is left of this Slurm's jobs: every process in its nodes' freezer
# cgroups (proctrack/cgroup puts each step's there, slurmstepd included),
# and any slurmstepd whose environment has this SLURM_CONF (slurmd passes
# its own on): never a process merely started by someone who exported it.
ours() {
  local n p
  for n in $(ls "$D/nodes" 2>/dev/null); do
    [ -d "/sys/fs/cgroup/freezer/slurm_$n" ] && find "/sys/fs/cgroup/freezer/slurm_$n" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
  for p in $(pgrep -x slurmstepd); do
    grep -qzxF "SLURM_CONF=$D/slurm.conf" "/proc/$p/environ" 2>/dev/null && echo "$p"
  done
}
stop_pids() {   # PID...: TERM, up to 5 s, then KILL
  local pid left
  kill -TERM "$@" 2>/dev/null
  for _ in $(seq 50); do
    left=
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null
}

if [ -f "$D/slurmctld.pid.up" ] && kill -0 "$(cat "$D/slurmctld.pid.up")" 2>/dev/null; then
  scancel --user=root 2>/dev/null
  for _ in $(seq 100); do
    [ -z "$(squeue -h 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
daemons=$(cat "$D"/slurmd.*.pid.up "$D/slurmctld.pid.up" 2>/dev/null)
# shellcheck disable=SC2086 # one pid a word
[ -n "$daemons" ] && stop_pids $daemons
# slurmstepds (and anything under them) outlive slurmd.
for pid in $(ours); do kill -KILL "$pid" 2>/dev/null; done
[ -f "$D/munged.pid" ] && stop_pids "$(cat "$D/munged.pid")"

# proctrack/cgroup's freezer cgroups: slurm_NODE/uid_U/job_J/step_S,
# deepest first (a v1 rmdir fails while a child exists).
for node_dir in "$D"/nodes/*/; do
  [ -d "$node_dir" ] || continue
  n=$(basename "$node_dir")
  for top in /sys/fs/cgroup/*/slurm_"$n"; do
    [ -d "$top" ] && find "$top" -depth -type d -exec rmdir {} + 2>/dev/null
  done
done

# Each node's repeatr: its bridge and anything a killed runner left.
for node_dir in "$D"/nodes/*/; do
  [ -d "$node_dir/state" ] || continue
  n=$(basename "$node_dir")
  netns=()
  if [ "$n" = node2 ] && [ -f "$D/node2.ns.pid" ]; then
    netns=(nsenter --target "$(cat "$D/node2.ns.pid")" --net)
  fi
  [ -x "$repeatr" ] && "${netns[@]}" "$repeatr" gc --all -q --state-dir "$node_dir/state" \
    --config "$node_dir/config.toml" >/dev/null 2>&1
done
[ -x "$here/node.sh" ] && "$here/node.sh" down "$D"
rm -rf "$D"
echo "down: $D removed"
