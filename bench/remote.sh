#!/usr/bin/env bash
# bench/remote.sh [RUNS] [SIZE_MB]: formula runs whose root ware (a busybox
# rootfs plus SIZE_MB, default 200, of random data) comes from a local
# warehouse directory, against the same ware from an S3 warehouse (moto on
# 127.0.0.1, started here): the first run (nothing downloaded yet) and
# RUNS later ones (default 5, medians), each as one `repeatr run` wall
# time. Needs root, busybox-static and moto_server (scripts/test.sh
# installs it). Traffic only to 127.0.0.1; everything made is removed on
# exit. Prints a markdown table; asserts nothing about timings.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
runs=${1:-5}
size_mb=${2:-200}
[ "$(id -u)" = 0 ] || { echo "remote.sh: needs root" >&2; exit 1; }
command -v moto_server >/dev/null || { echo "remote.sh: moto_server missing (pip install 'moto[server]')" >&2; exit 1; }
cargo build --release -q
bin=$top/target/$(rustc -vV | sed -n 's/^host: //p')/release/repeatr

work=$(mktemp -d /tmp/rpt-remotebench-XXXXXX)
moto_pid=
cleanup() {
  set +e
  [ -n "$moto_pid" ] && kill "$moto_pid" && wait "$moto_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

examples/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
head -c "${size_mb}M" /dev/urandom >"$work/rootfs/payload"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>"$work/moto.log" &
moto_pid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
curl -s -o /dev/null -X PUT "http://127.0.0.1:$port/bench" \
  -H "Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00"

cat >"$work/config.toml" <<TOML
[network]
bridge = "rptrb0"
subnet = "198.19.232.0/24"
egress = "none"
dns = []
[cache]
dir = "$work/cache"
[warehouse]
download_dir = "$work/downloads"
[warehouse.s3]
endpoint = "http://127.0.0.1:$port"
access_key_id = "bench"
secret_access_key = "bench"
TOML
rpt() { env -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_S3 "$bin" --state-dir "$work/state" --config "$work/config.toml" "$@"; }

root=$(rpt pack "$work/rootfs" --warehouse "$work/wares")
rpt pack "$work/rootfs" --warehouse s3://bench/w >/dev/null
cat >"$work/f.json" <<JSON
{"inputs": {"/": "$root"}, "action": {"exec": ["/bin/sh", "-c", "echo done > /out/a"]}, "outputs": {"/out": {}}}
JSON

ms() { # CMD...: wall time of one run in ms
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
series() { # LABEL WAREHOUSE: first run, then RUNS later ones
  local label=$1 wh=$2 first later
  rm -rf "$work/downloads" "$work/cache"
  first=$(ms rpt run "$work/f.json" --warehouse "$wh" --save-to "$work/out-wares")
  later=$(for _ in $(seq "$runs"); do ms rpt run "$work/f.json" --warehouse "$wh" --save-to "$work/out-wares"; done | median)
  echo "| $label | $first ms | $later ms |"
}
gets_before=$(grep -c "GET /bench/w/tar/" "$work/moto.log" || true)
rows=()
rows+=("$(series "local warehouse dir" "$work/wares")")
rows+=("$(series "S3 (moto, 127.0.0.1)" "s3://bench/w")")
gets=$(($(grep -c "GET /bench/w/tar/" "$work/moto.log" || true) - gets_before))

echo
echo "## remote warehouses ($(date -u +%F), $(nproc) cores, root ware $(du -sm "$work/wares/tar" | cut -f1) MB)"
echo
echo "| root ware from | first run | later runs (median of $runs) |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "- GETs of wares from S3 in all $((runs + 1)) S3 runs: $gets (the later runs are served by the ware cache)"
echo "- a first run (download area and ware cache emptied) verifies the root ware while it unpacks it into the cache; later runs use the cached tree; the page cache is left alone (a shared host), so a local dir's first run reads a warm file"
