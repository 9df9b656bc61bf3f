//! The job's tmpfs sizes: its writable root (an overlay's upper layer or
//! an unpacked tar) and /dev/shm stop at --rootfs-size and --shm-size, and
//! nothing of what the job wrote is anywhere on the host.

mod common;

use common::*;

#[test]
fn writes_beyond_the_rootfs_and_shm_sizes_fail_with_enospc() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let tar = rootfs.to_tar(false);
    let script = "dd if=/dev/zero of=/big bs=1M count=20 2>&1 | grep -q 'No space left' && echo root-full; \
                  dd if=/dev/zero of=/dev/shm/big bs=1M count=4 2>&1 | grep -q 'No space left' && echo shm-full; \
                  df -k / /dev/shm | tail -n 2 | while read fs size rest; do echo $size; done";
    for root in [rootfs.path(), tar.path()] {
        let o = r.sh(root, &["--rootfs-size", "10m", "--shm-size", "2m"], script);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), "root-full\nshm-full\n10240\n2048\n", "{root:?}: {}", stderr(&o));
    }
    // The defaults: docker's 64 MiB /dev/shm, and a root of an eighth of
    // RAM, at most 8 GiB.
    let o = r.sh(rootfs.path(), &[], "df -k /dev/shm | tail -n 1 | while read fs size rest; do echo $size; done");
    assert_eq!(stdout(&o), "65536\n", "{}", stderr(&o));
    let ram_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let o = r.sh(rootfs.path(), &[], "df -k / | tail -n 1 | while read fs size rest; do echo $size; done");
    let want = (ram_kib / 8).min(8 << 20);
    let got: u64 = stdout(&o).trim().parse().unwrap();
    assert!(got.abs_diff(want) <= 4, "root of {got} KiB, want {want}");
}
