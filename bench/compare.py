#!/usr/bin/env python3
"""Start-up of several repeatr builds side by side, interleaved: each round
runs every command once, so the drift of a noisy VM hits all of them alike
(hyperfine runs one command's runs in a row). Medians and ratios to
`bwrap --unshare-net` on the same busybox rootfs.

  bench/compare.py [--rounds N] LABEL=PATH/TO/repeatr [LABEL=...]

Needs root, bwrap and a busybox rootfs (made at /tmp/rpt-compare-rootfs
with examples/make-busybox-rootfs.sh if missing). Each build gets its own
state dir on a tmpfs, bridge (rcmp<N>) and subnet (198.19.250+N.0/24, at
most 5 builds); everything is removed at the end. The Python loop adds
~1.5 ms to every row alike: compare rows, not with hyperfine's numbers.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))


def main():
    args = sys.argv[1:]
    rounds = 200
    if args[:1] == ["--rounds"]:
        rounds, args = int(args[1]), args[2:]
    builds = [a.split("=", 1) for a in args]
    if not builds or any(len(b) != 2 for b in builds) or len(builds) > 5:
        sys.exit(__doc__)
    rootfs = "/tmp/rpt-compare-rootfs"
    if not os.path.isdir(rootfs):
        subprocess.run([os.path.join(here, "..", "examples", "make-busybox-rootfs.sh"), rootfs], check=True,
                       stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="rpt-compare-")
    os.chmod(work, 0o700)
    mounted, bridges = [], []
    try:
        cmds = {}
        for i, (label, binary) in enumerate(builds):
            state = os.path.join(work, f"state{i}")
            os.mkdir(state)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=700", "tmpfs", state], check=True)
            mounted.append(state)
            bridges.append(f"rcmp{i}")
            cfg = os.path.join(work, f"{i}.toml")
            with open(cfg, "w") as f:
                f.write(f'[network]\nbridge = "rcmp{i}"\nsubnet = "198.19.{250 + i}.0/24"\ndns = []\negress = "none"\n')
            for net in ["none", "bridge"]:
                cmds[f"{label} --net {net}"] = [binary, "--state-dir", state, "--config", cfg, "run", "--net", net,
                                                "--rootfs", rootfs, "--", "/bin/true"]
        ref = "bwrap --unshare-net"
        cmds[ref] = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--bind", rootfs,
                     "/", "--proc", "/proc", "--dev", "/dev", "/bin/true"]
        times = {k: [] for k in cmds}
        for c in cmds.values():
            for _ in range(5):
                subprocess.run(c, check=True)
        for _ in range(rounds):
            for k, c in cmds.items():
                start = time.perf_counter()
                subprocess.run(c, check=True)
                times[k].append(time.perf_counter() - start)
        base = statistics.median(times[ref])
        print(f"| command ({rounds} rounds) | median | ratio to {ref} |\n|---|---|---|")
        for k, v in times.items():
            m = statistics.median(v)
            print(f"| {k} | {m * 1e3:.2f} ms | {m / base:.2f}x |")
    finally:
        for b in bridges:
            subprocess.run(["ip", "link", "del", b], stderr=subprocess.DEVNULL)
        for m in mounted:
            subprocess.run(["umount", m])
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
