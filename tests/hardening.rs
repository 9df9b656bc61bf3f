//! Attacks that once worked against a default job, each kept as the test
//! that it no longer does: device nodes, the runner's session keyring,
//! uid -1, an fd the caller left open.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// `mknod` of a host device by a default root job: refused (no CAP_MKNOD),
/// and where a node can be made anyway (`--cap-add MKNOD`, or a node that
/// came with the image) it never opens a device: the root and /dev are
/// `nodev`; only the job's own /dev nodes work. Directory and tar roots.
#[test]
fn a_job_cannot_reach_a_device_through_a_node_of_its_own() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let tar = rootfs.to_tar(false);
    for root in [rootfs.path(), tar.path()] {
        // Loop device 0, and /dev/mem: what the red team used, and worse.
        let out = r.sh(root, &[], "mknod /dev/x b 7 0 && echo made-dev; mknod /tmp/m c 1 1 && echo made-tmp; true");
        let o = stdout(&out);
        assert!(!o.contains("made-"), "a default job made a device node: {o}");
        assert!(stderr(&out).contains("Operation not permitted"), "{}", stderr(&out));

        // With MKNOD given back, nodes can be made but do not open.
        let script = "mknod /dev/z c 1 5 && mknod /tmp/z c 1 5 && echo made; \
                      head -c1 /dev/z >/dev/null 2>&1 && echo opened-dev; \
                      head -c1 /tmp/z >/dev/null 2>&1 && echo opened-root; \
                      head -c4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok";
        let out = r.sh(root, &["--cap-add", "MKNOD"], script);
        let o = stdout(&out);
        assert!(o.contains("made"), "{o}\n{}", stderr(&out));
        assert!(!o.contains("opened-"), "a node made by the job opened its device: {o}");
        assert!(o.contains("4\nnull-ok"), "the job's own /dev nodes work: {o}\n{}", stderr(&out));
    }
}

/// A node that comes with a directory image (made on the host, where the
/// image lives) is as dead inside the job as one the job makes.
#[test]
fn a_device_node_in_the_image_does_not_open() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let node = rootfs.path().join("tmp/zero");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    let out = r.sh(rootfs.path(), &[], "head -c1 /tmp/zero >/dev/null && echo opened; true");
    assert!(!stdout(&out).contains("opened"), "{}", stdout(&out));
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
}

/// The default capability set is podman's: no MKNOD, NET_RAW or
/// AUDIT_WRITE; --cap-drop ALL leaves none; a bad name is one line, 125.
#[test]
fn capabilities_are_podmans_and_can_be_changed() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let caps = |opts: &[&str]| {
        let out = r.sh(rootfs.path(), opts, "grep CapEff /proc/self/status");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(caps(&[]), "CapEff:\t00000000800405fb\n");
    assert_eq!(caps(&["--cap-drop", "ALL"]), "CapEff:\t0000000000000000\n");
    // NET_RAW is bit 13.
    assert_eq!(caps(&["--cap-drop", "all", "--cap-add", "net_raw"]), "CapEff:\t0000000000002000\n");
    let out = r.sh(rootfs.path(), &["--cap-add", "CAP_FLY"], "true");
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("bad --cap-add \"CAP_FLY\"") && stderr(&out).lines().count() == 1,
        "{}",
        stderr(&out)
    );
}

/// The runner's session keyring (and a secret in it) is out of the job's
/// reach: the job joins a keyring of its own, also as another user.
#[test]
fn a_job_cannot_read_the_runners_session_keyring() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let probe = rootfs.path().join("bin/keyprobe");
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&probe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/keyprobe.c"))
        .status()
        .expect("gcc (the test command installs it)");
    assert!(built.success());
    for user in ["0:0", "1000:1000"] {
        let mut c = r.cmd();
        c.args(["run", "--net", "none", "--user", user, "--rootfs"])
            .arg(rootfs.path())
            .args(["--", "/bin/keyprobe", "rpt-host-secret"])
            .stdin(Stdio::null());
        // The runner starts in a session keyring of this test's own, which
        // holds the host's secret (as a login session's would).
        // SAFETY: between fork and exec only raw syscalls run, no allocation.
        unsafe {
            c.pre_exec(|| {
                let name = c"rpt-test-session";
                if libc::syscall(libc::SYS_keyctl, libc::KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let (ty, desc, payload) = (c"user", c"rpt-host-secret", b"s3cr3t");
                let id = libc::syscall(
                    libc::SYS_add_key,
                    ty.as_ptr(),
                    desc.as_ptr(),
                    payload.as_ptr(),
                    payload.len(),
                    libc::KEY_SPEC_SESSION_KEYRING,
                );
                if id < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = c.output().unwrap();
        let o = stdout(&out);
        assert!(!o.contains("s3cr3t"), "job as {user} read the host's key: {o}");
        assert!(o.starts_with("not found") || o.starts_with("not readable"), "{o}\n{}", stderr(&out));
    }
}

/// uid or gid 4294967295 is -1 to setresuid: "unchanged", i.e. root.
#[test]
fn uid_minus_one_is_refused() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    for user in ["4294967295", "1000:4294967295"] {
        let out = r.sh(rootfs.path(), &["--user", user], "id -u > /tmp/ran; id -u");
        assert_eq!(code(&out), 125, "{user}: {}", stdout(&out));
        assert!(stdout(&out).is_empty());
        assert!(stderr(&out).contains("4294967295"), "{}", stderr(&out));
    }
}

/// An fd the caller left open to a host directory, and an image whose
/// workdir is a symlink to /proc/self/fd/N: the workdir is created inside
/// the root, never in the host directory.
#[test]
fn an_inherited_fd_is_not_reachable_from_the_image() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let host = tempfile::Builder::new().prefix("rpt-host-dir-").tempdir().unwrap();
    let dir = std::fs::File::open(host.path()).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/7", rootfs.path().join("work")).unwrap();
    let mut c = r.cmd();
    c.args(["run", "--net", "none", "-w", "/work/planted", "--rootfs"])
        .arg(rootfs.path())
        .args(["--", "/bin/sh", "-c", "pwd; touch here"])
        .stdin(Stdio::null());
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    // SAFETY: dup2 only, between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = c.output().unwrap();
    let left: Vec<_> = std::fs::read_dir(host.path()).unwrap().collect();
    assert!(left.is_empty(), "the job wrote into the caller's directory: {left:?}\n{}", stderr(&out));
}

/// `--mount HOSTDIR:/etc` once made the runner overwrite HOSTDIR/hosts,
/// hostname and resolv.conf on the host. The job's files are bound over
/// them instead: the job sees its own, the host's are untouched, and one
/// that is missing from the host directory is not created there.
#[test]
fn a_host_dir_bound_at_etc_is_never_written() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let host = tempfile::Builder::new().prefix("rpt-host-etc-").tempdir().unwrap();
    std::fs::write(host.path().join("hosts"), "HOST hosts\n").unwrap();
    std::fs::write(host.path().join("hostname"), "HOST hostname\n").unwrap();
    std::fs::write(host.path().join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    for mode in ["rw", "ro"] {
        let bind = format!("{}:/etc:{mode}", host.path().display());
        let out = r.sh(rootfs.path(), &["--mount", &bind, "--name", "etcjob"], "cat /etc/hostname /etc/hosts");
        assert_eq!(code(&out), 0, "{mode}: {}", stderr(&out));
        let o = stdout(&out);
        assert!(o.starts_with("etcjob\n") && o.contains("localhost etcjob") && !o.contains("HOST"), "{mode}: {o}");
        assert_eq!(std::fs::read_to_string(host.path().join("hosts")).unwrap(), "HOST hosts\n");
        assert_eq!(std::fs::read_to_string(host.path().join("hostname")).unwrap(), "HOST hostname\n");
        assert!(!host.path().join("resolv.conf").exists(), "{mode}: a file was made in the host directory");
        let names: Vec<_> = std::fs::read_dir(host.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 3, "{mode}: {names:?}");
    }
}

/// Ping sockets are allowed for every group in the job's own netns (it has
/// no CAP_NET_RAW), and the host's setting stays as it was: the sysctl is
/// written through the job's /proc, never the host's.
#[test]
fn ping_sockets_are_allowed_in_the_jobs_netns_only() {
    if !require_root() {
        return;
    }
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let out = r.sh(rootfs.path(), &["--user", "1000"], "cat /proc/sys/net/ipv4/ping_group_range");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let job: Vec<String> = stdout(&out).split_whitespace().map(str::to_owned).collect();
    assert_eq!(job, ["0", "2147483647"], "the job's ping_group_range");
    // The job's /proc/sys is read-only to it: it cannot change this back.
    let out = r.sh(rootfs.path(), &[], "echo '1 0' > /proc/sys/net/ipv4/ping_group_range && echo wrote; true");
    assert!(!stdout(&out).contains("wrote"), "a job rewrote a sysctl: {}", stdout(&out));
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    assert_eq!(host_before, host_after, "the host's ping_group_range changed");
}
