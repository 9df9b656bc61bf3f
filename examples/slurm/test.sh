#!/usr/bin/env bash
# Runs repeatr under a Slurm of its own (examples/slurm/up.sh: one node, or
# two with SLURM_NODES=2) and checks:
#  1. a 20-task array, one formula per task, all succeed, each job with an
#     address of its own from the node's subnet, all records' results right;
#  2. scancel of a running task whose job ignores SIGTERM ends it within
#     repeatr's stop timeout (137), and one that does not at once (143),
#     with no lease, job record, veth or cgroup left behind;
#  3. the job's processes are in cgroups under the Slurm step's (under
#     slurmstepd's job cgroup) in every hierarchy, and sstat sees the job's
#     CPU time while it runs; Slurm's job completion log has every job;
#  4. with SLURM_NODES=2: a second node (examples/slurm/node.sh) hands out
#     addresses from its own subnet, independently of the first.
# The wares (the root in, each task's output out) live in an S3 warehouse:
# a moto_server of the test's own (scripts/test.sh installs it), on
# 127.0.0.1, or with two nodes on the host's end of node2's veth
# (198.19.255.1), the one address of the host both nodes reach.
# WAREHOUSE_KIND=dir uses a local warehouse directory instead.
#   examples/slurm/test.sh            (as root; ~1 min)
# REPEATR=path/to/repeatr (default: this tree's release build, built if
# missing). Everything it starts and makes is removed at the end (down.sh),
# also when a check fails. Not under /tmp/repeatr-suite.lock itself: the
# Rust test that calls it (tests/slurm.rs) runs under it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
export REPEATR=${REPEATR:-$top/target/$(rustc -vV | sed -n 's/^host: //p')/release/repeatr}
[ -x "$REPEATR" ] || (cd "$top" && cargo build --release -q)
nodes=${SLURM_NODES:-1}
D=${RPT_SLURM_DIR:-/tmp/rpt-slurm-test}
W=$(mktemp -d /tmp/rpt-slurm-work-XXXXXX)
chmod 0755 "$W"
moto_pid=
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
  [ -n "${KEEP:-}" ] && { echo "kept $D and $W"; return; }
  "$here/down.sh" "$D" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
t0=$(date +%s.%N)

SLURM_NODES=$nodes "$here/up.sh" "$D" >/dev/null
export SLURM_CONF=$D/slurm.conf
node=$(hostname -s)
export REPEATR_NODES=$D/nodes

"$top/examples/make-busybox-rootfs.sh" "$W/rootfs" >/dev/null
export WAREHOUSE=$W/wares
if [ "${WAREHOUSE_KIND:-s3}" = s3 ]; then
  moto=$(command -v moto_server || echo /var/cache/repeatr-test/moto/bin/moto_server)
  [ -x "$moto" ] || fail "moto_server missing (scripts/test.sh installs it), or WAREHOUSE_KIND=dir"
  s3_host=127.0.0.1
  [ "$nodes" -ge 2 ] && s3_host=198.19.255.1
  s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$moto" -H "$s3_host" -p "$s3_port" >"$W/moto.log" 2>&1 &
  moto_pid=$!
  export AWS_ENDPOINT_URL=http://$s3_host:$s3_port AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  unset AWS_SESSION_TOKEN AWS_ENDPOINT_URL_S3 AWS_DEFAULT_REGION
  # The bucket (moto checks no signature, only that a key is named).
  python3 - "$AWS_ENDPOINT_URL" <<'PY' || fail "moto on $AWS_ENDPOINT_URL never came up: $(cat "$W/moto.log")"
import sys, time, urllib.request
auth = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"
for _ in range(300):
    try:
        urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/wares", method="PUT",
                               headers={"Authorization": auth}), timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
  export WAREHOUSE=s3://wares/slurm
fi
# Packed as on a submit host of its own: nothing of it in a node's
# download area or cache, so each node fetches the root from the store.
printf '[warehouse]\ndownload_dir = "%s"\n' "$W/submit-downloads" > "$W/submit.toml"
root=$("$REPEATR" pack "$W/rootfs" --warehouse "$WAREHOUSE" --config "$W/submit.toml")
echo "warehouse: $WAREHOUSE (root ware $root)"

# A formula: bridged, prints its address on stderr (the task's Slurm log),
# runs $3 (shell), then writes only what depends on the task into /out.
# $1 the file, $2 the task's text.
formula() {
  python3 - "$1" "$root" "$2" "$3" <<'PY'
import json, sys
path, root, text, pre = sys.argv[1:]
script = "echo addr: $(ip -4 -o addr show dev eth0 | awk '{print $4}') >&2; " + \
    (pre + "; " if pre else "") + "echo " + text + " > /out/task"
json.dump({"inputs": {"/": root},
           "action": {"exec": ["/bin/sh", "-c", script], "network": "bridge"},
           "outputs": {"/out": {}}}, open(path, "w"))
PY
}
mkdir -p "$W/formulas" "$W/out" "$W/records"
for i in $(seq 1 20); do formula "$W/formulas/task-$i.json" "task-$i" ""; done

leases_empty() {   # NODE: no lease, no job record, no veth, no job cgroup
  local n=$1 ns=()
  [ "$n" = node2 ] && ns=(nsenter --target "$(cat "$D/node2.ns.pid")" --net)
  local st=$REPEATR_NODES/$n/state cf=$REPEATR_NODES/$n/config.toml
  [ "$("${ns[@]}" "$REPEATR" leases --json --state-dir "$st" --config "$cf")" = "[]" ] || return 1
  [ -z "$(ls "$st/jobs" 2>/dev/null | grep -v '^$')" ] || return 1
  local links
  for _ in 1 2 3 4 5; do   # a dump the kernel interrupted (links changing) is retried
    links=$("${ns[@]}" ip -o link show 2>&1) && ! grep -q 'Dump was interrupted' <<<"$links" && break
  done
  ! grep -q 'rslurm0-' <<<"$links" || return 1
  [ -z "$(find /sys/fs/cgroup -maxdepth 6 -name "repeatr-*.slurm-*" 2>/dev/null)" ] || return 1
}
wait_done() {   # JOBID SECONDS: until squeue no longer lists it
  local j=$1 limit=$2
  for _ in $(seq $((limit * 10))); do
    [ -z "$(squeue -h -j "$j" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  return 1
}

### 1. a 20-task array
a0=$(date +%s.%N)
arr=$(FORMULA="$W/formulas/task-%a.json" RECORDS=$W/records \
  sbatch --parsable --array=1-20 -o "$W/out/%A_%a.log" "$here/array.sbatch")
wait_done "$arr" 120 || fail "the array did not finish in 120 s"
a1=$(date +%s.%N)
python3 - "$W" "$arr" 20 "$REPEATR_NODES" <<'PY' || fail "array results (above)"
import ipaddress, json, re, sys, tomllib
w, arr, n, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
subnets = {}
import os
for node in os.listdir(nodes):
    with open(f"{nodes}/{node}/config.toml", "rb") as f:
        subnets[node] = ipaddress.ip_network(tomllib.load(f)["network"]["subnet"])
addrs, bad = {}, []
for i in range(1, n + 1):
    rec = json.load(open(f"{w}/records/{arr}_{i}.json"))
    log = open(f"{w}/out/{arr}_{i}.log").read()
    if rec["exitCode"] != 0 or "/out" not in rec["results"]:
        bad.append(f"task {i}: record {rec}")
    m = re.search(r"^addr: (\S+)/\d+$", log, re.M)
    if not m:
        bad.append(f"task {i}: no address in its log: {log!r}")
        continue
    ip = ipaddress.ip_address(m.group(1))
    ran_on = re.search(r"^array.sbatch: job \S+ task \S+ on (\S+)$", log, re.M).group(1)
    if ip not in subnets[ran_on]:
        bad.append(f"task {i}: {ip} is not in {ran_on}'s subnet {subnets[ran_on]}")
    addrs[i] = ip
if len(set(addrs.values())) != len(addrs):
    bad.append(f"addresses not distinct: {sorted(map(str, addrs.values()))}")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
# Every task ran a formula of its own: 20 different results.
[ "$(python3 -c 'import json,sys; print(len({json.load(open(f))["results"]["/out"] for f in sys.argv[1:]}))' "$W"/records/"${arr}"_*.json)" = 20 ] \
  || fail "the 20 tasks' results are not 20 different wares"
for n in "$REPEATR_NODES"/*/; do leases_empty "$(basename "$n")" || fail "leftovers on $(basename "$n") after the array"; done
if [ -n "$moto_pid" ]; then
  # Each node downloaded the root once for all its tasks (its ware cache
  # serves the rest), and every task's output went up to the store.
  gets=$(grep -c "\"GET /wares/slurm/tar/${root#tar:}.tar " "$W/moto.log" || true)
  [ "$gets" -ge 1 ] && [ "$gets" -le "$nodes" ] \
    || fail "the root ware was fetched $gets times from S3 for $nodes node(s)"
  for r in "$W"/records/"${arr}"_*.json; do
    out=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"]["/out"])' "$r")
    grep -q "\"PUT /wares/slurm/tar/${out#tar:}.tar " "$W/moto.log" || fail "$r: output $out not saved to S3"
  done
  pass "wares from S3: the root fetched once per node ($gets), all 20 outputs saved there"
fi
pass "20-task array: all exit 0, 20 distinct addresses, no leases left ($(printf '%.1f' "$(echo "$a1 - $a0" | bc)") s)"

### 2 and 3. scancel, with the job's cgroups and usage looked at while it runs
# A job that ignores SIGTERM and first burns 2 s of CPU (its shell's own
# utime, 200 ticks, whatever the load: sstat counts whole seconds), and one
# that does not ignore it.
formula "$W/formulas/stubborn.json" stubborn \
  'trap "" TERM; while [ $(cut -d" " -f14 /proc/$$/stat) -lt 200 ]; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done; echo burnt >&2; sleep 600'
formula "$W/formulas/polite.json" polite 'sleep 600'
stop_timeout=3

in_node() {   # run a repeatr subcommand with node $node's config and state
  "$REPEATR" "$@" --state-dir "$REPEATR_NODES/$node/state" --config "$REPEATR_NODES/$node/config.toml"
}
wait_log() {   # FILE TEXT SECONDS
  for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

check_cgroups() {   # JOBID CMD_PID SLURMSTEPD_PID: the job's cgroups under the step's
  python3 - "$@" <<'PY'
import sys
job, cmd, stepd = sys.argv[1:]
def cg(pid):
    out = {}
    for line in open(f"/proc/{pid}/cgroup"):
        hid, ctrl, path = line.rstrip("\n").split(":", 2)
        out[ctrl or "cgroup2"] = path
    return out
c, s = cg(cmd), cg(stepd)
bad = []
for ctrl, path in c.items():
    base = s[ctrl]
    under = path == base or path.startswith(base.rstrip("/") + "/")
    print(f"  {ctrl:>16}: job {path}  slurmstepd {base}")
    if not under:
        bad.append(f"{ctrl}: {path} is not under slurmstepd's {base}")
# proctrack/cgroup's freezer: slurmstepd in .../job_J, the step's processes,
# the job's included, in .../job_J/step_batch.
if not c["freezer"].endswith(f"/job_{job}/step_batch") or not s["freezer"].endswith(f"/job_{job}"):
    bad.append(f"freezer: job {c['freezer']}, slurmstepd {s['freezer']}: not Slurm's step_batch")
if "/repeatr-job." not in c["cgroup2"]:
    bad.append(f"cgroup2: {c['cgroup2']} is not repeatr's job cgroup")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

scancel_case() {   # NAME EXPECTED_EXIT MIN_SECONDS MAX_SECONDS
  local name=$1 want=$2 min=$3 max=$4 j runner init cmd stepd t1 t2 dt rec
  j=$(FORMULA="$W/formulas/$name.json" RECORDS=$W/records STOP_TIMEOUT=${stop_timeout}s \
    sbatch --parsable -w "$node" -o "$W/out/$name.log" "$here/array.sbatch")
  if [ "$name" = stubborn ]; then
    wait_log "$W/out/$name.log" burnt 60 || fail "$name: the job did not start (log: $(cat "$W/out/$name.log" 2>&1))"
  else
    wait_log "$W/out/$name.log" 'addr:' 60 || fail "$name: the job did not start (log: $(cat "$W/out/$name.log" 2>&1))"
  fi
  read -r runner init < <(in_node ps --json | python3 -c '
import json, sys
jobs = [j for j in json.load(sys.stdin) if j["id"] == sys.argv[1]]
print(jobs[0]["pid"], jobs[0]["init_pid"]) if jobs else print("- -")' "slurm-$j-0")
  [ "$runner" != - ] || fail "$name: repeatr ps does not list slurm-$j-0"
  [ "$(in_node leases --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] \
    || fail "$name: not one lease while it runs"
  cmd=$(cut -d' ' -f1 "/proc/$init/task/$init/children")
  stepd=$(awk '/^PPid:/ {print $2}' "/proc/$runner/status")
  [ "$(cat "/proc/$stepd/comm")" = slurmstepd ] || fail "$name: the runner's parent is $(cat "/proc/$stepd/comm"), not slurmstepd"
  if [ "$name" = stubborn ]; then
    echo "cgroups of the job's command (pid $cmd) and of slurmstepd (pid $stepd):"
    check_cgroups "$j" "$cmd" "$stepd" || fail "the job's cgroups are not under the Slurm step's"
    pass "the job's cgroups nest under the Slurm step's in every hierarchy"
    # What Slurm counts for the step, the job's processes included: sstat
    # shows the gatherer's last sample (JobAcctGatherFrequency=task=5).
    for _ in $(seq 24); do
      usage=$(sstat -n -P -a -j "$j" -o JobID,AveCPU,MaxRSS 2>&1 | grep '\.batch|' || true)
      python3 - "$usage" <<'PY' && break
import sys
_, cpu, rss = (sys.argv[1].split("|") + ["", "", ""])[:3]
parts = [float(x) for x in cpu.replace("-", ":").split(":") if x]
secs = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
sys.exit(0 if secs > 0 and rss not in ("", "0") else 1)
PY
      last=$usage usage=
      sleep 0.5
    done
    echo "sstat -j $j (JobID|AveCPU|MaxRSS): ${usage:-nothing}"
    [ -n "$usage" ] || fail "sstat shows no CPU time for the job in 12 s (it said: ${last:-nothing})"
    pass "sstat sees the job's CPU time and memory"
  fi
  t1=$(date +%s.%N)
  scancel "$j"
  wait_done "$j" 60 || fail "$name: still running 60 s after scancel"
  t2=$(date +%s.%N)
  dt=$(echo "$t2 - $t1" | bc)
  rec=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["exitCode"])' "$W/records/${j}_0.json")
  [ "$rec" = "$want" ] || fail "$name: record exitCode $rec, expected $want"
  python3 -c "import sys; sys.exit(0 if $min <= $dt <= $max else 1)" \
    || fail "$name: scancel took $dt s (expected $min to $max s)"
  leases_empty "$node" || fail "$name: leftovers after scancel: $(in_node leases 2>&1; ls "$REPEATR_NODES/$node/state/jobs")"
  pass "scancel of the $name job: gone in $(printf '%.1f' "$dt") s, exit $rec, lease released, nothing left"
}
# Bounds that say what was asked, not how fast this host is: the stubborn
# job is killed no sooner than the stop timeout (and not minutes late), the
# polite one ends before the stop timeout would have run out.
scancel_case stubborn 137 $stop_timeout $((stop_timeout + 20))
scancel_case polite 143 0 $stop_timeout

# Slurm's own record of every job's end (jobcomp/filetxt: no slurmdbd).
grep -c 'JobState=COMPLETED' "$D/log/jobcomp.log" | grep -qx 20 || fail "jobcomp: not 20 COMPLETED jobs: $(cat "$D/log/jobcomp.log")"
[ "$(grep -c 'JobState=CANCELLED' "$D/log/jobcomp.log")" = 2 ] || fail "jobcomp: not 2 CANCELLED jobs"
pass "Slurm's job completion log: 20 completed, 2 cancelled"

### 4. a second node: its own subnet, its own leases
if [ "$nodes" -ge 2 ]; then
  for i in $(seq 1 10); do formula "$W/formulas/two-$i.json" "two-$i" ""; done
  a=$(FORMULA="$W/formulas/two-%a.json" RECORDS=$W/records \
    sbatch --parsable --array=1-10 -w "$node" -o "$W/out/%A_%a.log" "$here/array.sbatch")
  b=$(FORMULA="$W/formulas/two-%a.json" RECORDS=$W/records \
    sbatch --parsable --array=1-10 -w node2 -o "$W/out/%A_%a.log" "$here/array.sbatch")
  wait_done "$a" 120 && wait_done "$b" 120 || fail "the two nodes' arrays did not finish in 120 s"
  python3 - "$W" "$a" "$b" "$node" "$REPEATR_NODES" <<'PY' || fail "two nodes (above)"
import ipaddress, json, re, sys, tomllib
w, a, b, node1, nodes = sys.argv[1:]
bad, seen = [], {}
for arr, node in ((a, node1), (b, "node2")):
    with open(f"{nodes}/{node}/config.toml", "rb") as f:
        net = ipaddress.ip_network(tomllib.load(f)["network"]["subnet"])
    ips = []
    for i in range(1, 11):
        rec = json.load(open(f"{w}/records/{arr}_{i}.json"))
        log = open(f"{w}/out/{arr}_{i}.log").read()
        on = re.search(r"^array.sbatch: job \S+ task \S+ on (\S+)$", log, re.M).group(1)
        ip = ipaddress.ip_address(re.search(r"^addr: (\S+)/\d+$", log, re.M).group(1))
        if rec["exitCode"] != 0 or on != node or ip not in net:
            bad.append(f"{node} task {i}: exit {rec['exitCode']}, ran on {on}, address {ip} (subnet {net})")
        ips.append(ip)
    if len(set(ips)) != len(ips):
        bad.append(f"{node}: addresses not distinct: {ips}")
    seen[node] = ips
    print(f"  {node} ({net}): {' '.join(str(ip) for ip in ips)}")
# Each node leases round-robin from its own subnet and state dir: over
# the whole test each node's jobs had its subnet's first hosts, one each,
# from .2 on (the gateway is .1), however the nodes' jobs interleaved.
import glob
for node in ("node2", node1):
    with open(f"{nodes}/{node}/config.toml", "rb") as f:
        net = ipaddress.ip_network(tomllib.load(f)["network"]["subnet"])
    offs = []
    for path in glob.glob(f"{w}/out/*.log"):
        log = open(path).read()
        on = re.search(r"^array.sbatch: job \S+ task \S+ on (\S+)$", log, re.M)
        ip = re.search(r"^addr: (\S+)/\d+$", log, re.M)
        if on and ip and on.group(1) == node:
            offs.append(int(ipaddress.ip_address(ip.group(1))) - int(net.network_address))
    print(f"  {node}: {len(offs)} jobs in the whole test, hosts .{min(offs)} to .{max(offs)}")
    if sorted(offs) != list(range(2, 2 + len(offs))):
        bad.append(f"{node}: its jobs' hosts are not .2 to .{1 + len(offs)}: {sorted(offs)}")
for x in bad:
    print(x, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  leases_empty "$node" && leases_empty node2 || fail "leftovers after the two nodes' arrays"
  pass "two nodes: 10 tasks each, each node's addresses from its own subnet and state, nothing left"
fi
echo "all passed in $(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc)") s"
