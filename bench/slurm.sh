#!/usr/bin/env bash
# The scheduler's overhead: TASKS formula tasks (default 50) as one Slurm
# array on the single-node Slurm of examples/slurm/up.sh (2 tasks at once on
# this 2-core VM: one CPU each), against the same tasks started directly,
# TASKS at most 2 at once (xargs -P2), through the same batch script
# (examples/slurm/array.sbatch, with the SLURM_* variables it reads set by
# hand). Rounds alternate; medians of RUNS rounds (default 3).
#   bench/slurm.sh            (as root; REPEATR=path, TASKS=50, RUNS=3)
# Each task is a bridged formula run (egress "none") that writes one file;
# the Slurm time is from sbatch to the last task gone from squeue. Slurm's
# own view (slurmd's log, ms resolution): how long after sbatch the first
# task is launched, and the gap between one task's end and the launch of the
# next on its CPU.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export REPEATR=${REPEATR:-$top/target/$(rustc -vV | sed -n 's/^host: //p')/release/repeatr}
[ -x "$REPEATR" ] || (cd "$top" && cargo build --release -q)
tasks=${TASKS:-50}
runs=${RUNS:-3}
D=${RPT_SLURM_DIR:-/tmp/rpt-slurm-bench}
W=$(mktemp -d /tmp/rpt-slurm-bench-work-XXXXXX)
chmod 0755 "$W"
trap '"$top/examples/slurm/down.sh" "$D" >/dev/null 2>&1; rm -rf "$W"' EXIT
export SLURM_CONF=$D/slurm.conf REPEATR_NODES=$D/nodes WAREHOUSE=$W/wares
node=$(hostname -s)
"$top/examples/make-busybox-rootfs.sh" "$W/rootfs" >/dev/null
root=$("$REPEATR" pack "$W/rootfs" --warehouse "$WAREHOUSE")
mkdir -p "$W/formulas"
for i in $(seq 1 "$tasks"); do
  printf '{"inputs": {"/": "%s"}, "action": {"exec": ["/bin/sh", "-c", "echo task-%s > /out/task"], "network": "bridge"}, "outputs": {"/out": {}}}\n' \
    "$root" "$i" > "$W/formulas/task-$i.json"
done
export FORMULA=$W/formulas/task-%a.json
now() { date +%s.%N; }

slurm_round() {   # R: prints seconds
  local r=$1 t0 j
  mkdir -p "$W/slurm-$r/out"
  t0=$(now)
  j=$(RECORDS=$W/slurm-$r/records sbatch --parsable --array=1-"$tasks" -o "$W/slurm-$r/out/%a.log" \
    "$top/examples/slurm/array.sbatch")
  while [ -n "$(squeue -h -j "$j" 2>/dev/null)" ]; do sleep 0.05; done
  echo "$(now) - $t0" | bc
  echo "$j" > "$W/slurm-$r/jobid"
  echo "$t0" > "$W/slurm-$r/t0"
}
direct_round() {   # R: prints seconds
  local r=$1 t0
  mkdir -p "$W/direct-$r/out"
  t0=$(now)
  seq 1 "$tasks" | RECORDS=$W/direct-$r/records SLURMD_NODENAME=$node xargs -P2 -I{} \
    sh -c 'SLURM_ARRAY_JOB_ID=direct'"$r"' SLURM_ARRAY_TASK_ID=$1 exec bash "$0" 2>"$2/$1.log"' \
    "$top/examples/slurm/array.sbatch" {} "$W/direct-$r/out"
  echo "$(now) - $t0" | bc
}
check_round() {   # DIR: every task's record says exit 0
  python3 - "$1" "$tasks" <<'PY'
import json, glob, sys
recs = glob.glob(f"{sys.argv[1]}/records/*.json")
bad = [r for r in recs if json.load(open(r))["exitCode"] != 0]
if len(recs) != int(sys.argv[2]) or bad:
    sys.exit(f"{sys.argv[1]}: {len(recs)} records, failed: {bad}")
PY
}

# SCHED: the SchedulerParameters of each cluster measured, one after the
# other ("" is Slurm's defaults).
for sched in "" ${SCHED-batch_sched_delay=0}; do
  "$top/examples/slurm/down.sh" "$D" >/dev/null 2>&1
  SLURM_SCHEDULER_PARAMETERS=$sched "$top/examples/slurm/up.sh" "$D" >/dev/null
  rm -f "$W/times"; rm -rf "$W"/slurm-* "$W"/direct-*
  echo "SchedulerParameters: ${sched:-Slurm defaults}"
  for r in $(seq 1 "$runs"); do
    s=$(slurm_round "$r" | head -1); check_round "$W/slurm-$r"
    d=$(direct_round "$r"); check_round "$W/direct-$r"
    printf 'round %d: slurm %.2f s, direct %.2f s\n' "$r" "$s" "$d"
    echo "$s $d" >> "$W/times"
  done

  python3 - "$W" "$D/log/slurmd.$node.log" "$tasks" "$runs" <<'PY'
import re, statistics, sys
from datetime import datetime
w, log, tasks, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [tuple(map(float, l.split())) for l in open(f"{w}/times")]
s = statistics.median(r[0] for r in rows)
d = statistics.median(r[1] for r in rows)
# slurmd's log: "Launching batch job N" and "[N.batch] done with job".
ts = lambda m: datetime.strptime(m, "%Y-%m-%dT%H:%M:%S.%f").timestamp()
launch, done = {}, {}
for line in open(log):
    m = re.match(r"\[(\S+)\] Launching batch job (\d+) ", line)
    if m: launch[int(m.group(2))] = ts(m.group(1))
    m = re.match(r"\[(\S+)\] \[(\d+)\.batch\] done with job", line)
    if m: done[int(m.group(2))] = ts(m.group(1))
first, runtimes = [], []
for r in range(1, runs + 1):
    j0 = int(open(f"{w}/slurm-{r}/jobid").read())
    t0 = float(open(f"{w}/slurm-{r}/t0").read())
    ids = [j for j in launch if j >= j0 and j < j0 + tasks]
    first.append(min(launch[j] for j in ids) - t0)
    runtimes += [done[j] - launch[j] for j in ids if j in done]
# Each task's end to the next launch: with 2 CPUs, a task's CPU is free from
# its end; pair the ends and launches in time order, 2 tasks apart.
ends, starts = sorted(done.values()), sorted(launch.values())
gaps = [b - a for a, b in zip(ends, starts[2:]) if 0 <= b - a < 30]
print(f"{tasks} formula tasks, 2 at a time, median of {runs} rounds:")
print(f"  through Slurm (sbatch --array to the last task gone): {s:.2f} s")
print(f"  started directly (xargs -P2, the same batch script):  {d:.2f} s")
print(f"  Slurm's overhead: {s - d:.2f} s in all, {(s - d) / tasks * 2 * 1000:.0f} ms per task on its CPU")
print(f"  (slurmd's log) sbatch to the first launch: median {statistics.median(first) * 1000:.0f} ms;"
      f" a task's launch to its end: median {statistics.median(runtimes) * 1000:.0f} ms;"
      f" a task's end to the next launch: median {statistics.median(gaps) * 1000:.0f} ms" if gaps else "")
PY
done
