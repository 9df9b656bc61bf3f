//! The job's seccomp filter end to end, as root, on the real kernel:
//! docker's default profile stops the escapes (a user namespace, mounts,
//! the keyrings) and lets ordinary programs be; `--security-opt` turns it
//! off or replaces it.
//!
//! The syscalls busybox cannot make are made by this test binary itself
//! (static, like every build here): copied into the job's root and run
//! there as its `probe` test.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

/// What the probe tries, by name, each printed as `PROBE name=ok` or
/// `PROBE name=errno:N` on a line of its own (libtest's own output shares
/// the stream). Run inside a job only: `/probe --ignored --exact probe`.
#[test]
#[ignore = "the syscall probe: the other tests run it inside a job"]
fn probe() {
    let Ok(ops) = std::env::var("PROBE") else { return };
    for op in ops.split(',') {
        let result = match op {
            "keyctl" => probe::keyctl(),
            "add_key" => probe::add_key(),
            "request_key" => probe::request_key(),
            "unshare" => probe::unshare(),
            "clone_newuser" => probe::clone(libc::CLONE_NEWUSER),
            "clone_newns" => probe::clone(libc::CLONE_NEWNS),
            "clone3" => probe::clone3(),
            "mount" => probe::mount(),
            "vsock" => probe::socket(libc::AF_VSOCK),
            "fork" => probe::fork(),
            "thread" => std::thread::spawn(|| 7).join().map(drop).map_err(|_| 0),
            "loopback" => probe::loopback(),
            other => panic!("no probe {other}"),
        };
        match result {
            Ok(()) => println!("\nPROBE {op}=ok"),
            Err(errno) => println!("\nPROBE {op}=errno:{errno}"),
        }
    }
}

/// Each returns the errno of the call that failed.
mod probe {
    use std::io::{Read, Write};

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn check(ret: libc::c_long) -> Result<(), i32> {
        if ret < 0 { Err(errno()) } else { Ok(()) }
    }

    pub fn keyctl() -> Result<(), i32> {
        // KEYCTL_GET_KEYRING_ID of the session keyring, created if missing.
        // SAFETY: integer arguments only.
        check(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i64, 1) })
    }

    pub fn add_key() -> Result<(), i32> {
        let payload = b"secret";
        // A "user" key on the process keyring (KEY_SPEC_PROCESS_KEYRING).
        // SAFETY: NUL-terminated strings and a payload whose length we pass.
        check(unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"repeatr-probe".as_ptr(),
                payload.as_ptr(),
                payload.len(),
                -2i64,
            )
        })
    }

    pub fn request_key() -> Result<(), i32> {
        // SAFETY: NUL-terminated strings; no callout info.
        check(unsafe {
            libc::syscall(
                libc::SYS_request_key,
                c"user".as_ptr(),
                c"repeatr-probe".as_ptr(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        })
    }

    pub fn unshare() -> Result<(), i32> {
        // SAFETY: a flag argument only; this process stays single-threaded.
        check(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())
    }

    /// A child that exits at once; the parent reaps it.
    fn reap(pid: libc::c_long) -> Result<(), i32> {
        if pid == 0 {
            // SAFETY: the child leaves without touching the parent's state.
            unsafe { libc::_exit(0) };
        }
        check(pid)?;
        let mut status = 0;
        // SAFETY: a valid pointer to a local.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        Ok(())
    }

    pub fn clone(flags: libc::c_int) -> Result<(), i32> {
        // fork-like: no new stack, the child returns 0 and exits at once.
        // SAFETY: without CLONE_VM the child has its own copy of memory.
        let pid = unsafe { libc::syscall(libc::SYS_clone, (flags | libc::SIGCHLD) as libc::c_ulong, 0, 0, 0, 0) };
        reap(pid)
    }

    pub fn clone3() -> Result<(), i32> {
        // SAFETY: a plain C struct of integers, for which all-zero is valid.
        let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
        args.exit_signal = libc::SIGCHLD as u64;
        // SAFETY: a fully initialised clone_args whose size we pass; as fork.
        let pid = unsafe {
            libc::syscall(libc::SYS_clone3, &mut args as *mut libc::clone_args, std::mem::size_of::<libc::clone_args>())
        };
        reap(pid)
    }

    pub fn mount() -> Result<(), i32> {
        // SAFETY: NUL-terminated strings and no data.
        check(unsafe { libc::mount(c"none".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) }.into())
    }

    pub fn socket(domain: libc::c_int) -> Result<(), i32> {
        // SAFETY: integer arguments; the fd is closed again.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM, 0) };
        check(fd.into())?;
        // SAFETY: we own fd.
        unsafe { libc::close(fd) };
        Ok(())
    }

    pub fn fork() -> Result<(), i32> {
        // SAFETY: the child only calls _exit.
        let pid = unsafe { libc::fork() };
        reap(pid.into())
    }

    pub fn loopback() -> Result<(), i32> {
        let io = |e: std::io::Error| e.raw_os_error().unwrap_or(0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
        let mut client = std::net::TcpStream::connect(listener.local_addr().map_err(io)?).map_err(io)?;
        let (mut server, _) = listener.accept().map_err(io)?;
        client.write_all(b"ping").map_err(io)?;
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).map_err(io)?;
        if &buf == b"ping" { Ok(()) } else { Err(0) }
    }
}

/// A busybox root with this test binary in it as /probe.
fn rootfs_with_probe() -> Rootfs {
    let rootfs = Rootfs::busybox();
    std::fs::copy(std::env::current_exe().unwrap(), rootfs.path().join("probe")).unwrap();
    rootfs
}

/// Runs the probe's `ops` in a job with `opts`; returns each op's outcome.
fn run_probe(r: &Repeatr, rootfs: &Rootfs, opts: &[&str], ops: &str) -> Vec<(String, String)> {
    let env = format!("PROBE={ops}");
    let mut all = vec!["--env", &env];
    all.extend_from_slice(opts);
    let out =
        r.run(rootfs.path(), &all, &["/probe", "--ignored", "--exact", "probe", "--nocapture", "--test-threads=1"]);
    assert_eq!(code(&out), 0, "probe failed: {}\n{}", stdout(&out), stderr(&out));
    let results: Vec<(String, String)> = stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("PROBE ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(results.len(), ops.split(',').count(), "{}", stdout(&out));
    results
}

const EPERM: &str = "errno:1";
const ENOSYS: &str = "errno:38";

fn outcome<'a>(results: &'a [(String, String)], op: &str) -> &'a str {
    results.iter().find(|(k, _)| k == op).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {op}"))
}

/// The attack of issue 9: `unshare -Ur` in a job gave a user namespace
/// with every capability in it (mounts, a netns of its own...).
#[test]
fn unshare_of_a_user_namespace_fails_by_default_and_passes_unconfined() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let out = r.sh(rootfs.path(), &[], "unshare -Ur id");
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stderr(&out).contains("Operation not permitted"), "{}", stderr(&out));
    let out = r.sh(rootfs.path(), &["--security-opt", "seccomp=unconfined"], "unshare -Ur id -u");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "0");
    // Docker's profile opens unshare to CAP_SYS_ADMIN only: a capability
    // set build.rs compiled no filter for (SYS_PTRACE) still cannot.
    let out = r.sh(rootfs.path(), &["--cap-add", "SYS_PTRACE"], "unshare -Ur id -u");
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    let out = r.sh(rootfs.path(), &["--cap-add", "SYS_ADMIN"], "unshare -Ur id -u");
    assert_eq!((code(&out), stdout(&out).trim()), (0, "0"), "{}", stderr(&out));
}

#[test]
fn keyrings_namespaces_and_mounts_are_refused() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = rootfs_with_probe();
    let ops = "keyctl,add_key,request_key,unshare,clone_newuser,clone_newns,clone3,mount,vsock";
    // Root with docker's capabilities, and a user with none (whose filter
    // the kernel takes only because no_new_privs is set).
    for user in ["0:0", "1000:1000"] {
        let results = run_probe(&r, &rootfs, &["--user", user], ops);
        for op in ["keyctl", "add_key", "request_key", "unshare", "clone_newuser", "clone_newns", "mount", "vsock"] {
            assert_eq!(outcome(&results, op), EPERM, "{op} as {user}: {results:?}");
        }
        // So that glibc falls back to clone, whose flags the filter sees.
        assert_eq!(outcome(&results, "clone3"), ENOSYS, "as {user}");
    }
    // The same calls without the filter: the kernel's own answers. (The
    // probe runs on a thread of libtest's, so unshare(CLONE_NEWUSER) gets
    // EINVAL from it; busybox's unshare shows that above.)
    let results = run_probe(&r, &rootfs, &["--security-opt", "seccomp=unconfined"], "keyctl,clone_newuser,clone3");
    assert_eq!(results.iter().filter(|(_, v)| v == "ok").count(), 3, "{results:?}");
}

#[test]
fn ordinary_programs_work_under_the_default_profile() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = rootfs_with_probe();
    let results = run_probe(&r, &rootfs, &[], "fork,thread,loopback");
    assert!(results.iter().all(|(_, v)| v == "ok"), "{results:?}");
    // The listener's stdin is a FIFO held open until its data is in: a
    // busybox nc whose stdin ends (a background job's /dev/null) may quit
    // before the client's bytes arrive.
    let script = "set -e; ls / | grep -q bin; cat /etc/passwd | head -n1; echo hi > /tmp/f; cat /tmp/f; \
                  sh -c 'exit 3' || echo sub=$?; mkdir -p /tmp/a/b && rmdir /tmp/a/b; \
                  mkfifo /tmp/in; nc -l -p 9099 < /tmp/in > /tmp/got & exec 3> /tmp/in; \
                  for i in $(seq 400); do cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ':238B [0-9A-F]*:0000 0A' && break; sleep 0.05; done; \
                  echo over-lo | nc 127.0.0.1 9099; \
                  for i in $(seq 400); do [ -s /tmp/got ] && break; sleep 0.05; done; \
                  exec 3>&-; wait; cat /tmp/got";
    let out = r.sh(rootfs.path(), &[], script);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "root:x:0:0:root:/root:/bin/sh\nhi\nsub=3\nover-lo\n", "{}", stderr(&out));
}

fn write_profile(dir: &Path, name: &str, json: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_profile_file_replaces_the_default() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let dir = tempfile::tempdir().unwrap();
    let profile = write_profile(
        dir.path(),
        "no-mkdir.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    );
    let opt = format!("seccomp={profile}");
    let out = r.sh(rootfs.path(), &["--security-opt", &opt], "mkdir /tmp/x; echo rc=$?; ls /tmp/x");
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).starts_with("rc=1"), "{}", stdout(&out));
    assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
    // The file replaces docker's default: nothing else is refused.
    let out = r.sh(rootfs.path(), &["--security-opt", &opt], "unshare -Ur id -u");
    assert_eq!((code(&out), stdout(&out).trim()), (0, "0"), "{}", stderr(&out));
}

#[test]
fn a_bad_profile_is_one_line_125_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let r = Repeatr::new();
    let rootfs = Rootfs::busybox();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let before: Vec<_> = std::fs::read_dir(r.state.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let cases = [
        (
            write_profile(d, "typo.json", r#"{"defaultAction": "SCMP_ACT_ERRNO", "sycalls": []}"#),
            "unknown field `sycalls`",
        ),
        (write_profile(d, "broken.json", "{\"defaultAction\": "), "not a seccomp profile"),
        (
            write_profile(
                d,
                "trace.json",
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_TRACE"}]}"#,
            ),
            "SCMP_ACT_TRACE",
        ),
        (d.join("missing.json").to_str().unwrap().to_string(), "cannot be read"),
    ];
    for (path, needle) in &cases {
        let out = r.run(rootfs.path(), &["--security-opt", &format!("seccomp={path}")], &["/bin/true"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 125, "{path}: {err}");
        assert_eq!(err.lines().count(), 1, "{path}: {err}");
        assert!(err.contains(needle) && err.contains(path.as_str()), "{path}: {err}");
    }
    for opt in ["apparmor=unconfined", "seccomp"] {
        let out = r.run(rootfs.path(), &["--security-opt", opt], &["/bin/true"]);
        let err = stderr(&out);
        assert_eq!((code(&out), err.lines().count()), (125, 1), "{opt}: {err}");
        assert!(err.contains("seccomp=unconfined"), "{opt}: {err}");
    }
    let after: Vec<_> = std::fs::read_dir(r.state.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "a refused profile left something in the state dir");
    assert!(host_mounts_mentioning("rpt-rootfs").is_empty());
}

/// CPython's own tests of what containers break (processes, signals,
/// sockets, the file system) in a Debian root: the default profile may add
/// no failure to those of the same run unconfined (which has its own, from
/// the root: minbase has no /etc/services, and an overlay root's readdir
/// inode numbers differ from stat's). Needs debootstrap and Debian's
/// mirror once (the root is cached in /var/cache/repeatr-test/deb) and
/// several minutes: `cargo test --test seccomp -- --ignored cpython`.
#[test]
#[ignore = "minutes long; needs a Debian root (debootstrap)"]
fn cpython_tests_pass_under_the_default_profile() {
    if !require_root() {
        return;
    }
    let root = debian_root();
    let root = root.as_path();
    let r = Repeatr::new();
    // The names of the tests that failed, and how many ran.
    let run = |module: &str, opts: &[&str]| -> (Vec<String>, usize) {
        let out: Output = r.run(root, opts, &["python3", "-m", "test", "-v", "--timeout", "900", module]);
        let text = stdout(&out);
        let failed: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("FAIL: ").or_else(|| l.strip_prefix("ERROR: ")))
            .map(String::from)
            .collect();
        let ran = text.lines().find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok()).unwrap_or(0);
        assert!(failed.is_empty() || code(&out) != 0, "{module}: failures but exit 0");
        (failed, ran)
    };
    for module in ["test_os", "test_signal", "test_subprocess", "test_socket"] {
        let (with_filter, ran) = run(module, &[]);
        let (without, ran_unconfined) = run(module, &["--security-opt", "seccomp=unconfined"]);
        assert!(ran > 0 && ran == ran_unconfined, "{module}: ran {ran} and {ran_unconfined} tests");
        let added: Vec<&String> = with_filter.iter().filter(|t| !without.contains(t)).collect();
        assert!(added.is_empty(), "{module}: fails only under the default profile: {added:?}");
        eprintln!("{module}: {ran} tests; failing with and without the filter: {with_filter:?}");
    }
}
