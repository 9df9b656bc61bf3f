#!/usr/bin/env bash
# A big root filesystem through every way repeatr takes one, first run and
# later runs, beside `podman run` of the same tree (`podman import`):
#   --rootfs DIR, --rootfs TAR (the ware cache unpacks it once), a formula
#   whose / is the tree as a ware (preset=rootfs), podman run --network none.
# Then the host memory of 10 concurrent jobs on one cached tar against one
# job (MemTotal - MemAvailable, and Shmem, from /proc/meminfo).
#   bench/bigroot.sh [TREE]   default: the Debian root of the tests
#                             (/var/cache/repeatr-test/deb, 586 MB, 14,000
#                             entries), else a generated ~500 MB, ~20,000-file tree
# RUNS (default 20) later runs and FIRST (default 3) first runs each.
# BEFORE=path/to/an/older/repeatr adds its --rootfs TAR and formula runs.
# Needs root, hyperfine and podman. Its cache, state and warehouse are its own.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-20}
first=${FIRST:-3}
cargo build --release -q
bin=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/repeatr

work=$(mktemp -d /var/tmp/rpt-bigroot-XXXXXX)
chmod 700 "$work"
cleanup() {
  podman rmi -f rpt-bigroot >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

tree=${1:-/var/cache/repeatr-test/deb}
if [ ! -d "$tree" ]; then
  tree=$work/tree
  mkdir -p "$tree"
  examples/make-busybox-rootfs.sh "$tree" >/dev/null
  python3 - "$tree" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(200):
    os.makedirs(f"{root}/usr/lib/gen/{d:03}", exist_ok=True)
    for f in range(100):
        size = 50_000 if f % 2 else 2_000
        with open(f"{root}/usr/lib/gen/{d:03}/{f:03}", "wb") as out:
            out.write(os.urandom(size))
PY
fi
echo "tree: $tree, $(du -sh "$tree" | cut -f1), $(find "$tree" -xdev | wc -l) entries"
tar -C "$tree" -cf "$work/root.tar" .
# Old enough for the cache's inode index to prove it unchanged.
touch -d '-1 min' "$work/root.tar" 2>/dev/null || true
sleep 1.2

cat > "$work/config.toml" <<EOC
[network]
egress = "none"
[cache]
dir = "$work/cache"
EOC
rpt="$bin --config $work/config.toml --state-dir $work/state"
ware=$($rpt pack "$tree" --warehouse "$work/wares" --filter preset=rootfs)
cat > "$work/formula.json" <<EOF2
{"inputs": {"/": "$ware"}, "action": {"exec": ["/bin/true"], "helpers": {"make_cwd": false, "make_home": false}}}
EOF2
# podman's default rlimits cannot be set in every sandbox (runc: "error
# setting rlimit type 7"); the job's rlimits are the host's, as repeatr's.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf
t0=$(date +%s.%N)
podman import -q "$work/root.tar" rpt-bigroot >/dev/null
t1=$(date +%s.%N)
echo "podman import: $(python3 -c "print(f'{$t1-$t0:.2f}')") s"

extra=()
if [ -n "${BEFORE:-}" ]; then
  # An older repeatr knows no [cache]: a config without it.
  printf '[network]\negress = "none"\n' > "$work/config-old.toml"
  old="$BEFORE --config $work/config-old.toml --state-dir $work/state"
  extra+=(-n "before: rootfs TAR" "$old run --net none --rootfs $work/root.tar -- /bin/true")
  extra+=(-n "before: formula" "$old run $work/formula.json --warehouse $work/wares")
fi
# A first run gets an empty cache by moving the last one aside, not by
# deleting it: ext4 then spends seconds of system time per first run in
# recently_deleted(), skipping the inodes of the tree just deleted, which
# is the bench's doing and not a first run's cost.
cat > "$work/fresh-cache.sh" <<EOF2
#!/bin/sh
[ -d "$work/cache" ] && mv "$work/cache" "$work/old-cache.\$(date +%s%N)"
exit 0
EOF2
chmod +x "$work/fresh-cache.sh"
hyperfine -N --runs "$first" --prepare "$work/fresh-cache.sh" --export-json "$work/first.json" \
  -n "first: rootfs TAR" "$rpt run --net none --rootfs $work/root.tar -- /bin/true" \
  -n "first: formula" "$rpt run $work/formula.json --warehouse $work/wares" >/dev/null
$rpt run --net none --rootfs "$work/root.tar" -- /bin/true
$rpt run "$work/formula.json" --warehouse "$work/wares" >/dev/null
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/later.json" \
  -n "rootfs DIR" "$rpt run --net none --rootfs $tree -- /bin/true" \
  -n "later: rootfs TAR" "$rpt run --net none --rootfs $work/root.tar -- /bin/true" \
  -n "later: formula" "$rpt run $work/formula.json --warehouse $work/wares" \
  -n "podman run --network none" "podman run --rm --network none rpt-bigroot /bin/true" \
  "${extra[@]}" >/dev/null

python3 - "$work/first.json" "$work/later.json" <<'PY'
import json, sys
rows = [x for p in sys.argv[1:] for x in json.load(open(p))["results"]]
base = next(x["median"] for x in rows if x["command"] == "rootfs DIR")
print("| command | median | min | max | ratio to rootfs DIR |")
print("|---|---|---|---|---|")
for x in rows:
    print(f"| {x['command']} | {x['median']*1e3:.1f} ms | {x['min']*1e3:.1f} ms | {x['max']*1e3:.1f} ms | {x['median']/base:.2f}x |")
PY

# Memory: N jobs at once on the cached tar, each reading every file of its
# root (so its pages are in memory), then waiting.
mem() { awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} /^Shmem:/ {s=$2} END {print (t-a)/1024, s/1024}' /proc/meminfo; }
jobs_mem() {
  local n=$1 pids=() i
  sync; echo 3 > /proc/sys/vm/drop_caches
  sleep 1
  read -r used0 shmem0 < <(mem)
  for i in $(seq "$n"); do
    $rpt run --net none --name "rpt-mem-$i" --rootfs "$work/root.tar" -- /bin/sh -c \
      'find / -xdev -type f -exec cat {} + >/dev/null 2>&1; echo up; sleep 600' > "$work/up.$i" 2>/dev/null &
    pids+=($!)
  done
  for i in $(seq "$n"); do
    until grep -q up "$work/up.$i" 2>/dev/null; do sleep 0.2; done
  done
  sleep 1
  read -r used1 shmem1 < <(mem)
  for i in $(seq "$n"); do $rpt kill "rpt-mem-$i" >/dev/null 2>&1 || true; done
  wait "${pids[@]}" 2>/dev/null || true
  echo "$n $used0 $used1 $shmem0 $shmem1"
}
one=$(jobs_mem 1)
ten=$(jobs_mem 10)
python3 - "$one" "$ten" <<'PY'
import sys
(n1, u0, u1, s0, s1), (n10, v0, v1, t0, t1) = ([float(x) for x in a.split()] for a in sys.argv[1:])
print()
print("| jobs on one cached tar | host memory used (MemTotal-MemAvailable) | growth | Shmem growth |")
print("|---|---|---|---|")
print(f"| 1 | {u1:.0f} MiB | {u1-u0:+.0f} MiB | {s1-s0:+.0f} MiB |")
print(f"| 10 | {v1:.0f} MiB | {v1-v0:+.0f} MiB | {t1-t0:+.0f} MiB |")
print(f"10 jobs / 1 job, host memory used: {v1/u1:.2f}x (goal: at most 1.2x)")
PY
