#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh Debian
# machine, then runs the whole suite as root. CI calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v setpriv >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# tests/egress.rs: the runner's NAT (in stand-in netns only) and its checks.
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || need+=(iptables)
# The attack probes (tests/probes/*.c) are built static.
if ! command -v gcc >/dev/null || ! ls /usr/lib/*-linux-gnu/libc.a >/dev/null 2>&1; then need+=(gcc libc6-dev); fi
# tests/slurm.rs (examples/slurm/test.sh): a Slurm of its own, from Debian's packages.
command -v slurmctld >/dev/null || need+=(slurm-wlm)
command -v munged >/dev/null || need+=(munge)
command -v bc >/dev/null || need+=(bc)
# tests/remote.rs: an S3-compatible server (moto) on 127.0.0.1, from PyPI
# into a venv of its own (Debian's python refuses a system-wide pip).
moto_venv=/var/cache/repeatr-test/moto
if ! command -v moto_server >/dev/null && [ ! -x "$moto_venv/bin/moto_server" ]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  echo "the tests create namespaces, mounts and bridges: run them as root" >&2
  exit 1
fi
if ! command -v moto_server >/dev/null; then
  if [ ! -x "$moto_venv/bin/moto_server" ]; then
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install --quiet 'moto[server]'
  fi
  export PATH="$PATH:$moto_venv/bin"
fi
export CI=${CI:-true}
# Gates before any test: formatting, lints (warnings are errors), and no
# two files of src/ importing each other.
cargo fmt --check
cargo clippy --all-targets -- -D warnings
python3 scripts/import-cycles.py
cargo build --all-targets
# repeatr under Slurm (a minute; ignored in the plain suite, which it would
# share Slurm's fixed ports with): first, so the suite's summary is last.
cargo test --test slurm -- --ignored
cargo test --all-targets -- --test-threads="${TEST_THREADS:-4}"
