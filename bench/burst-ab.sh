#!/usr/bin/env bash
# A/B of repeatr binaries on a burst of networked jobs: rounds alternate
# between the binaries, so the host's drift hits them all alike.
#   bench/burst-ab.sh LABEL=BINARY [LABEL=BINARY...]
# Environment: N=1000 (jobs per burst), ROUNDS=3, SLEEP=5 (seconds each job
# sleeps once up). Each binary gets its own bridge (rptab0..2), subnet
# (198.19.228.0/22, then .240 and .244: no other bench uses them) and
# tmpfs state dir; no egress. Prints each binary's all-up times and median, and the host memory
# per live job (bench/burst.py). Everything made is removed on exit.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 3 ] || { echo "usage: $0 LABEL=BINARY... (1 to 3)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: run as root (network namespaces, bridges)" >&2; exit 2; }
N=${N:-1000} ROUNDS=${ROUNDS:-3} SLEEP=${SLEEP:-5}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/rpt-burst-ab-XXXXXX)
nets=(198.19.228.0/22 198.19.240.0/22 198.19.244.0/22)

cleanup() {
  local i=0
  for lb in "$@"; do
    local st=$work/state-$i
    if mountpoint -q "$st"; then
      "${lb#*=}" --state-dir "$st" --config "$work/conf-$i.toml" gc --all >/dev/null 2>&1 || true
      umount "$st"
    fi
    ip link del "rptab$i" 2>/dev/null || true
    i=$((i + 1))
  done
  rm -rf "$work"
}
trap 'cleanup "$@"' EXIT

"$top/examples/make-busybox-rootfs.sh" "$work/rootfs" >/dev/null
i=0
for lb in "$@"; do
  printf '[network]\nbridge = "rptab%s"\nsubnet = "%s"\nmtu = 1500\ndns = []\negress = "none"\n' \
    "$i" "${nets[$i]}" >"$work/conf-$i.toml"
  mkdir "$work/state-$i"
  mount -t tmpfs -o size=64m,mode=0700 rpt-burst-ab "$work/state-$i"
  i=$((i + 1))
done

upcheck="ip -4 -o addr show 2>/dev/null | grep -q 'inet 198\\.19\\.' && echo up || echo noaddr"
for r in $(seq "$ROUNDS"); do
  i=0
  for lb in "$@"; do
    python3 "$top/bench/burst.py" --label "${lb%%=*}" --count "$N" --runner repeatr \
      --timeout $((SLEEP * 4 + 120)) --out "$work/ab-$i-$r.json" -- \
      "${lb#*=}" --state-dir "$work/state-$i" --config "$work/conf-$i.toml" \
      run --net bridge --rootfs "$work/rootfs" -- /bin/sh -c "$upcheck; exec sleep $SLEEP"
    sleep 3
    i=$((i + 1))
  done
done

python3 - "$work" "$ROUNDS" "$@" <<'PY'
import json, statistics, sys
work, rounds, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"| binary | all up, each round | median | host CPU per job (busy, all CPUs), median | host memory per live job |")
print("|---|---|---|---|---|")
for i, lb in enumerate(pairs):
    xs = [json.load(open(f"{work}/ab-{i}-{r}.json")) for r in range(1, rounds + 1)]
    ups = [x["all_up_s"] for x in xs]
    med = statistics.median([u for u in ups if u]) if any(ups) else None
    mem = [x.get("host_kb_per_job") for x in xs]
    cpu = [c for c in (x.get("busy_ms_per_job") for x in xs) if c]
    cpu = f"{statistics.median(cpu):.2f} ms" if cpu else "n/a"
    print(f"| {lb.split('=')[0]} | {' / '.join(f'{u:.2f} s' if u else 'n/a' for u in ups)} | "
          f"{f'{med:.2f} s' if med else 'n/a'} | {cpu} | "
          f"{' / '.join(f'{m/1024:.2f} MB' if m else 'n/a' for m in mem)} |")
PY
