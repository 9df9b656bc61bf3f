//! What to launch. Everything here is parsed, validated and opened on the
//! host before the clone: bad input then costs nothing to clean up, and the
//! child only ever works from file descriptors, never from host paths that
//! its own mounts could hide or an image could redirect.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use caps::Capability;

use super::seccomp::error::SeccompError;
use crate::sys;

/// The default PATH every job gets unless `--env PATH=...` says otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("rootfs {0:?} does not exist; pass a directory, a .tar/.tar.gz file, or - for a tar on stdin")]
    RootfsMissing(PathBuf),
    #[error("rootfs {path:?} cannot be opened: {err}")]
    RootfsOpen { path: PathBuf, err: io::Error },
    #[error("rootfs {0:?} is neither a directory nor a file; pass a directory or a tar")]
    RootfsKind(PathBuf),
    #[error("bad --mount {spec:?}: {why}; expected SRC:DST[:ro|:rw] with an absolute DST")]
    MountSyntax { spec: String, why: String },
    #[error("bad --mount {spec:?}: source {src:?} cannot be opened: {err}; create it first or fix the path")]
    MountSource { spec: String, src: PathBuf, err: io::Error },
    #[error("bad --env {0:?}: expected KEY=VALUE with a non-empty KEY without '='")]
    Env(String),
    #[error("bad --user {0:?}: expected UID[:GID] as numbers, e.g. 1000:1000")]
    User(String),
    #[error(
        "{what} {id} is (uid_t)-1, which setresuid/setresgid read as \"leave unchanged\" (the job would stay root); use 0..=4294967294"
    )]
    UnchangedId { what: &'static str, id: u32 },
    #[error(
        "bad {flag} {name:?}: not a capability; use a name from capabilities(7), e.g. NET_RAW or CAP_NET_RAW, or ALL"
    )]
    Capability { flag: &'static str, name: String },
    #[error("bad --workdir {0:?}: it must be an absolute path without '..'")]
    Workdir(String),
    #[error("bad --hostname {0:?}: use 1-63 letters, digits, '-' or '.'")]
    Hostname(String),
    #[error("bad --name {0:?}: use 1-63 letters, digits, '_', '-' or '.', starting with a letter or digit")]
    Name(String),
    #[error(
        "bad --name {0:?}: it is also the job's default hostname, which allows only letters, digits, '-' and '.'; \
         pass --hostname NAME too, or pick another --name"
    )]
    NameNotHostname(String),
    #[error("no command given; usage: repeatr run [OPTIONS] -- CMD [ARGS...]")]
    NoCommand,
    #[error("the command is an empty string; usage: repeatr run [OPTIONS] -- CMD [ARGS...]")]
    EmptyCommand,
    #[error("bad {flag}: {why}")]
    Duration { flag: &'static str, why: String },
    #[error("-t needs stdin to be a terminal (it is not); run without -t, or from a terminal")]
    TtyNotTerminal,
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// The job's root filesystem (or a ware's tree), opened on the host: a
/// directory that becomes the read-only lower layer of an overlay. Held as
/// a detached read-only copy of its mount tree (open_tree), made here in the
/// host's mount namespace: overlayfs refuses a lower layer that is not a
/// mount of the caller's namespace, and a detached tree is the one kind the
/// child can attach into its own. A tar root reaches the job the same way,
/// as its unpacked tree in the ware cache.
#[derive(Debug)]
pub struct Rootfs {
    pub tree: OwnedFd,
    /// The directory's uid, gid and mode, which the root's upper layer takes.
    pub owner: (u32, u32, u32),
}

/// A `--rootfs` argument, opened.
#[derive(Debug)]
pub enum RootfsArg {
    Dir(Rootfs),
    /// A tar stream (plain or gzip), for the ware cache to unpack or find.
    /// `from_stdin` means the job's own stdin is used up by it.
    Tar {
        file: File,
        from_stdin: bool,
    },
}

#[derive(Debug)]
pub struct BindMount {
    /// The host path as the user gave it, for messages.
    pub source_path: PathBuf,
    /// A detached copy of the source's mount tree (open_tree), with nosuid,
    /// nodev and (if asked) read-only already set on every mount in it.
    pub source: OwnedFd,
    pub source_is_dir: bool,
    /// Absolute, lexically clean path inside the job.
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// The capabilities a root job keeps (a non-root job has none), decided on
/// the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps(HashSet<Capability>);

/// podman's default set: Docker's without MKNOD (device nodes: with it a
/// root job made a node for a host loop device and wrote through it),
/// NET_RAW (raw sockets: ARP and source-address spoofing of other jobs;
/// ping works without it, see `allow_ping_sockets` in mounts) and AUDIT_WRITE.
pub const DEFAULT_CAPS: [Capability; 11] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_CHROOT,
];

impl Caps {
    pub fn default_set() -> Caps {
        Caps(DEFAULT_CAPS.into_iter().collect())
    }

    pub fn none() -> Caps {
        Caps(HashSet::new())
    }

    pub fn all() -> Caps {
        Caps(caps::all())
    }

    /// `--cap-add` / `--cap-drop` applied to the default set, as Docker and
    /// podman do: `ALL` in the adds starts from every capability, `ALL` in
    /// the drops from none; then the drops go and the adds come, so a
    /// capability both dropped and added is kept. Names as in
    /// capabilities(7), with or without `CAP_`, in any case.
    pub fn with_changes(add: &[String], drop: &[String]) -> Result<Caps, SpecError> {
        let is_all = |v: &[String]| v.iter().any(|c| c.eq_ignore_ascii_case("all"));
        let mut set = if is_all(add) {
            Caps::all()
        } else if is_all(drop) {
            Caps::none()
        } else {
            Caps::default_set()
        };
        for name in drop.iter().filter(|c| !c.eq_ignore_ascii_case("all")) {
            set.0.remove(&parse_cap("--cap-drop", name)?);
        }
        for name in add.iter().filter(|c| !c.eq_ignore_ascii_case("all")) {
            set.0.insert(parse_cap("--cap-add", name)?);
        }
        Ok(set)
    }

    pub fn set(&self) -> &HashSet<Capability> {
        &self.0
    }
}

fn parse_cap(flag: &'static str, name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    full.parse().map_err(|_| SpecError::Capability { flag, name: name.to_string() })
}

/// The seccomp filter the job gets, loaded right before its exec
/// (`container::seccomp`).
#[derive(Debug)]
pub enum Seccomp {
    /// No filter (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A program ready for the kernel: docker's default profile as build.rs
    /// compiled it, or a profile compiled on the host before the clone.
    Filter(Cow<'static, [libc::sock_filter]>),
}

/// A directory to create in the job's root before it starts.
#[derive(Clone, Debug)]
pub struct MakeDir {
    pub path: PathBuf,
    pub mode: u32,
    pub owner: User,
}

/// How the job's network namespace is filled before it execs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// A fresh netns with only `lo` up.
    None,
    /// A veth on the bridge, plugged in by the runner (see `network`).
    Bridge,
}

/// Everything the child needs, fixed before the clone.
#[derive(Debug)]
pub struct Spec {
    pub id: String,
    pub rootfs: Rootfs,
    pub argv: Vec<String>,
    /// KEY=VALUE strings: the whole environment; the host's never leaks in.
    pub env: Vec<String>,
    pub workdir: PathBuf,
    pub hostname: String,
    pub user: User,
    pub mounts: Vec<BindMount>,
    pub net: NetMode,
    /// More trees (verified wares, from the ware cache) placed in the root
    /// after it is built, in this order, each at its path; before any bind
    /// mount.
    pub wares: Vec<(PathBuf, Rootfs)>,
    pub caps: Caps,
    pub seccomp: Seccomp,
    /// Created after the root is built (if missing), then chowned and chmoded.
    pub make_dirs: Vec<MakeDir>,
    /// The job's stdout goes to the runner's stderr (a formula run keeps
    /// stdout for its record).
    pub stdout_to_stderr: bool,
    pub process: Process,
    /// How big the job's writable tmpfs mounts may grow.
    pub tmpfs: TmpfsSizes,
}

/// The `size=` of the job's tmpfs mounts, in bytes: its writable root (an
/// overlay's upper layer, or the unpacked tar) and /dev/shm. Without one
/// a tmpfs may take half of the host's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmpfsSizes {
    pub rootfs: u64,
    pub shm: u64,
}

impl Default for TmpfsSizes {
    fn default() -> TmpfsSizes {
        TmpfsSizes { rootfs: crate::limits::MAX_DEFAULT_ROOTFS_SIZE, shm: crate::limits::DEFAULT_SHM_SIZE }
    }
}

impl TmpfsSizes {
    /// As a tmpfs `size=` option: whole KiB, rounded up (tmpfs rounds to
    /// pages anyway).
    pub fn option(bytes: u64) -> String {
        format!("size={}k", bytes.div_ceil(1024))
    }
}

/// How the job's processes run and how they are stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    /// repeatr's init as pid 1 (`container::init`); false (`--no-init`):
    /// the command is pid 1, for an image that brings its own init.
    pub init: bool,
    /// `-t`: a pseudo-terminal for the job (`container::tty`).
    pub tty: bool,
    /// `-i`: with `-t`, the runner's stdin is relayed to the job's
    /// terminal (without `-t` the job has the runner's stdin anyway).
    pub interactive: bool,
    /// How long a job may take to stop after the first terminating signal
    /// before it is killed as a whole.
    pub stop_timeout: Duration,
    /// Past this, the job is stopped (SIGTERM, then SIGKILL after
    /// `stop_timeout`) and the runner exits 124.
    pub timeout: Option<Duration>,
}

/// docker's default grace period for `docker stop`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Process {
    fn default() -> Process {
        Process { init: true, tty: false, interactive: false, stop_timeout: DEFAULT_STOP_TIMEOUT, timeout: None }
    }
}

impl Spec {
    /// Every fd the spec holds (rootfs, bind sources, wares): all the
    /// child keeps open besides 0-2 and its pipes.
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut fds = vec![self.rootfs.tree.as_raw_fd()];
        fds.extend(self.mounts.iter().map(|m| m.source.as_raw_fd()));
        fds.extend(self.wares.iter().map(|(_, w)| w.tree.as_raw_fd()));
        fds
    }
}

/// Opens a rootfs argument: `-` for stdin, a directory, or a tar file.
pub fn open_rootfs(arg: &Path) -> Result<RootfsArg, SpecError> {
    if arg == Path::new("-") {
        // A dup, so that the child's reader is an fd it owns; O_CLOEXEC on
        // the dup keeps it away from the job.
        let file = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|err| SpecError::RootfsOpen { path: arg.into(), err })?;
        return Ok(RootfsArg::Tar { file, from_stdin: true });
    }
    let meta = match std::fs::metadata(arg) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SpecError::RootfsMissing(arg.into()));
        }
        Err(err) => {
            return Err(SpecError::RootfsOpen { path: arg.into(), err });
        }
    };
    let open_err = |err| SpecError::RootfsOpen { path: arg.into(), err };
    if meta.is_dir() {
        open_dir_root(arg).map(RootfsArg::Dir)
    } else if meta.is_file() {
        Ok(RootfsArg::Tar { file: File::open(arg).map_err(open_err)?, from_stdin: false })
    } else {
        Err(SpecError::RootfsKind(arg.into()))
    }
}

/// Opens the directory `dir` as a root (or a ware's tree).
pub fn open_dir_root(dir: &Path) -> Result<Rootfs, SpecError> {
    let open_err = |err| SpecError::RootfsOpen { path: dir.into(), err };
    let fd = open_path(dir).map_err(open_err)?;
    let owner = dir_owner_mode(&fd).map_err(open_err)?;
    let tree = sys::detached_copy(fd.as_fd(), libc::MOUNT_ATTR_RDONLY).map_err(open_err)?;
    Ok(Rootfs { tree, owner })
}

/// O_PATH open of a host path (following symlinks: the host side is the
/// user's own choice; only paths *inside* the image are untrusted).
fn open_path(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(path)?;
    Ok(f.into())
}

/// Parses `SRC:DST[:ro|:rw]` and opens SRC.
pub fn parse_mount(spec: &str) -> Result<BindMount, SpecError> {
    let bad = |why: &str| SpecError::MountSyntax { spec: spec.into(), why: why.into() };
    let mut parts: Vec<&str> = spec.split(':').collect();
    let readonly = match parts.last().copied() {
        Some("ro") if parts.len() == 3 => true,
        Some("rw") if parts.len() == 3 => false,
        _ if parts.len() == 2 => false,
        _ if parts.len() == 3 => return Err(bad("the mode must be ro or rw")),
        _ => return Err(bad("wrong number of ':'-separated fields")),
    };
    parts.truncate(2);
    let (src, dst) = (parts[0], parts[1]);
    if src.is_empty() {
        return Err(bad("empty source"));
    }
    let target = clean_job_path(dst).ok_or_else(|| bad("the destination must be absolute, without '.' or '..'"))?;
    if target == Path::new("/") {
        return Err(bad("the destination cannot be / (use --rootfs for that)"));
    }
    // A bind over /proc could hide the masked paths or replace the job's
    // view of its own process; runc refuses it for the same reason.
    if target.starts_with("/proc") {
        return Err(bad("the destination cannot be under /proc"));
    }
    let src_path = PathBuf::from(src);
    let open_err = |err| SpecError::MountSource { spec: spec.into(), src: src_path.clone(), err };
    let source = open_path(&src_path).map_err(open_err)?;
    let meta = File::from(source.try_clone().map_err(open_err)?).metadata().map_err(open_err)?;
    // nosuid and nodev always: a host path must not become a way to gain
    // privilege or reach devices inside the job.
    let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if readonly {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    let tree = sys::detached_copy(source.as_fd(), attrs).map_err(open_err)?;
    Ok(BindMount { source_path: src_path.clone(), source: tree, source_is_dir: meta.is_dir(), target, readonly })
}

/// An absolute path inside the job, with no `.`/`..` and no empty component.
/// Symlinks are not resolved here: that happens inside the job's root.
pub fn clean_job_path(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return None;
    }
    let mut clean = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => clean.push(n),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(clean)
}

pub fn parse_user(s: &str) -> Result<User, SpecError> {
    let bad = || SpecError::User(s.into());
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid: u32 = match g {
        Some(g) => g.parse().map_err(|_| bad())?,
        None => uid,
    };
    User::new(uid, gid)
}

impl User {
    /// A job's identity; uid or gid 4294967295 is refused: it is -1 to
    /// setresuid(2) and setresgid(2), "unchanged", so the job would keep
    /// the runner's root.
    pub fn new(uid: u32, gid: u32) -> Result<User, SpecError> {
        if uid == u32::MAX {
            return Err(SpecError::UnchangedId { what: "uid", id: uid });
        }
        if gid == u32::MAX {
            return Err(SpecError::UnchangedId { what: "gid", id: gid });
        }
        Ok(User { uid, gid })
    }
}

/// Checks a `KEY=VALUE` environment entry.
pub fn check_env(kv: &str) -> Result<(), SpecError> {
    match kv.split_once('=') {
        Some((k, _)) if !k.is_empty() && !kv.contains('\0') => Ok(()),
        _ => Err(SpecError::Env(kv.into())),
    }
}

/// The job environment: defaults first, then `--env` entries overriding by
/// key. HOME is added by the child from the image's /etc/passwd unless set.
pub fn build_env(user_env: &[String], hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = vec![format!("PATH={DEFAULT_PATH}"), format!("HOSTNAME={hostname}")];
    for kv in user_env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    env
}

pub fn check_hostname(h: &str) -> Result<(), SpecError> {
    let ok = !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with(['-', '.']);
    if ok { Ok(()) } else { Err(SpecError::Hostname(h.into())) }
}

/// The owner and mode of a rootfs directory, so the job's root keeps them.
fn dir_owner_mode(fd: &OwnedFd) -> io::Result<(u32, u32, u32)> {
    let meta = File::from(fd.try_clone()?).metadata()?;
    Ok((meta.uid(), meta.gid(), meta.mode() & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_are_cleaned_or_refused() {
        assert_eq!(clean_job_path("/a//b/"), Some(PathBuf::from("/a/b")));
        assert_eq!(clean_job_path("a/b"), None);
        assert_eq!(clean_job_path("/a/../b"), None);
        assert_eq!(clean_job_path("/a/./b"), Some(PathBuf::from("/a/b")));
    }

    #[test]
    fn mount_specs() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().to_str().unwrap();
        let m = parse_mount(&format!("{src}:/data:ro")).unwrap();
        assert!(m.readonly && m.source_is_dir && m.target == Path::new("/data"));
        assert!(!parse_mount(&format!("{src}:/data")).unwrap().readonly);
        for bad in [
            format!("{src}:data"),
            format!("{src}:/"),
            format!("{src}:/proc/x"),
            format!("{src}:/d:rx"),
            src.to_string(),
        ] {
            assert!(matches!(parse_mount(&bad), Err(SpecError::MountSyntax { .. })), "{bad}");
        }
        assert!(matches!(parse_mount("/nonexistent/x:/d"), Err(SpecError::MountSource { .. })));
    }

    #[test]
    fn users_and_env() {
        assert_eq!(parse_user("1000").unwrap(), User { uid: 1000, gid: 1000 });
        assert_eq!(parse_user("1:2").unwrap(), User { uid: 1, gid: 2 });
        assert!(parse_user("bob").is_err() && parse_user("1:").is_err());
        assert!(matches!(parse_user("4294967295"), Err(SpecError::UnchangedId { what: "uid", .. })));
        assert!(matches!(parse_user("0:4294967295"), Err(SpecError::UnchangedId { what: "gid", .. })));
        assert!(parse_user("4294967294:4294967294").is_ok());
        assert!(check_env("A=b").is_ok() && check_env("=b").is_err() && check_env("A").is_err());
        let env = build_env(&["PATH=/x".into(), "FOO=bar".into()], "h");
        assert_eq!(env, vec!["HOSTNAME=h", "PATH=/x", "FOO=bar"]);
    }

    #[test]
    fn capability_changes_follow_docker() {
        let none: [String; 0] = [];
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(Caps::with_changes(&none, &none).unwrap(), Caps::default_set());
        let raw = Caps::with_changes(&s(&["net_raw"]), &none).unwrap();
        assert!(raw.set().contains(&Capability::CAP_NET_RAW) && raw.set().len() == DEFAULT_CAPS.len() + 1);
        let only = Caps::with_changes(&s(&["CAP_NET_BIND_SERVICE"]), &s(&["ALL"])).unwrap();
        assert_eq!(only.set().len(), 1);
        let kept = Caps::with_changes(&s(&["CHOWN"]), &s(&["chown"])).unwrap();
        assert!(kept.set().contains(&Capability::CAP_CHOWN), "add wins over drop");
        assert_eq!(Caps::with_changes(&s(&["all"]), &none).unwrap(), Caps::all());
        let e = Caps::with_changes(&s(&["FLY"]), &none).unwrap_err().to_string();
        assert!(e.contains("--cap-add \"FLY\"") && e.contains("capabilities(7)"), "{e}");
        for cap in [Capability::CAP_MKNOD, Capability::CAP_NET_RAW, Capability::CAP_AUDIT_WRITE] {
            assert!(!Caps::default_set().set().contains(&cap), "{cap} in the default set");
        }
    }

    #[test]
    fn names() {
        assert!(check_hostname("my-host").is_ok() && check_hostname("a b").is_err());
    }
}
