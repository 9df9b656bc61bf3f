#!/usr/bin/env bash
# Runs examples/hello.formula.json on a busybox rootfs and checks that its
# output has the expected ware id, on any machine (the rootfs ware's own id
# depends on the busybox build; the output's does not).
#   examples/hello-formula.sh [WAREHOUSE]          (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
EXPECTED=tar:5e5496ba7d0f64ac81bf3c0feddf2f4405698bfd492e1c770c05be5fccc942bc
repeatr=${REPEATR:-target/$(rustc -vV | sed -n 's/^host: //p')/debug/repeatr}
[ -x "$repeatr" ] || cargo build -q
work=$(mktemp -d /tmp/rpt-hello-XXXXXX)
trap 'rm -rf "$work"' EXIT
wares=${1:-$work/wares}
examples/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
root=$("$repeatr" pack "$work/rootfs" --warehouse "$wares")
sed "s|ROOTFS_WARE|$root|" examples/hello.formula.json > "$work/hello.formula.json"
# A ware cache of its own (see README, "The ware cache"), gone with $work.
printf '[network]\negress = "none"\n[cache]\ndir = "%s"\n' "$work/cache" > "$work/config.toml"
REPEATR_STATE_DIR=$work/state REPEATR_CONFIG=$work/config.toml \
  "$repeatr" run "$work/hello.formula.json" --warehouse "$wares" > "$work/record.json"
got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"]["/out"])' "$work/record.json")
cat "$work/record.json"
if [ "$got" != "$EXPECTED" ]; then
  echo "unexpected result: $got, expected $EXPECTED" >&2
  exit 1
fi
echo "ok: /out is $got"
