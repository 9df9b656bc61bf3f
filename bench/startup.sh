#!/usr/bin/env bash
# Start-up latency of `repeatr run --net none -- /bin/true` (also with
# limits, and without its init) against its peers on the same busybox
# rootfs, in one run: medians and ratios, also
# to `unshare --fork --pid --mount --uts --ipc --net --mount-proc`, the
# kernel's floor for those namespaces without a root switch.
#   bench/startup.sh [RUNS]          (default 200 runs per command)
# Needs root. Installs its peers (bubblewrap, runc, hyperfine) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200}
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v runc >/dev/null || need+=(runc)
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q
# Where .cargo/config.toml puts builds: target/<host triple>/.
bin=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/repeatr

work=$(mktemp -d /tmp/rpt-bench-XXXXXX)
cleanup() { runc delete -f rpt-bench >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
examples/make-busybox-rootfs.sh "$work/rootfs" >/dev/null
mkdir -p "$work/bundle" "$work/state"
(cd "$work/bundle" && runc spec)
python3 - "$work/bundle/config.json" "$work/rootfs" <<'PY'
import json, sys
p, root = sys.argv[1], sys.argv[2]
c = json.load(open(p))
c["root"] = {"path": root, "readonly": False}
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["process"].pop("rlimits", None)
json.dump(c, open(p, "w"))
PY

hyperfine -N --warmup 10 --runs "$runs" --export-json "$work/result.json" \
  -n "repeatr --net none" "$bin --state-dir $work/state run --net none --rootfs $work/rootfs -- /bin/true" \
  -n "repeatr --net none --memory 1g --pids-limit 100" "$bin --state-dir $work/state run --net none --memory 1g --pids-limit 100 --rootfs $work/rootfs -- /bin/true" \
  -n "repeatr --net none --no-init" "$bin --state-dir $work/state run --net none --no-init --rootfs $work/rootfs -- /bin/true" \
  -n "bwrap (pid,ipc,uts,net)" "bwrap --unshare-pid --unshare-ipc --unshare-uts --unshare-net --bind $work/rootfs / --proc /proc --dev /dev /bin/true" \
  -n "runc run" "runc run -b $work/bundle rpt-bench" \
  -n "unshare (kernel floor)" "unshare --fork --pid --mount --uts --ipc --net --mount-proc /bin/true" >/dev/null

python3 - "$work/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = {x["command"]: x["median"] for x in r}
ref = base["bwrap (pid,ipc,uts,net)"]
floor = base["unshare (kernel floor)"]
print("| command | median | mean | ratio to bwrap | ratio to the floor |")
print("|---|---|---|---|---|")
for x in r:
    print(f"| {x['command']} | {x['median']*1e3:.2f} ms | {x['mean']*1e3:.2f} ms | {x['median']/ref:.2f}x | {x['median']/floor:.2f}x |")
PY
