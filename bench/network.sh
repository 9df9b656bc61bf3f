#!/usr/bin/env bash
# The networked benchmarks of the leases work, against peers, in one run:
#   startup  repeatr run --net bridge -- /bin/true  vs bwrap --unshare-net
#            (and, in a stand-in netns, with egress nat and with --publish),
#            runc + CNI bridge/host-local (bench/cni-run.sh, whole cycle) and
#            podman run on a bridge network; hyperfine, medians and ratios.
#   leases   address acquire+release per second with 1, 8, 64 concurrent
#            processes: repeatr's examples/lease_bench vs CNI host-local
#            ADD+DEL (bench/cni-lease-worker.sh).
#   burst    200 networked jobs started at once: time until all 200 have an
#            address, and the RSS of the waiting runners (bench/burst.py);
#            repeatr vs runc + CNI.
#   live     repeatr run --net bridge -- /bin/true with 0, 1000 and 4000
#            live leases held meanwhile (examples/lease_hold: real leases and
#            slot locks, no containers; up to 500 on the job's own bridge and
#            subnet, the rest on lease-only bridges): start-up must not grow
#            with the jobs running.
#
#   scale    1,100 networked busybox jobs at once on one /21, over the hub
#            bridge and a leaf (the ignored test scale_1100_jobs_over_two_bridges
#            in tests/leaf_bridges.rs, release build): all-up time, host memory
#            per live job, every job pings its gateway, then nothing left.
#            Minutes; not part of "all". SCALE_JOBS=1100 overrides the count.
#
#   bench/network.sh [startup|leases|burst|live|scale|all]...  (default: all)
#
# Knobs (environment): RUNS=100 (hyperfine runs per start-up command),
# STATE_FS=tmpfs (where repeatr's state dirs are: tmpfs, like /run, or disk),
# LEASE_PROCS="1 8 64", RPT_LEASE_CYCLES=6400 and CNI_LEASE_CYCLES=640
# (cycles per measurement, split over the processes), LEASE_RUNS=3,
# BURST=200 (jobs), BURST_SLEEP=30 (seconds each job sleeps once up),
# BURST_PODMAN=0 (1: podman in the burst too; slow), BURST_RUNC=1 (0: no
# runc + CNI row, for a quick look at repeatr alone), LIVE_COUNTS="0 1000 4000"
# (live leases per live row), LIVE_ON_BRIDGE=500 (of those, on the job's bridge),
# LIVE_CYCLES=1000 (acquire+release pairs timed in-process per row).
#
# Needs root. Installs its peers if missing. Networks: only 198.19.200.0/21
# (inside 198.18.0.0/15), own bridge names (rptnb*, cninb0, rptnbp0), no
# gateway, no NAT, no forwarding (repeatr's egress rows run in a stand-in
# netns ${PREFIX}eg, where its NAT and forwarding stay); podman runs with its CNI backend and a
# private config (CONTAINERS_CONF) because netavark turns on
# net.ipv4.ip_forward. Everything made is removed on exit, also on ^C.
# No timing assertions: this prints numbers, it does not judge them.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
[ "$(id -u)" = 0 ] || { echo "network.sh: needs root" >&2; exit 1; }

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(all)
want() {
  local p
  for p in "${parts[@]}"; do [ "$p" = all ] || [ "$p" = "$1" ] && return 0; done
  return 1
}
for p in "${parts[@]}"; do
  case $p in startup | leases | burst | live | scale | all) ;; *)
    echo "usage: $0 [startup|leases|burst|live|scale|all]..." >&2
    exit 2
    ;;
  esac
done

# scale runs alone, before the rest: its test makes and removes all it uses.
if [[ " ${parts[*]} " == *" scale "* ]]; then
  echo "network.sh: scale: ${SCALE_JOBS:-1100} jobs (tests/leaf_bridges.rs, release)" >&2
  flock /tmp/repeatr-suite.lock cargo test --release -q --test leaf_bridges -- --ignored --nocapture \
    scale_1100_jobs_over_two_bridges
  rest=()
  for p in "${parts[@]}"; do [ "$p" = scale ] || rest+=("$p"); done
  [ ${#rest[@]} -gt 0 ] || exit 0
  parts=("${rest[@]}")
fi

RUNS=${RUNS:-100}
LEASE_PROCS=${LEASE_PROCS:-1 8 64}
RPT_LEASE_CYCLES=${RPT_LEASE_CYCLES:-6400}
CNI_LEASE_CYCLES=${CNI_LEASE_CYCLES:-640}
LEASE_RUNS=${LEASE_RUNS:-3}
BURST=${BURST:-200}
BURST_SLEEP=${BURST_SLEEP:-30}
BURST_PODMAN=${BURST_PODMAN:-0}
BURST_RUNC=${BURST_RUNC:-1}
LIVE_COUNTS=${LIVE_COUNTS:-0 1000 4000}
LIVE_ON_BRIDGE=${LIVE_ON_BRIDGE:-500}
LIVE_CYCLES=${LIVE_CYCLES:-1000}

need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v runc >/dev/null || need+=(runc)
command -v podman >/dev/null || need+=(podman)
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- names and subnets, all ours -------------------------------------------
RPT_BR_START=rptnb0 RPT_NET_START=198.19.200.0/22
CNI_BR=cninb0 CNI_NET=198.19.204.0/22
POD_BR=rptnbp0 POD_NET=198.19.208.0/22 POD_NETNAME=rptnb-pod
RPT_BR_LEASE=rptnbl0 RPT_NET_LEASE=198.19.212.0/22
HL_NET_LEASE=198.19.216.0/22 # host-local alone: no interface at all
RPT_BR_BURST=rptnb1 RPT_NET_BURST=198.19.220.0/22
RPT_BR_EGRESS=rptnbe0 RPT_NET_EGRESS=198.19.224.0/22 # inside the stand-in netns ${PREFIX}eg only
RPT_BR_LIVE=rptnbv0 RPT_NET_LIVE=198.19.232.0/21
# The live leases off the job's bridge: rows and slot locks only, on bridge
# names no link has (rptnbvN) and /22s of 198.18.192.0/18 that no route or
# address uses.
PREFIX=rptnb- # netns, runc and podman container names
BRIDGES=("$RPT_BR_START" "$CNI_BR" "$POD_BR" "$RPT_BR_LEASE" "$RPT_BR_BURST" "$RPT_BR_LIVE")

work=$(mktemp -d /tmp/rpt-netbench-XXXXXX)
# Where .cargo/config.toml puts builds: target/<host triple>/.
rel=$top/target/$(rustc -vV | sed -n 's/^host: //p')/release
bin=$rel/repeatr
lease_bin=$rel/examples/lease_bench
hold_bin=$rel/examples/lease_hold
export CONTAINERS_CONF=$work/containers.conf
podman=(podman --runtime runc --cgroup-manager cgroupfs --events-backend file)
fwd_before=$(cat /proc/sys/net/ipv4/ip_forward)

cleanup() {
  set +e
  trap - EXIT INT TERM
  # Jobs and containers first, then what they were plugged into.
  if [ -n "${hold_pid:-}" ]; then
    exec 9>&- # the holder releases its leases at EOF
    wait "$hold_pid" 2>/dev/null
  fi
  if [ -n "${burst_pid:-}" ] && kill -TERM "$burst_pid" 2>/dev/null; then
    for _ in $(seq 150); do kill -0 "$burst_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  for c in $(runc list -q 2>/dev/null | grep "^$PREFIX"); do runc delete -f "$c" >/dev/null 2>&1; done
  if [ -f "$CONTAINERS_CONF" ]; then
    for c in $("${podman[@]}" ps -a -q --filter "name=^$PREFIX" 2>/dev/null); do
      "${podman[@]}" rm -f "$c" >/dev/null 2>&1
    done
  fi
  if [ -x "$bin" ]; then
    for sd in "$work"/state/*; do
      [ -d "$sd" ] && "$bin" --state-dir "$sd" gc >/dev/null 2>&1
    done
  fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX"); do ip netns del "$ns"; done
  for br in "${BRIDGES[@]}"; do
    ip link show "$br" >/dev/null 2>&1 || continue
    for l in $(ip -o link show master "$br" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$l" 2>/dev/null
    done
    ip link del "$br" 2>/dev/null
  done
  findmnt -rn -o TARGET | grep "^$work/" | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$work"
  if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$fwd_before" ]; then
    echo "network.sh: net.ipv4.ip_forward changed during the run; set back to $fwd_before" >&2
    sysctl -qw net.ipv4.ip_forward="$fwd_before"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note() { echo "network.sh: $*" >&2; }
notes=() # printed with the results

# --- repeatr ----------------------------------------------------------------
have_rpt=0 have_rpt_net=0 have_lease=0
if cargo build --release -q 2>"$work/build.log"; then
  have_rpt=1
else
  notes+=("repeatr does not build here; its rows are left out ($(tail -n1 "$work/build.log"))")
fi
if [ -f examples/lease_bench.rs ] && want leases; then
  if cargo build --release -q --example lease_bench 2>"$work/build-lease.log"; then
    have_lease=1
  else
    notes+=("examples/lease_bench does not build; repeatr lease rows left out")
  fi
elif want leases; then
  notes+=("examples/lease_bench.rs is not there yet; repeatr lease rows left out")
fi
have_hold=0
if want live; then
  if cargo build --release -q --example lease_hold 2>"$work/build-hold.log"; then
    have_hold=1
  else
    notes+=("examples/lease_hold does not build; the live rows are left out")
  fi
fi

rpt_conf() { # FILE BRIDGE SUBNET
  printf '[network]\nbridge = "%s"\nsubnet = "%s"\nmtu = 1500\ndns = []\negress = "none"\n' "$2" "$3" >"$1"
}
rpt_conf "$work/rpt-startup.toml" "$RPT_BR_START" "$RPT_NET_START"
rpt_conf "$work/rpt-burst.toml" "$RPT_BR_BURST" "$RPT_NET_BURST"
rpt_conf "$work/rpt-live.toml" "$RPT_BR_LIVE" "$RPT_NET_LIVE"
# Egress on (NAT) only inside a stand-in host netns of our own: the
# runner's table and ip_forward=1 are that netns's, never the host's.
printf '[network]\nbridge = "%s"\nsubnet = "%s"\nmtu = 1500\ndns = []\negress = "nat"\n' "$RPT_BR_EGRESS" "$RPT_NET_EGRESS" >"$work/rpt-egress.toml"
# repeatr's state dirs live where its default, /run/repeatr, lives on a
# usual host: a tmpfs (systemd mounts /run so). STATE_FS=disk puts them
# in $work instead (on this kind of machine /run is not a tmpfs; there
# SQLite's checkpoint fsyncs, one job in ten, then reach the disk).
STATE_FS=${STATE_FS:-tmpfs}
case $STATE_FS in
tmpfs)
  mkdir -p "$work/state"
  mount -t tmpfs -o size=64m,mode=0700 rpt-netbench "$work/state"
  notes+=("repeatr state dirs on a tmpfs, as /run/repeatr is on a usual host (STATE_FS=disk: on $(findmnt -n -o FSTYPE --target "$work"))")
  ;;
disk) notes+=("repeatr state dirs on $(findmnt -n -o FSTYPE --target "$work") (STATE_FS=disk)") ;;
*)
  echo "STATE_FS must be tmpfs or disk" >&2
  exit 2
  ;;
esac
for s in startup none burst lease egress live; do
  mkdir -p "$work/state/$s"
  ln -s "$work/state/$s" "$work/state-$s"
done

# The job's "up" line: printed once it has an address from our range.
upcheck="ip -4 -o addr show 2>/dev/null | grep -q 'inet 198\\.19\\.' && echo up || echo noaddr"

# --- rootfs per runner (runc and podman add mount points to theirs) --------
examples/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
for r in bwrap runc podman; do cp -a "$work/rootfs" "$work/rootfs-$r"; done

if [ "$have_rpt" = 1 ]; then
  out=$("$bin" --state-dir "$work/state-startup" --config "$work/rpt-startup.toml" \
    run --net bridge --rootfs "$work/rootfs" -- /bin/sh -c "$upcheck" 2>"$work/probe.err" || true)
  if [ "$out" = up ]; then
    have_rpt_net=1
  else
    notes+=("repeatr run --net bridge does not work in this build yet ($(head -n1 "$work/probe.err")); repeatr bridge rows left out")
  fi
fi

if want startup || want burst; then
# --- runc + CNI -------------------------------------------------------------
mkdir -p "$work/cni"
cat >"$work/cni/bridge.conf" <<EOF
{"cniVersion": "1.0.0", "name": "${PREFIX}cni", "type": "bridge", "bridge": "$CNI_BR",
 "isGateway": false, "ipMasq": false, "hairpinMode": false,
 "ipam": {"type": "host-local", "ranges": [[{"subnet": "$CNI_NET"}]], "dataDir": "$work/cni/ipam"}}
EOF
runc_template() { # OUT ARGS_JSON
  (cd "$work/cni" && rm -f config.json && runc spec)
  python3 - "$work/cni/config.json" "$work/rootfs-runc" "$2" "$1" <<'PY'
import json, sys
src, root, args, out = sys.argv[1:]
c = json.load(open(src))
c["root"] = {"path": root, "readonly": True}
c["process"]["terminal"] = False
c["process"]["args"] = json.loads(args)
c["process"].pop("rlimits", None)
for ns in c["linux"]["namespaces"]:
    if ns["type"] == "network":
        ns["path"] = "@NETNS@"
json.dump(c, open(out, "w"))
PY
  rm -f "$work/cni/config.json"
}
runc_template "$work/cni/true.json" '["/bin/true"]'
# The first ADD makes the bridge: do it once alone, not 200 times at once.
bench/cni-run.sh "$work/cni/bridge.conf" "$work/cni/true.json" "${PREFIX}warm" \
  || notes+=("runc + CNI does not work here")

# --- podman: CNI backend, private config, our own bridge --------------------
mkdir -p "$work/podman-net"
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = []
[network]
network_backend = "cni"
cni_plugin_dirs = ["/usr/lib/cni"]
network_config_dir = "$work/podman-net"
default_network = "$POD_NETNAME"
EOF
cat >"$work/podman-net/$POD_NETNAME.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "$POD_NETNAME", "plugins": [
 {"type": "bridge", "bridge": "$POD_BR", "isGateway": false, "ipMasq": false, "hairpinMode": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_NET"}]], "dataDir": "$work/podman-ipam"}}]}
EOF
# podman's --rootfs is a switch: the first argument after the options is the rootfs.
pod_run=("${podman[@]}" run --rm --network "$POD_NETNAME")
have_podman=1
out=$("${pod_run[@]}" --name "${PREFIX}probe" --rootfs "$work/rootfs-podman" /bin/sh -c "$upcheck" 2>"$work/podman.err" || true)
if [ "$out" != up ]; then
  have_podman=0
  notes+=("podman bridge run failed ($(head -n1 "$work/podman.err")); podman rows left out")
fi
fi

results=()

# --- 1. networked start-up --------------------------------------------------
if want startup; then
  note "startup: hyperfine, $RUNS runs per command"
  cmds=(-n "bwrap --unshare-net"
    "bwrap --unshare-pid --unshare-ipc --unshare-uts --unshare-net --bind $work/rootfs-bwrap / --proc /proc --dev /dev /bin/true")
  if [ "$have_rpt_net" = 1 ]; then
    cmds+=(-n "repeatr --net bridge"
      "$bin --state-dir $work/state-startup --config $work/rpt-startup.toml run --net bridge --rootfs $work/rootfs -- /bin/true")
  fi
  if [ "$have_rpt_net" = 1 ] && command -v nft >/dev/null && ip netns add "${PREFIX}eg"; then
    standin="nsenter --net=/run/netns/${PREFIX}eg"
    # The first run sets the NAT up (once per bridge); hyperfine's warm-up
    # runs take that, the measured runs are the later ones.
    cmds+=(-n "bwrap --unshare-net, stand-in netns"
      "$standin bwrap --unshare-pid --unshare-ipc --unshare-uts --unshare-net --bind $work/rootfs-bwrap / --proc /proc --dev /dev /bin/true")
    cmds+=(-n "repeatr --net bridge, egress nat, stand-in netns"
      "$standin $bin --state-dir $work/state-egress --config $work/rpt-egress.toml run --net bridge --rootfs $work/rootfs -- /bin/true")
    # The same with one published port: its map element added at plug-in
    # and deleted at teardown (two nf_tables netlink batches).
    cmds+=(-n "repeatr --net bridge, egress nat, --publish, stand-in netns"
      "$standin $bin --state-dir $work/state-egress --config $work/rpt-egress.toml run --net bridge --publish 18080:80 --rootfs $work/rootfs -- /bin/true")
  else
    notes+=("no nft (apt-get install nftables) or no stand-in netns: the egress rows are left out")
  fi
  if [ "$have_rpt" = 1 ]; then
    cmds+=(-n "repeatr --net none"
      "$bin --state-dir $work/state-none run --net none --rootfs $work/rootfs -- /bin/true")
  fi
  cmds+=(-n "runc + CNI (cni-run.sh)"
    "$top/bench/cni-run.sh $work/cni/bridge.conf $work/cni/true.json ${PREFIX}start")
  if [ "$have_podman" = 1 ]; then
    cmds+=(-n "podman run, bridge" "${pod_run[*]} --name ${PREFIX}start --rootfs $work/rootfs-podman /bin/true")
  fi
  hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$work/startup.json" "${cmds[@]}" >/dev/null
  results+=(startup)
fi

# --- 2. lease throughput ----------------------------------------------------
if want leases; then
  cat >"$work/hl.conf" <<EOF
{"cniVersion": "1.0.0", "name": "${PREFIX}hl", "ipam": {"type": "host-local",
 "ranges": [[{"subnet": "$HL_NET_LEASE"}]], "dataDir": "$work/hl-ipam"}}
EOF
  cmds=()
  : >"$work/lease-cycles"
  for p in $LEASE_PROCS; do
    if [ "$have_lease" = 1 ]; then
      n=$(((RPT_LEASE_CYCLES + p - 1) / p))
      cmds+=(-n "repeatr P=$p" "$top/bench/lease-par.sh $p $lease_bin --state-dir $work/state-lease --subnet $RPT_NET_LEASE --bridge $RPT_BR_LEASE --iterations $n")
      echo "repeatr P=$p $((n * p))" >>"$work/lease-cycles"
    fi
    n=$(((CNI_LEASE_CYCLES + p - 1) / p))
    cmds+=(-n "host-local P=$p" "$top/bench/lease-par.sh $p $top/bench/cni-lease-worker.sh $work/hl.conf $n p$p-w@W@")
    echo "host-local P=$p $((n * p))" >>"$work/lease-cycles"
  done
  note "leases: hyperfine, $LEASE_RUNS runs per row"
  hyperfine -N --warmup 1 --runs "$LEASE_RUNS" --export-json "$work/leases.json" "${cmds[@]}" >/dev/null
  results+=(leases)
fi

# --- 2b. start-up with live leases -------------------------------------------
if want live && [ "$have_rpt_net" = 1 ] && [ "$have_hold" = 1 ]; then
  : >"$work/live.list"
  for n in $LIVE_COUNTS; do
    specs=()
    on=$((n < LIVE_ON_BRIDGE ? n : LIVE_ON_BRIDGE))
    [ "$on" -gt 0 ] && specs+=("$RPT_BR_LIVE=$RPT_NET_LIVE:$on")
    rest=$((n - on)) k=1
    while [ "$rest" -gt 0 ]; do
      c=$((rest < 1000 ? rest : 1000))
      specs+=("rptnbv$k=198.18.$((192 + 4 * k)).0/22:$c")
      rest=$((rest - c)) k=$((k + 1))
    done
    # Always a holder, for the in-process timing of the state's share.
    rm -f "$work/hold.fifo" && mkfifo "$work/hold.fifo"
    "$hold_bin" --state-dir "$work/state-live" --time "$RPT_BR_LIVE=$RPT_NET_LIVE:$LIVE_CYCLES" \
      "${specs[@]}" <"$work/hold.fifo" >"$work/hold.out" &
    hold_pid=$!
    exec 9>"$work/hold.fifo"
    for _ in $(seq 1200); do grep -q '^held' "$work/hold.out" && break; sleep 0.1; done
    grep -q "^held $n\$" "$work/hold.out" || { note "live: the holder did not take $n leases"; exit 1; }
    grep '^acquire ' "$work/hold.out" >"$work/live-$n.acq"
    note "live: $n live leases ($on on the job's bridge), hyperfine, $RUNS runs"
    if ! "$bin" --state-dir "$work/state-live" --config "$work/rpt-live.toml" run --net bridge --rootfs "$work/rootfs" -- /bin/true 2>"$work/live.err"; then
      note "live: a run with $n live leases fails: $(head -n1 "$work/live.err")"
      exit 1
    fi
    hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$work/live-$n.json" -n "$n live leases" \
      "$bin --state-dir $work/state-live --config $work/rpt-live.toml run --net bridge --rootfs $work/rootfs -- /bin/true" >/dev/null
    echo "$n $on" >>"$work/live.list"
    exec 9>&-
    wait "$hold_pid"
    hold_pid=
  done
  results+=(live)
elif want live; then
  notes+=("live rows left out: repeatr --net bridge or examples/lease_hold unavailable")
fi

# --- 3. burst of networked jobs ---------------------------------------------
if want burst; then
  jobsh="$upcheck; exec sleep $BURST_SLEEP"
  timeout=$((BURST_SLEEP * 4 + 60))
  : >"$work/burst.jsonl"
  burst() { # LABEL RUNNER CMD...
    local label=$1 runner=$2
    shift 2
    note "burst: $BURST x $label"
    python3 bench/burst.py --label "$label" --count "$BURST" --runner "$runner" \
      --timeout "$timeout" --out "$work/burst-one.json" -- "$@" &
    burst_pid=$!
    wait "$burst_pid" || true
    burst_pid=
    [ -f "$work/burst-one.json" ] && cat "$work/burst-one.json" >>"$work/burst.jsonl" && echo >>"$work/burst.jsonl"
    rm -f "$work/burst-one.json"
  }
  if [ "$have_rpt_net" = 1 ]; then
    burst "repeatr --net bridge" repeatr "$bin" --state-dir "$work/state-burst" \
      --config "$work/rpt-burst.toml" run --net bridge --rootfs "$work/rootfs" -- /bin/sh -c "$jobsh"
  fi
  if [ "$BURST_RUNC" = 1 ]; then
    runc_template "$work/cni/burst.json" "$(python3 -c 'import json,sys; print(json.dumps(["/bin/sh","-c",sys.argv[1]]))' "$jobsh")"
    burst "runc + CNI (cni-run.sh)" runc "$top/bench/cni-run.sh" "$work/cni/bridge.conf" \
      "$work/cni/burst.json" "${PREFIX}b@I@"
  fi
  if [ "$BURST_PODMAN" = 1 ] && [ "$have_podman" = 1 ]; then
    burst "podman run, bridge" podman "${pod_run[@]}" --name "${PREFIX}p@I@" \
      --rootfs "$work/rootfs-podman" /bin/sh -c "$jobsh"
  fi
  results+=(burst)
fi

# --- report -----------------------------------------------------------------
echo
echo "## repeatr networking benchmarks ($(date -u +%F), $(nproc) cores, $(uname -r))"
for r in "${results[@]}"; do
  python3 - "$r" "$work" "$BURST" <<'PY'
import json, os, sys
part, work, burst = sys.argv[1], sys.argv[2], int(sys.argv[3])
ms = lambda s: f"{s*1e3:.2f} ms"
if part == "startup":
    r = json.load(open(f"{work}/startup.json"))["results"]
    med = {x["command"]: x["median"] for x in r}
    ref, cni = med["bwrap --unshare-net"], med.get("runc + CNI (cni-run.sh)")
    print("\n### Networked start-up (`/bin/true`, hyperfine medians)\n")
    print("| command | median | mean | stddev | ratio to bwrap --unshare-net | runc+CNI / this |")
    print("|---|---|---|---|---|---|")
    for x in r:
        c = f"{cni/x['median']:.2f}x" if cni else "n/a"
        print(f"| {x['command']} | {ms(x['median'])} | {ms(x['mean'])} | {ms(x['stddev'] or 0)} | {x['median']/ref:.2f}x | {c} |")
    rb = med.get("repeatr --net bridge")
    print()
    if rb:
        print(f"- goal repeatr --net bridge <= 2x bwrap --unshare-net: measured {rb/ref:.2f}x")
        if cni:
            print(f"- goal repeatr --net bridge >= 10x faster than runc + CNI: measured {cni/rb:.2f}x")
    else:
        print("- repeatr --net bridge: not measured (see notes)")
    eg, egref = med.get("repeatr --net bridge, egress nat, stand-in netns"), med.get("bwrap --unshare-net, stand-in netns")
    if eg and egref:
        print(f"- goal repeatr with egress nat <= 1.5x bwrap --unshare-net (both in the stand-in netns): measured {eg/egref:.2f}x")
    pub = med.get("repeatr --net bridge, egress nat, --publish, stand-in netns")
    if eg and pub:
        print(f"- goal --publish <= +2 ms over the same run without it: measured {(pub-eg)*1e3:+.2f} ms")
elif part == "leases":
    r = json.load(open(f"{work}/leases.json"))["results"]
    cyc = {}
    for line in open(f"{work}/lease-cycles"):
        name, n = line.rsplit(" ", 1)
        cyc[name] = int(n)
    tput = {x["command"]: cyc[x["command"]] / x["median"] for x in r}
    procs = []
    for x in r:
        p = x["command"].split("P=")[1]
        if p not in procs:
            procs.append(p)
    print("\n### Lease throughput (acquire+release cycles per second, median of runs)\n")
    print("| processes | repeatr lease_bench | CNI host-local ADD+DEL | repeatr / host-local |")
    print("|---|---|---|---|")
    for p in procs:
        a, b = tput.get(f"repeatr P={p}"), tput.get(f"host-local P={p}")
        f = lambda v: f"{v:,.0f}/s" if v else "n/a"
        ratio = f"{a/b:.1f}x" if a and b else "n/a"
        print(f"| {p} | {f(a)} | {f(b)} | {ratio} |")
    print()
    for x in r:
        print(f"- {x['command']}: {cyc[x['command']]} cycles in {x['median']:.3f} s (median of {len(x['times'])})")
elif part == "live":
    rows = []
    for line in open(f"{work}/live.list"):
        n, on = map(int, line.split())
        x = json.load(open(f"{work}/live-{n}.json"))["results"][0]
        t = sorted(x["times"])
        acq = open(f"{work}/live-{n}.acq").read().split()
        a50, a95, r50 = (int(acq[i]) / 1e3 for i in (2, 4, 7))
        rows.append((n, on, x["median"], x["mean"], t[int(len(t) * 0.95) - 1] if t else 0, a50, a95, r50))
    base = rows[0] if rows else None
    print("\n### Start-up with live leases (`repeatr run --net bridge -- /bin/true`, hyperfine; acquire/release in-process, lease_hold --time)\n")
    print("| live leases | on the job's bridge | run median | run mean | run p95 | run median minus the first row's | acquire p50 | acquire p95 | release p50 | acquire p50 minus the first row's |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, on, med, mean, p95, a50, a95, r50 in rows:
        print(f"| {n} | {on} | {ms(med)} | {ms(mean)} | {ms(p95)} | {(med - base[2]) * 1e3:+.2f} ms "
              f"| {a50:.2f} ms | {a95:.2f} ms | {r50:.2f} ms | {a50 - base[5]:+.2f} ms |")
    print()
    if len(rows) > 1:
        worst = max(r[2] for r in rows[1:])
        worst_a = max(r[5] for r in rows[1:])
        print(f"- goal at most +1 ms over {rows[0][0]} live leases: run median {(worst - base[2]) * 1e3:+.2f} ms, acquire p50 {worst_a - base[5]:+.2f} ms (worst rows; the run medians carry the host's load)")
elif part == "burst":
    rows = [json.loads(l) for l in open(f"{work}/burst.jsonl") if l.strip()]
    ref = next((x for x in rows if x["label"].startswith("runc")), None)
    print(f"\n### {burst} networked jobs started at once\n")
    print("| runner | up | failed | all up | median up | runner RSS while waiting (median / max) | runner VmHWM (median / max) | host memory per live job | time ratio to runc+CNI |")
    print("|---|---|---|---|---|---|---|---|---|")
    mb = lambda k: f"{k/1024:.2f} MB" if k is not None else "n/a"
    for x in rows:
        t = f"{x['all_up_s']:.2f} s" if x["all_up_s"] else "n/a"
        m = f"{x['median_up_s']:.2f} s" if x["median_up_s"] else "n/a"
        ratio = f"{x['all_up_s']/ref['all_up_s']:.2f}x" if ref and ref["all_up_s"] and x["all_up_s"] else "n/a"
        print(f"| {x['label']} | {x['up']}/{x['count']} | {x['failed']} | {t} | {m} | "
              f"{mb(x['rss_kb_median'])} / {mb(x['rss_kb_max'])} ({x['runners_sampled']} sampled) | "
              f"{mb(x['hwm_kb_median'])} / {mb(x['hwm_kb_max'])} | {mb(x.get('host_kb_per_job'))} | {ratio} |")
    print()
    rp = next((x for x in rows if x["label"].startswith("repeatr")), None)
    if rp and rp["all_up_s"]:
        print(f"- goal: {burst} repeatr jobs all up in under 5 s: measured {rp['all_up_s']:.2f} s")
    if rp and rp["hwm_kb_max"]:
        print(f"- goal: a waiting repeatr runner under 4 MB RSS: measured VmRSS max {mb(rp['rss_kb_max'])}, VmHWM max {mb(rp['hwm_kb_max'])}")
    for x in rows:
        for e in x.get("sample_errors", []):
            print(f"- {x['label']} stderr sample: {e.strip()[:200]}")
PY
done
if [ ${#notes[@]} -gt 0 ]; then
  echo
  echo "Notes:"
  for n in "${notes[@]}"; do echo "- $n"; done
fi
