#!/usr/bin/env bash
# `repeatr gc` after a host-wide crash: GC_STALE stale leases (default
# 10,000, 1000 per bridge: a hub's worth on each of GC_STALE/1000 lease-only
# bridges), made by examples/lease_hold (real rows, sidecars and slot locks,
# no containers) and SIGKILLed, then `gc --dry-run`, `leases` and `gc` timed,
# each on a fresh set, ROUNDS times (default 5), medians. GC_LIVE (default
# 1000) more leases stay held by a second holder in the "with live" rows,
# which gc must keep (its rows cost it a probe each).
#
#   bench/gc.sh
#
# Needs root (the state dir is a tmpfs of its own, as /run is on a usual
# host). No network device is touched: the bridges are names in the state
# dir only (rptgcN, 198.18.128.0/17), no link or route uses them. No timing
# assertions: this prints numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "gc.sh: needs root" >&2; exit 1; }
GC_STALE=${GC_STALE:-10000} GC_LIVE=${GC_LIVE:-1000} ROUNDS=${ROUNDS:-5}
rel=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release
cargo build --release -q --bin repeatr --example lease_hold
work=$(mktemp -d /tmp/rpt-gcbench-XXXXXX)
mount -t tmpfs -o size=512m tmpfs "$work"
cleanup() {
  set +e
  umount "$work" && rmdir "$work"
}
trap cleanup EXIT
python3 - "$rel" "$work" "$GC_STALE" "$GC_LIVE" "$ROUNDS" <<'PY'
import os, shutil, signal, statistics, subprocess, sys, time
rel, work, stale, live, rounds = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
bin, hold = f"{rel}/repeatr", f"{rel}/examples/lease_hold"
conf = f"{work}/conf.toml"
with open(conf, "w") as f:
    f.write('[network]\nbridge = "rptgcx"\nsubnet = "198.19.252.0/22"\nmtu = 1500\ndns = []\negress = "none"\n')

def holder(state, specs):
    """Starts lease_hold; returns it once it holds every lease."""
    p = subprocess.Popen([hold, "--state-dir", state, *specs], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("held"):
            return p
    raise SystemExit(f"lease_hold exited: {p.wait()}")

def specs(first, count):
    # 1000 per bridge, a /22 each in 198.18.128.0/17.
    out = []
    for i in range(first, first + (count + 999) // 1000):
        n = min(1000, count - (i - first) * 1000)
        out.append(f"rptgc{i}=198.18.{128 + 4 * i}.0/22:{n}")
    return out

def timed(state, *args):
    t = time.perf_counter()
    r = subprocess.run([bin, "--state-dir", state, "--config", conf, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"repeatr {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
    return dt, r.stdout

results = {}
for with_live in (False, True):
    label = f"{stale} stale" + (f" + {live} live" if with_live else "")
    for _ in range(rounds):
        state = f"{work}/state"
        shutil.rmtree(state, ignore_errors=True)
        keep = holder(state, specs(stale // 1000 + 1, live)) if with_live else None
        doomed = holder(state, specs(0, stale))
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        for args in (("gc", "--dry-run"), ("leases",), ("gc",)):
            dt, out = timed(state, *args)
            results.setdefault((label, " ".join(args)), []).append(dt)
            if args == ("gc",):
                reclaimed = [l for l in out.splitlines() if l.startswith("reclaimed lease")]
                jobs = {l.split()[4] for l in reclaimed}
                assert len(jobs) == stale, f"gc reclaimed {len(jobs)} of {stale}: {[l for l in reclaimed if not l.split()[4].startswith('hold-')][:5]} {len(reclaimed)}"
        if keep:
            left = sum(1 for l in timed(state, "leases")[1].splitlines() if " running " in f" {l} ")
            keep.stdin.close()
            keep.wait()
            assert left == live, f"{left} of {live} live leases left after gc"
        shutil.rmtree(state, ignore_errors=True)

print(f"\n### `repeatr gc` after a crash ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {os.uname().release}, tmpfs state dir, {rounds} rounds)\n")
print("| leases | command | median | min | max |")
print("|---|---|---|---|---|")
for (label, cmd), v in results.items():
    print(f"| {label} | `{cmd}` | {statistics.median(v)*1e3:.1f} ms | {min(v)*1e3:.1f} ms | {max(v)*1e3:.1f} ms |")
PY
