#!/usr/bin/env bash
# Throughput of `repeatr pack DIR` (hash + normalized tar + fsync into a
# warehouse) against `tar -cf - . | sha256sum` on the same >= 100 MB tree,
# in one hyperfine run: medians, MB/s and the ratio.
#   bench/pack.sh [RUNS] [SOURCE_DIR]   (default 10 runs, /usr/lib/x86_64-linux-gnu)
# Needs root (to read every file of the source). Installs hyperfine if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
src=${2:-/usr/lib/x86_64-linux-gnu}
command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null
cargo build --release -q
# Where .cargo/config.toml puts builds: target/<host triple>/.
bin=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/repeatr

work=$(mktemp -d /tmp/rpt-packbench-XXXXXX)
trap 'rm -rf "$work"' EXIT
# A copy, so both commands read the same files from the same filesystem;
# sockets cannot be in a tar and setid/device files would be refused.
cp -a "$src" "$work/tree"
find "$work/tree" \( -type s -o -type b -o -type c \) -delete
chmod -R u-s,g-s "$work/tree"
mb=$(du -sm --apparent-size "$work/tree" | cut -f1)
if [ "$mb" -lt 100 ]; then
  # Top up with generated files: random content, so nothing compresses away.
  mkdir -p "$work/tree/generated"
  for i in $(seq 1 $(( (100 - mb) / 4 + 1 ))); do
    head -c 4M /dev/urandom > "$work/tree/generated/f$i"
  done
  mb=$(du -sm --apparent-size "$work/tree" | cut -f1)
fi
files=$(find "$work/tree" | wc -l)
echo "tree: $mb MB, $files entries"

hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/result.json" \
  --prepare "rm -rf $work/wh" \
  -n "repeatr pack" "$bin pack $work/tree --warehouse $work/wh" \
  -n "tar | sha256sum" "sh -c 'tar -C $work/tree -cf - . | sha256sum'" >/dev/null

python3 - "$work/result.json" "$mb" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
mb = float(sys.argv[2])
med = {x["command"]: x["median"] for x in r}
ref = med["tar | sha256sum"]
print("| command | median | MB/s | ratio to tar \\| sha256sum |")
print("|---|---|---|---|")
for x in r:
    print(f"| {x['command']} | {x['median']*1e3:.0f} ms | {mb/x['median']:.0f} | {x['median']/ref:.2f}x |")
PY
