#!/usr/bin/env bash
# Starts P copies of CMD at once and waits for all of them; fails if any
# failed. Every @W@ in CMD's arguments becomes the copy's index (0..P-1).
#   bench/lease-par.sh P CMD [ARGS...]
set -uo pipefail
p=$1
shift
pids=()
for ((w = 0; w < p; w++)); do
  args=("${@//@W@/$w}")
  "${args[@]}" &
  pids+=($!)
done
fail=0
for pid in "${pids[@]}"; do
  wait "$pid" || fail=1
done
exit "$fail"
