#!/usr/bin/env bash
# Brings up a single-node Slurm on this host from Debian's packages, for
# examples/slurm/array.sbatch and test.sh: munged, slurmctld and slurmd run
# in the foreground of their own (stopped by their pids), with every file
# under one scratch dir; examples/slurm/down.sh stops them and removes it.
#   examples/slurm/up.sh [DIR]        (as root; DIR default /tmp/repeatr-slurm)
# Then: export SLURM_CONF=DIR/slurm.conf (DIR/env says so), sinfo, sbatch ...
# Its daemons listen on the ports 6817 (slurmctld), 6818 and 6819 (the
# nodes' slurmd): one such Slurm runs on a machine at a time.
#
# Each node gets its own repeatr config (DIR/nodes/NODE/config.toml): its
# own subnet slice of 198.18.0.0/15 and egress = "none" (a test host: no NAT,
# nothing changed on the host's firewall), and its own state dir, as
# /run/repeatr is on a real node. SLURM_SCHEDULER_PARAMETERS goes into
# slurm.conf's SchedulerParameters. SLURM_NODES=2 adds a second slurmd in a
# network + UTS namespace of its own (examples/slurm/node.sh), a node with
# its own bridge, subnet and state dir, as a second host would be.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
D=${1:-${RPT_SLURM_DIR:-/tmp/repeatr-slurm}}
nodes=${SLURM_NODES:-1}
[ "$(id -u)" = 0 ] || { echo "up.sh: run as root" >&2; exit 1; }
command -v slurmctld >/dev/null && command -v munged >/dev/null || {
  echo "up.sh: slurm or munge missing: apt-get install -y slurm-wlm munge" >&2; exit 1; }
if [ -e "$D/slurm.conf" ]; then
  echo "up.sh: $D is in use (examples/slurm/down.sh $D first)" >&2; exit 1
fi
# Whatever fails from here on, nothing stays behind.
trap 'echo "up.sh: failed, cleaning up" >&2; "$here/down.sh" "$D" >&2' ERR

node=$(hostname -s)
mkdir -p "$D"/{state,spool,log,munge}
chmod 0755 "$D"
# munged refuses a socket dir others may not enter ("execute permissions
# for all required") and one others may write to.
chown munge:munge "$D/munge"
chmod 0755 "$D/munge"

# munge, as the munge user, with its socket and files under $D.
setpriv --reuid munge --regid munge --init-groups \
  munged -F --socket="$D/munge/munge.socket.2" --pid-file="$D/munge/munged.pid" \
  --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" \
  </dev/null >/dev/null 2>&1 &
echo $! > "$D/munged.pid"
for _ in $(seq 50); do [ -S "$D/munge/munge.socket.2" ] && break; sleep 0.1; done
[ -S "$D/munge/munge.socket.2" ] || { echo "up.sh: munged did not start ($D/munge/munged.log)" >&2; false; }

# The controller is reached at 127.0.0.1 on one node; with a second node in
# its own network namespace, at the host end of that node's link.
ctl_addr=127.0.0.1
[ "$nodes" -ge 2 ] && ctl_addr=198.19.255.1

cat > "$D/cgroup.conf" <<CONF
# This host is a v1/v2 hybrid whose controllers are all on v1 (cgroup2 is
# mounted but empty): the v2 plugin would find none of them.
CgroupPlugin=cgroup/v1
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
CONF

# proctrack/cgroup: each step's processes are tracked in a freezer cgroup
# (slurm_NODE/uid_U/job_J/step_S), which scancel signals and, at the end,
# kills. The job's processes nest in it (repeatr puts its job's cgroup
# under the runner's in every hierarchy, and it leaves v1 freezer alone
# where cgroup2 has cgroup.kill). Usage comes from jobacct_gather/linux
# (the step's process tree, the job's processes included): the cgroup
# gatherer would also move every step into a memory cgroup of Slurm's, at
# the root of the memory hierarchy. sacct needs slurmdbd; without it
# usage is read with sstat while a step runs, and jobcomp/filetxt records
# each job's end.
cat > "$D/slurm.conf" <<CONF
ClusterName=repeatr
SlurmctldHost=$node($ctl_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket.2
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.%n.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# repeatr's --stop-timeout (10 s by default) must fit in KillWait: at a
# scancel or the time limit Slurm sends SIGTERM, and SIGKILL to the whole
# step KillWait later, which would kill the runner before it released its
# address (the next run or repeatr gc reclaims it then).
KillWait=30
MaxArraySize=1001
CONF
# Slurm starts batch jobs in a scheduling pass at most every
# batch_sched_delay (3 s by default): array tasks start in waves 3 s apart
# (bench/slurm.sh). SLURM_SCHEDULER_PARAMETERS=batch_sched_delay=0 makes
# that the controller's 1 s background pass.
[ -n "${SLURM_SCHEDULER_PARAMETERS:-}" ] && echo "SchedulerParameters=$SLURM_SCHEDULER_PARAMETERS" >> "$D/slurm.conf"
echo "NodeName=$node NodeAddr=127.0.0.1 Port=6818 CPUs=$(nproc) State=UNKNOWN" >> "$D/slurm.conf"
all=$node
if [ "$nodes" -ge 2 ]; then
  echo "NodeName=node2 NodeAddr=198.19.255.2 Port=6819 CPUs=$(nproc) State=UNKNOWN" >> "$D/slurm.conf"
  all=$node,node2
fi
echo "PartitionName=debug Nodes=$all Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO" >> "$D/slurm.conf"

# Node $node's repeatr: the first /24 of 198.18.0.0/15 for the example (on
# a cluster, one slice per node: README, "Running on a cluster").
mk_node_config() {   # NODE BRIDGE SUBNET
  mkdir -p "$D/nodes/$1/state"
  chmod 0700 "$D/nodes/$1/state"
  cat > "$D/nodes/$1/config.toml" <<CONF
[network]
bridge = "$2"
subnet = "$3"
egress = "none"

[warehouse]
# Remote wares (an s3:// WAREHOUSE) land here once per node.
download_dir = "$D/nodes/$1/downloads"

[cache]
# The node's unpacked wares (a real node: /var/cache/repeatr/wares).
dir = "$D/nodes/$1/cache"
CONF
}
mk_node_config "$node" rslurm0 198.18.64.0/24
echo "export SLURM_CONF=$D/slurm.conf" > "$D/env"

if [ "$nodes" -ge 2 ]; then
  mk_node_config node2 rslurm0 198.18.65.0/24
  "$here/node.sh" up "$D"
fi
SLURM_CONF=$D/slurm.conf slurmctld -D -f "$D/slurm.conf" </dev/null >/dev/null 2>&1 &
echo $! > "$D/slurmctld.pid.up"
SLURM_CONF=$D/slurm.conf slurmd -D -N "$node" -f "$D/slurm.conf" </dev/null >/dev/null 2>&1 &
echo $! > "$D/slurmd.$node.pid.up"
[ "$nodes" -ge 2 ] && "$here/node.sh" start "$D"

export SLURM_CONF=$D/slurm.conf
for _ in $(seq 100); do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | awk '$2=="idle"' | wc -l)
  [ "$idle" -ge "$nodes" ] && break
  sleep 0.2
done
if [ "$idle" -lt "$nodes" ]; then
  echo "up.sh: $idle of $nodes nodes idle after 20 s (logs in $D/log)" >&2
  sinfo -N >&2 || true
  false
fi
sinfo -N
echo "up: export SLURM_CONF=$D/slurm.conf"
