//! Shared helpers for the integration tests: a busybox rootfs, a runner
//! command with its own state dir, root checks that fail loudly in CI.
#![allow(dead_code)]

pub mod cgroups;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BUSYBOX: &str = "/bin/busybox";

/// True when the test may run. Root is needed for namespaces and mounts; in
/// CI a missing root is a failure, never a silent skip.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("this test needs root (CI=true): run the suite as root");
    }
    eprintln!("skipped: needs root");
    false
}

/// A minimal rootfs: static busybox with relative applet links, /etc/passwd.
pub struct Rootfs {
    pub dir: tempfile::TempDir,
}

impl Rootfs {
    pub fn busybox() -> Rootfs {
        assert!(Path::new(BUSYBOX).exists(), "{BUSYBOX} missing: apt-get install -y busybox-static");
        let dir = tempfile::Builder::new().prefix("rpt-rootfs-").tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
            .unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Rootfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs as a tar (optionally gzipped) in a temp file.
    pub fn to_tar(&self, gzip: bool) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().prefix("rpt-rootfs-").suffix(".tar").tempfile().unwrap();
        let out: Box<dyn std::io::Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast()))
        } else {
            Box::new(file.reopen().unwrap())
        };
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        b.append_dir_all(".", self.path()).unwrap();
        b.into_inner().unwrap().flush().unwrap();
        file
    }
}

/// Everything about a tree that a job could change: the test of "the source
/// rootfs is byte-for-byte unchanged".
pub fn manifest(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let m = std::fs::symlink_metadata(p).unwrap();
    let mut desc = format!("mode={:o} uid={} gid={} mtime={} size={}", m.mode(), m.uid(), m.gid(), m.mtime(), m.size());
    if m.file_type().is_symlink() {
        desc += &format!(" -> {:?}", std::fs::read_link(p).unwrap());
    } else if m.is_file() {
        let data = std::fs::read(p).unwrap();
        desc +=
            &format!(" sum={}", data.iter().fold(0u64, |h, b| h.wrapping_mul(1099511628211).wrapping_add(*b as u64)));
    }
    out.insert(p.strip_prefix(root).unwrap().to_path_buf(), desc);
    if m.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            walk(root, &e.unwrap().path(), out);
        }
    }
}

/// A runner invocation with its own state dir (removed on drop) and its
/// own config: a bridge of its own on a subnet from 198.18.0.0/15, so that a
/// test that forgets `--net none` still never touches the host's defaults.
pub struct Repeatr {
    pub state: tempfile::TempDir,
    pub bridge: String,
}

static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Repeatr {
    pub fn new() -> Repeatr {
        let state = tempfile::Builder::new().prefix("rpt-state-").tempdir().unwrap();
        let n = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let bridge = format!("rd{}{}", std::process::id() % 100000, n % 1000);
        // A ware cache of its own, never the host's default.
        let config = format!(
            "[network]\nbridge = \"{bridge}\"\nsubnet = \"198.19.{}.0/24\"\ndns = []\negress = \"none\"\n\
             [cache]\ndir = \"{}\"\n",
            n % 128,
            state.path().join("cache").display()
        );
        std::fs::write(state.path().join("default.toml"), config).unwrap();
        Repeatr { state, bridge }
    }

    /// Its ware cache (`[cache] dir`).
    pub fn cache_dir(&self) -> PathBuf {
        self.state.path().join("cache")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_repeatr"));
        c.env("REPEATR_STATE_DIR", self.state.path())
            .env("REPEATR_CONFIG", self.state.path().join("default.toml"))
            .env_remove("RUST_LOG");
        c
    }

    /// `repeatr run --rootfs ROOTFS [opts] -- argv`, output captured.
    pub fn run(&self, rootfs: &Path, opts: &[&str], argv: &[&str]) -> Output {
        let mut c = self.cmd();
        c.arg("run").arg("--rootfs").arg(rootfs);
        if !opts.contains(&"--net") {
            c.args(["--net", "none"]);
        }
        c.args(opts).arg("--").args(argv).stdin(Stdio::null());
        c.output().unwrap()
    }

    pub fn sh(&self, rootfs: &Path, opts: &[&str], script: &str) -> Output {
        self.run(rootfs, opts, &["/bin/sh", "-c", script])
    }

    /// A `--net none` job of `script` with `opts`, once it has printed
    /// `ready` (its first line).
    pub fn start_ready(&self, rootfs: &Path, opts: &[&str], script: &str) -> Runner {
        let mut c = self.cmd();
        c.arg("run").arg("--rootfs").arg(rootfs).args(["--net", "none"]).args(opts);
        c.args(["--", "/bin/sh", "-c", script]);
        let mut runner =
            c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map(Runner::new).unwrap();
        wait_for_line(&mut runner, "ready");
        runner
    }

    pub fn spawn_sh(&self, rootfs: &Path, script: &str) -> Runner {
        let mut c = self.cmd();
        c.arg("run").arg("--rootfs").arg(rootfs).args(["--net", "none", "--", "/bin/sh", "-c", script]);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map(Runner::new).unwrap()
    }
}

impl Drop for Repeatr {
    fn drop(&mut self) {
        // The cgroups of a runner a test killed stay until a gc of its
        // state dir (or the next run beside them): this is that gc.
        let _ = self.cmd().arg("gc").stdout(Stdio::null()).stderr(Stdio::null()).status();
        // Only there if a test ran a networked job on the default config.
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or_else(|| panic!("runner killed by a signal: {o:?}"))
}

/// Reads the child's stdout until `line` appears (the job is ready).
pub fn wait_for_line(child: &mut Child, line: &str) {
    let out = child.stdout.as_mut().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains(line) {
        assert!(Instant::now() < deadline, "job never printed {line:?}; got {seen:?}");
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "job's stdout closed before {line:?}; got {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// The runner's children (the job's pid 1, as the host sees it).
pub fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Waits until `pid` no longer exists (or is a zombie nobody reaps yet).
pub fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(String::from));
        if stat.is_empty() || state.as_deref() == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} still alive: {stat}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Mounts in the host's mount namespace whose source or target mentions `needle`.
pub fn host_mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// A runner process that a failing test must not leave behind: dropping it
/// SIGKILLs the runner if it still runs, and the kernel then kills its job
/// (PR_SET_PDEATHSIG) and everything the job had.
pub struct Runner(Option<Child>);

impl Runner {
    pub fn new(child: Child) -> Runner {
        Runner(Some(child))
    }

    /// The child, for `wait_with_output` (which consumes it).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("runner already taken")
    }
}

impl std::ops::Deref for Runner {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("runner already taken")
    }
}

impl std::ops::DerefMut for Runner {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("runner already taken")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut()
            && matches!(c.try_wait(), Ok(None))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Debian root with CPython and its test suite (debootstrap, minbase),
/// made once and cached in /var/cache/repeatr-test/deb. For the ignored,
/// minutes-long fidelity tests: needs debootstrap and Debian's mirror the
/// first time.
pub fn debian_root() -> PathBuf {
    let root = PathBuf::from("/var/cache/repeatr-test/deb");
    if !root.join("usr/lib/python3.11/test/test_os.py").exists() {
        let mirror = "http://deb.debian.org/debian";
        let tmp = root.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        let status = Command::new("debootstrap")
            .args(["--variant=minbase", "--include=python3,libpython3.11-testsuite,procps", "bookworm"])
            .arg(&tmp)
            .arg(mirror)
            .status()
            .expect("debootstrap (apt-get install -y debootstrap)");
        assert!(status.success(), "debootstrap failed");
        // Never the host's resolver from a job.
        std::fs::write(tmp.join("etc/resolv.conf"), "# none\n").unwrap();
        std::fs::write(tmp.join("etc/hosts"), "127.0.0.1 localhost\n::1 localhost\n").unwrap();
        std::fs::rename(&tmp, &root).unwrap();
    }
    root
}
