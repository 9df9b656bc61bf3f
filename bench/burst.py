#!/usr/bin/env python3
"""Starts COUNT networked jobs at once and times until every one has printed
its "up" line (it prints "up" once eth0 has an IPv4 address), then reads the
RSS of the waiting runner processes while the jobs still sleep, and what
the host's used memory (MemTotal - MemAvailable, /proc/meminfo) grew by
per live job: runners, containers, veths, cgroups and page cache together.

    bench/burst.py --label L --count 200 --runner NAME --timeout S --out F.json -- CMD...

Every @I@ in CMD becomes the job's index. The runner processes are the
started processes and their descendants whose /proc/PID/status Name is NAME
(repeatr: the started processes themselves, not their job inits; runc+CNI: the `runc` under each
bench/cni-run.sh). Writes a JSON summary to F.json; no timing assertions.
"""
import argparse
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time


def status_fields(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Name", "PPid", "VmRSS", "VmHWM"):
                    out[k] = v.strip()
    except OSError:
        return None
    return out


def host_used_kb():
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            info[k] = kb(v.strip())
    return info["MemTotal"] - info["MemAvailable"]


def host_busy_s():
    """CPU time the host spent busy (all CPUs), from /proc/stat: what the
    burst cost in all, its waits aside; steadier than the wall time."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def kb(v):
    return int(v.split()[0]) if v else 0


def runners(roots, name):
    """PIDs named `name` among `roots` and their descendants, the topmost
    of each chain only: repeatr's job init is a fork of its runner, of the
    same name, and is not a runner."""
    parent, names = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = status_fields(int(d))
            if s and "PPid" in s:
                parent[int(d)] = int(s["PPid"])
                names[int(d)] = s.get("Name")
    roots = set(roots)
    found = []
    for pid, n in names.items():
        if n != name:
            continue
        p = pid
        while p > 1:
            if p in roots:
                found.append(pid)
                break
            p = parent.get(p, 0)
            if names.get(p) == name:
                break  # not the topmost of its name
    return found


def descendants(roots):
    """`roots` and every process below them (containers included)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            s = status_fields(int(d))
            if s and "PPid" in s:
                children.setdefault(int(s["PPid"]), []).append(int(d))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def kill_tree(roots):
    for pid in reversed(descendants(roots)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--runner", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--out", required=True)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd

    # One stdout pipe and one stderr pipe shared by every job, not a pair
    # per job: a launcher holding 2 fds per job makes each later spawn
    # close them all again (close_range in the forked child, then exec):
    # quadratic in COUNT, 2.4% of the host's CPU in a 1000-job burst, and
    # spent on the same two cores as the jobs. Each "up\n" or "noaddr\n" is
    # one write of less than PIPE_BUF, so lines never interleave; which job
    # wrote a line does not matter for the times measured.
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    procs = []

    def on_signal(signum, frame):
        kill_tree([p.pid for p in procs])
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    used_before = host_used_kb()
    busy_before = host_busy_s()
    t0 = time.monotonic()
    for i in range(a.count):
        argv = [x.replace("@I@", str(i)) for x in cmd]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w,
                             stderr=err_w, start_new_session=True)
        procs.append(p)
    t_spawned = time.monotonic() - t0
    # The jobs hold the write ends now: EOF once the last one is gone.
    os.close(out_w)
    os.close(err_w)
    sel = selectors.DefaultSelector()
    sel.register(out_r, selectors.EVENT_READ, "out")
    sel.register(err_r, selectors.EVENT_READ, "err")

    up_at, noaddr, errs = [], 0, []
    bufs = {"out": b"", "err": b""}
    open_fds = 2

    def pump(timeout):
        nonlocal noaddr, open_fds
        for key, _ in sel.select(timeout):
            kind = key.data
            data = os.read(key.fd, 65536)
            if not data:
                sel.unregister(key.fd)
                open_fds -= 1
                continue
            bufs[kind] += data
            while b"\n" in bufs[kind]:
                line, _, bufs[kind] = bufs[kind].partition(b"\n")
                if kind == "err":
                    if len(errs) < 3:
                        errs.append(line[-400:])
                elif line.strip() == b"up":
                    up_at.append(time.monotonic() - t0)
                elif line.strip() == b"noaddr":
                    noaddr += 1

    deadline = t0 + a.timeout
    while len(up_at) + noaddr < a.count and time.monotonic() < deadline and open_fds:
        pump(0.05)
    t_all = time.monotonic() - t0 if len(up_at) == a.count else None
    busy = host_busy_s() - busy_before

    # The jobs sleep now: sample the waiting runners a few times, from
    # 0.3 s after the last one came up: a runner lets go of its code pages
    # 200 ms into its job's run (src/container/supervise.rs, TRIM_AFTER),
    # so a sample before that measures its start-up, not its wait.
    pump(0.3)
    rss, hwm = {}, {}
    used_during = host_used_kb()
    for _ in range(5):
        for pid in runners([p.pid for p in procs], a.runner):
            s = status_fields(pid)
            if s and "VmRSS" in s:
                rss[pid] = max(rss.get(pid, 0), kb(s["VmRSS"]))
                hwm[pid] = max(hwm.get(pid, 0), kb(s.get("VmHWM")))
        pump(0.1)

    # Let the jobs finish their sleep; stragglers get killed.
    exit_deadline = time.monotonic() + a.timeout
    while open_fds and time.monotonic() < exit_deadline:
        pump(0.2)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, exit_deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            kill_tree([p.pid])
            try:
                codes.append(p.wait(timeout=10))
            except subprocess.TimeoutExpired:
                codes.append(None)
    failed = sum(1 for c in codes if c != 0)

    ups = sorted(up_at)
    res = {
        "label": a.label,
        "count": a.count,
        "up": len(up_at),
        "noaddr": noaddr,
        "failed": failed,
        "spawn_s": t_spawned,
        "all_up_s": t_all,
        "first_up_s": ups[0] if ups else None,
        "median_up_s": statistics.median(ups) if ups else None,
        "last_up_s": ups[-1] if ups else None,
        "runners_sampled": len(rss),
        "rss_kb_median": statistics.median(rss.values()) if rss else None,
        "rss_kb_max": max(rss.values()) if rss else None,
        "hwm_kb_median": statistics.median(hwm.values()) if hwm else None,
        "hwm_kb_max": max(hwm.values()) if hwm else None,
        "host_kb_per_job": (used_during - used_before) / len(up_at) if up_at else None,
        "busy_ms_per_job": 1000 * busy / len(up_at) if t_all else None,
        "sample_errors": [e.decode(errors="replace") for e in errs],
    }
    with open(a.out, "w") as f:
        json.dump(res, f)
    print(f"{a.label}: {len(up_at)}/{a.count} up, all up in "
          f"{'%.2f s' % t_all if t_all else 'n/a'}"
          f"{', host CPU %.2f ms per job' % res['busy_ms_per_job'] if t_all else ''}, {failed} failed",
          file=sys.stderr)


if __name__ == "__main__":
    main()
