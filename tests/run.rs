//! `repeatr run` end to end, as root, on the real kernel.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::*;

#[test]
fn exit_codes_pass_through() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    std::fs::write(rootfs.path().join("notexec"), "#!/bin/sh\n").unwrap();
    let cases: [(&[&str], i32); 6] = [
        (&["/bin/true"], 0),
        (&["false"], 1),
        (&["/bin/sh", "-c", "exit 14"], 14),
        (&["/notexec"], 126),
        (&["/no/such/cmd"], 127),
        (&["nosuchcmd"], 127),
    ];
    for (argv, want) in cases {
        let out = r.run(rootfs.path(), &[], argv);
        assert_eq!(code(&out), want, "{argv:?}: {}", stderr(&out));
        if want >= 126 {
            let err = stderr(&out);
            assert_eq!(err.lines().count(), 1, "one line for {argv:?}: {err}");
        }
    }
}

#[test]
fn signal_death_is_128_plus_n() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let mut runner = r.spawn_sh(rootfs.path(), "echo ready; exec sleep 1000");
    wait_for_line(&mut runner, "ready");
    let job = children_of(runner.id());
    assert_eq!(job.len(), 1, "the job is the runner's only child");
    // SIGKILL from the host's pid namespace is the one signal pid 1 of the
    // job cannot ignore.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(job[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = runner.into_inner().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
}

#[test]
fn sigterm_to_the_runner_runs_the_jobs_trap() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    for (sig, name) in [(nix::sys::signal::Signal::SIGTERM, "TERM"), (nix::sys::signal::Signal::SIGUSR1, "USR1")] {
        let script = format!("trap 'echo got-{name}; exit 42' {name}; echo ready; while true; do sleep 0.05; done");
        let mut runner = r.spawn_sh(rootfs.path(), &script);
        wait_for_line(&mut runner, "ready");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(runner.id() as i32), sig).unwrap();
        let out = runner.into_inner().wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
        assert!(stdout(&out).contains(&format!("got-{name}")));
    }
}

#[test]
fn sigkill_of_the_runner_kills_the_job_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let before = manifest(rootfs.path());
    let mut runner = r.spawn_sh(rootfs.path(), "echo x > /bin/new; rm -rf /etc; echo ready; exec sleep 1000");
    wait_for_line(&mut runner, "ready");
    let job = children_of(runner.id());
    assert_eq!(job.len(), 1);
    runner.kill().unwrap();
    runner.wait().unwrap();
    wait_gone(job[0]);
    assert_eq!(manifest(rootfs.path()), before, "source rootfs changed");
    let state = r.state.path().to_str().unwrap();
    assert!(host_mounts_mentioning(state).is_empty(), "mount left on the host");
    let mnt: Vec<_> = std::fs::read_dir(r.state.path().join("mnt")).unwrap().collect();
    assert!(mnt.is_empty(), "temp files left in the mount base: {mnt:?}");
    assert!(host_mounts_mentioning(rootfs.path().to_str().unwrap()).is_empty());
}

#[test]
fn the_source_dir_and_tar_are_never_mutated() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let tar = rootfs.to_tar(false);
    let before = manifest(rootfs.path());
    let tar_before = std::fs::read(tar.path()).unwrap();
    let script = "echo data > /etc/passwd; mkdir -p /new/dir; echo hi > /new/dir/f; chmod 777 /; /bin/busybox rm -rf /bin; echo done";
    for src in [rootfs.path(), tar.path()] {
        let out = r.sh(src, &[], script);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out), "done\n");
    }
    assert_eq!(manifest(rootfs.path()), before);
    assert_eq!(std::fs::read(tar.path()).unwrap(), tar_before);
    // And the next job sees the pristine image again.
    let out = r.sh(rootfs.path(), &[], "test -e /bin/sh && test ! -e /new && cat /etc/passwd | head -1");
    assert_eq!(stdout(&out), "root:x:0:0:root:/root:/bin/sh\n", "{}", stderr(&out));
}

#[test]
fn tar_rootfs_from_file_gzip_and_stdin() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let plain = rootfs.to_tar(false);
    let gz = rootfs.to_tar(true); // named .tar, but gzip inside: detected from content
    for tar in [plain.path(), gz.path()] {
        let out = r.sh(tar, &[], "cat /etc/passwd | head -1; ls -l /bin/sh");
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(stdout(&out).starts_with("root:x:0:0"), "{}", stdout(&out));
        assert!(stdout(&out).contains("-> busybox"));
    }
    let mut child = r
        .cmd()
        .args(["run", "--net", "none", "--rootfs", "-", "--", "/bin/sh", "-c", "echo from-stdin; cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(gz.path()).unwrap()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "from-stdin\n", "the job's stdin is empty after the tar");
}

#[test]
fn the_host_environment_does_not_leak() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let out = r
        .cmd()
        .env("RPT_HOST_SECRET", "leaked")
        .args(["run", "--net", "none", "--rootfs"])
        .arg(rootfs.path())
        .args(["--env", "MINE=yes", "--", "/bin/env"])
        .output()
        .unwrap();
    let env = stdout(&out);
    assert!(!env.contains("RPT_HOST_SECRET"), "{env}");
    assert!(env.contains("MINE=yes"));
    assert!(env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    assert!(env.contains("HOME=/root"));
    let out = r.run(rootfs.path(), &["--user", "1000:1000"], &["/bin/sh", "-c", "echo $HOME; id -u; id -g"]);
    assert_eq!(stdout(&out), "/home/user\n1000\n1000\n", "{}", stderr(&out));
}

#[test]
fn only_fds_0_to_2_reach_the_job() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    // An fd the runner inherits without O_CLOEXEC, as a careless parent would pass it.
    let leak = std::fs::File::open("/etc/hostname").unwrap();
    let mut cmd = r.cmd();
    cmd.args(["run", "--net", "none", "--rootfs"]).arg(rootfs.path()).args([
        "--",
        "/bin/sh",
        "-c",
        "echo ready; exec sleep 1000",
    ]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leak);
    // SAFETY: the closure runs between fork and exec and only calls dup2,
    // which is async-signal-safe; `leak` outlives the spawn.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut runner = Runner::new(cmd.spawn().unwrap());
    wait_for_line(&mut runner, "ready");
    let init = children_of(runner.id());
    let command = children_of(init[0] as u32);
    // Seen from the host, so nothing the job itself opens gets in the way.
    let fds = |pid: i32| {
        let mut fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_link(e.path()).unwrap().display().to_string(),
                )
            })
            .collect();
        fds.sort();
        fds
    };
    let (init_fds, command_fds) = (fds(init[0]), fds(command[0]));
    runner.kill().unwrap();
    runner.wait().unwrap();
    let names = |fds: &[(String, String)]| fds.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&command_fds), ["0", "1", "2"]);
    // The init holds its control socket to the runner besides.
    let extra: Vec<_> = init_fds.iter().filter(|(n, _)| !matches!(n.as_str(), "0" | "1" | "2")).collect();
    assert_eq!(extra.len(), 1, "{init_fds:?}");
    assert!(extra[0].1.starts_with("socket:"), "{init_fds:?}");
}

#[test]
fn masked_and_readonly_kernel_paths_hold() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let script = r#"
        cat /proc/timer_list /proc/interrupts /proc/keys | wc -c
        ls /sys/firmware | wc -l
        echo 1 > /proc/sys/kernel/domainname && echo wrote-proc-sys
        touch /sys/x && echo wrote-sys
        echo 1 > /proc/sysrq-trigger && echo wrote-sysrq
        grep -c ' / ' /proc/mounts
        cat /proc/self/status | grep CapBnd
        grep NoNewPrivs /proc/self/status
        echo $$
        hostname
    "#;
    let out = r.sh(rootfs.path(), &["--name", "job-masked"], script);
    let o = stdout(&out);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines[0].trim(), "0", "masked files read empty: {o}");
    assert_eq!(lines[1].trim(), "0", "/sys/firmware masked: {o}");
    assert!(!o.contains("wrote-"), "a read-only path was writable: {o}");
    assert!(o.contains("CapBnd:\t00000000800405fb"), "podman's default caps: {o}");
    assert!(o.contains("NoNewPrivs:\t1"));
    assert!(o.contains("\n2\njob-masked\n"), "pid 2 (under the init), hostname = job id: {o}");
}

#[test]
fn mounts_ro_rw_and_symlink_targets_stay_inside() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let data = tempfile::Builder::new().prefix("rpt-data-").tempdir().unwrap();
    std::fs::write(data.path().join("in"), "host-data").unwrap();
    // A host location the image's symlink aims at: the mount must not land there.
    let decoy = tempfile::Builder::new().prefix("rpt-decoy-").tempdir().unwrap();
    std::os::unix::fs::symlink(decoy.path(), rootfs.path().join("evil")).unwrap();
    let src = data.path().to_str().unwrap();
    let out = r.sh(
        rootfs.path(),
        &["--mount", &format!("{src}:/ro:ro"), "--mount", &format!("{src}:/rw"), "--mount", &format!("{src}:/evil:ro")],
        "cat /ro/in; echo; touch /ro/x 2>/dev/null && echo ro-writable; echo job > /rw/out; cat /evil/in; echo; ls -d /evil/",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.starts_with("host-data\n"), "{o}");
    assert!(!o.contains("ro-writable"));
    assert!(o.contains("host-data\n/evil/\n"), "symlinked target mounted inside the root: {o}");
    assert_eq!(std::fs::read_to_string(data.path().join("out")).unwrap(), "job\n", "rw mount writes reach the host");
    assert!(!data.path().join("x").exists());
    assert_eq!(std::fs::read_dir(decoy.path()).unwrap().count(), 0, "the decoy got nothing");
    assert!(host_mounts_mentioning(decoy.path().to_str().unwrap()).is_empty(), "mounted onto the host!");
}

#[test]
fn workdir_hostname_and_user() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let out = r.sh(
        rootfs.path(),
        &["--workdir", "/work/dir", "--hostname", "builder", "--user", "1000"],
        "pwd; hostname; id -u; cat /etc/hostname; grep builder /etc/hosts | wc -l",
    );
    assert_eq!(stdout(&out), "/work/dir\nbuilder\n1000\nbuilder\n1\n", "{}", stderr(&out));
}

#[test]
fn images_with_symlinked_proc_are_refused() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    std::os::unix::fs::symlink("/", rootfs.path().join("proc")).unwrap();
    let out = r.run(rootfs.path(), &[], &["/bin/true"]);
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("/proc is a symlink"), "{}", stderr(&out));
}

#[test]
fn runner_errors_are_one_line_and_125() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let p = rootfs.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--rootfs", "/nonexistent/rootfs", "--", "/bin/true"], "does not exist"),
        (vec!["run", "--rootfs", p, "--mount", "relative:/x", "--", "/bin/true"], "--mount"),
        (vec!["run", "--rootfs", p, "--mount", "/tmp:rel", "--", "/bin/true"], "absolute"),
        (vec!["run", "--rootfs", p, "--env", "NOEQUALS", "--", "/bin/true"], "--env"),
        (vec!["run", "--rootfs", p, "--user", "bob", "--", "/bin/true"], "--user"),
        (vec!["run", "--rootfs", p, "--name", "bad/name", "--", "/bin/true"], "--name"),
        (vec!["run", "--rootfs", p, "--no-such-flag", "--", "/bin/true"], "--no-such-flag"),
        (vec!["run", "--rootfs", p], "no command"),
    ];
    for (args, needle) in cases {
        let out = r.cmd().args(&args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Not root: dropped to nobody with setpriv.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_repeatr"),
            "run",
            "--rootfs",
            p,
            "--",
            "/bin/true",
        ])
        .env("REPEATR_STATE_DIR", r.state.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("must run as root"));
}

#[test]
fn a_non_executable_workdir_parent_or_file_reports_clearly() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let f = rootfs.path().join("script");
    std::fs::write(&f, "#!/bin/sh\necho ran-script\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = r.run(rootfs.path(), &[], &["/script"]);
    assert_eq!(stdout(&out), "ran-script\n", "{}", stderr(&out));
    let out = r.run(rootfs.path(), &[], &["/etc"]);
    assert_eq!(code(&out), 126, "a directory cannot be executed: {}", stderr(&out));
}

/// A tar entry with its name and link bytes written raw, as a hostile tar has them.
fn raw_entry(out: &mut Vec<u8>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

#[test]
fn hostile_tars_fail_whole_and_leave_the_host_untouched() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let outside = tempfile::Builder::new().prefix("rpt-outside-").tempdir().unwrap();
    let o = outside.path().to_str().unwrap().trim_start_matches('/');
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    let up = "../../../../../../../../../../";
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    type Entries = Vec<(tar::EntryType, String, String)>;
    let cases: Vec<(&str, Entries)> = vec![
        ("traversal", vec![(Regular, format!("{up}{o}/evil"), String::new())]),
        ("absolute", vec![(Regular, format!("/{o}/evil"), String::new())]),
        (
            "symlink escape",
            vec![(Symlink, "link".into(), format!("/{o}")), (Regular, "link/evil".into(), String::new())],
        ),
        (
            "relative symlink escape",
            vec![(Symlink, "link".into(), format!("{up}{o}")), (Regular, "link/evil".into(), String::new())],
        ),
        (
            "hardlink escape",
            vec![(Directory, "bin".into(), String::new()), (Link, "bin/evil".into(), format!("{up}{o}/secret"))],
        ),
    ];
    for (what, entries) in cases {
        let mut tar = Vec::new();
        for (kind, name, link) in &entries {
            raw_entry(&mut tar, *kind, name, link, if *kind == Regular { b"pwned" } else { b"" });
        }
        tar.extend_from_slice(&[0u8; 1024]);
        let file = tempfile::Builder::new().prefix("rpt-evil-").suffix(".tar").tempfile().unwrap();
        std::fs::write(file.path(), &tar).unwrap();
        let out = r.run(file.path(), &[], &["/bin/true"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(err.contains("outside"), "{what} refused for the wrong reason: {err}");
        let names: Vec<_> = std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["secret"], "{what} wrote outside");
        let secret = std::fs::metadata(outside.path().join("secret")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::nlink(&secret), 1, "{what} linked the host file");
        assert_eq!(std::fs::read_to_string(outside.path().join("secret")).unwrap(), "secret");
    }
}

#[test]
fn docker_export_quirks_work() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    std::fs::write(rootfs.path().join(".dockerenv"), "").unwrap();
    std::fs::create_dir(rootfs.path().join("dev")).unwrap();
    std::fs::write(rootfs.path().join("dev/console"), "").unwrap();
    std::fs::write(rootfs.path().join("etc/hosts"), "").unwrap();
    std::os::unix::fs::symlink("/proc/mounts", rootfs.path().join("etc/mtab")).unwrap();
    std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", rootfs.path().join("etc/resolv.conf"))
        .unwrap();
    let tar = rootfs.to_tar(false);
    let out = r.sh(
        tar.path(),
        &["--name", "quirky"],
        "grep -c quirky /etc/hosts; head -1 /etc/resolv.conf; head -1 /etc/mtab | cut -d' ' -f3",
    );
    // resolv.conf's symlink is followed inside the root: the job's own file
    // is bound where it points. A tar root is an overlay over its cached
    // tree, as a directory root is.
    assert_eq!(stdout(&out), "1\n# no network: this job has only lo\noverlay\n", "{}", stderr(&out));
}

#[test]
fn net_none_has_only_loopback_and_it_is_up() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let out = r.sh(
        rootfs.path(),
        // busybox's ping needs a raw socket: NET_RAW is not in the default set.
        &["--net", "none", "--cap-add", "NET_RAW"],
        "ls /sys/class/net; ip -o link show lo | grep -c LOWER_UP; ping -c1 -W2 127.0.0.1 >/dev/null && echo lo-ok",
    );
    assert_eq!(stdout(&out), "lo\n1\nlo-ok\n", "{}", stderr(&out));
}

/// A state dir reached through a symlink (as /var/run -> /run is on
/// Debian): the child resolves the mount base beneath `/`, where an
/// absolute symlink would fail with EXDEV unless the runner resolved it.
#[test]
fn a_state_dir_behind_a_symlink_works() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let real = r.state.path().join("real-state");
    std::fs::create_dir(&real).unwrap();
    let link = r.state.path().join("linked-state");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = r
        .cmd()
        .arg("--state-dir")
        .arg(&link)
        .args(["run", "--net", "none", "--rootfs"])
        .arg(rootfs.path())
        .args(["--", "/bin/echo", "through-the-link"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "through-the-link\n");
}
