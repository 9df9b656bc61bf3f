//! The child's side of the launch, from the clone to the exec, in order.
//! It runs as pid 1 of the job's new pid namespace, inside new mount, uts,
//! ipc and net namespaces; at the end it forks the command and stays as
//! the job's init (`init`), or with --no-init execs the command itself.
//! Every step says why it is where it is.
//!
//! Failures are reported to the runner over the report pipe and the child
//! exits; since everything it built lives in its own namespaces, its death
//! is the whole cleanup.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use super::protocol::{EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_RUNNER_ERROR, GoMessage, LaunchFailure, TTY_MASTER};
use super::spec::{NetMode, Spec};
use super::syscall::{Linux, Syscall};
use super::{init, mounts, rootfs, seccomp, security, tty};
use crate::sys;

/// Never returns: either execs the job or exits with a reported failure.
pub fn child_main(spec: &Spec, mount_base: &Path, control: OwnedFd, report: OwnedFd) -> ! {
    let failure = match setup_and_exec(spec, mount_base, control, report.as_raw_fd()) {
        Ok(f) | Err(f) => f,
    };
    let mut report = File::from(report);
    let _ = report.write_all(&failure.encode());
    sys::exit_now(failure.code)
}

fn setup_err(what: &str) -> impl Fn(io::Error) -> LaunchFailure + '_ {
    move |e| LaunchFailure { code: EXIT_RUNNER_ERROR, message: format!("{what}: {e}") }
}

/// Returns only with the reason the job could not be started.
fn setup_and_exec(
    spec: &Spec,
    mount_base: &Path,
    control: OwnedFd,
    report_fd: std::os::fd::RawFd,
) -> Result<LaunchFailure, LaunchFailure> {
    // First, die with the runner: from here on the kernel kills us however
    // the runner goes (one that died before this call is caught at the go,
    // whose pipe then reads EOF). setsid so the job never shares the
    // runner's session (a terminal's job control must not reach around us).
    security::die_with_parent().map_err(setup_err("PR_SET_PDEATHSIG"))?;
    let _ = nix::unistd::setsid();

    // Only what the launch needs stays open: an fd the runner's caller
    // left open would otherwise be reachable through /proc/self/fd/N by
    // every path below that comes from the image.
    let mut keep = spec.fds();
    keep.extend([control.as_raw_fd(), report_fd]);
    sys::close_fds_except(&keep).map_err(setup_err("closing inherited fds"))?;

    let etc = build_and_enter_root(&Linux, spec, mount_base)?;
    if spec.stdout_to_stderr {
        nix::unistd::dup2_stdout(std::io::stderr()).map_err(|e| setup_err("stdout")(e.into()))?;
    }

    // The working directory, created if missing (after the pivot, so it
    // lands inside), then checked to be inside: getcwd of a directory
    // outside the root would not be absolute.
    // Both resolved inside the root, fd by fd (RESOLVE_IN_ROOT, no magic
    // links): an image symlink to /proc/self/fd/N never leads out.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let root = File::open("/").map_err(setup_err("/"))?;
    for d in &spec.make_dirs {
        make_dir(root.as_fd(), d).map_err(setup_err("creating a directory"))?;
    }
    let workdir = open_dir_in_root(root.as_fd(), &spec.workdir).map_err(setup_err("creating --workdir"))?;
    nix::unistd::fchdir(workdir.as_fd()).map_err(|e| setup_err("entering --workdir")(e.into()))?;
    drop((workdir, root));
    let cwd = nix::unistd::getcwd().map_err(|e| setup_err("getcwd")(e.into()))?;
    if !cwd.is_absolute() {
        return Err(setup_err("--workdir")(io::Error::other(
            "it resolves outside the job's root (a symlink in the image leads out): give a --workdir that is a real directory inside the image",
        )));
    }

    // `--net none`: lo is all the network there is (while we still may).
    if spec.net == NetMode::None {
        crate::network::loopback_up().map_err(|e| setup_err("bringing up lo")(io::Error::other(e)))?;
    }

    // Everything up to the exec happens before the runner's go, so that
    // after it only the exec remains on the job's start path. The address
    // is only known once the runner has leased it, which it does while we
    // build the root: /etc/hosts and resolv.conf (bound into the job's
    // view with the root, see `mounts::bind_etc_files`) are filled from
    // the go; the hostname is known now.
    File::from(etc.hostname)
        .write_all(format!("{}\n", spec.hostname).as_bytes())
        .map_err(setup_err("writing /etc/hostname"))?;
    let (mut hosts, mut resolv_conf) = (File::from(etc.hosts), File::from(etc.resolv_conf));

    // Identity and capabilities (in the order `drop_privileges` explains),
    // then no_new_privs, so that nothing in the image can raise the job
    // above them. A setuid clears the death signal: set it again. Had the
    // runner died in the gap, the go below reads EOF and we exit.
    security::new_session_keyring().map_err(setup_err("joining a new session keyring"))?;
    security::drop_privileges(spec.user, &spec.caps).map_err(setup_err("dropping privileges"))?;
    security::no_new_privs().map_err(setup_err("PR_SET_NO_NEW_PRIVS"))?;
    security::die_with_parent().map_err(setup_err("PR_SET_PDEATHSIG"))?;

    // Default dispositions: Rust's std ignores SIGPIPE and the runner has
    // handlers installed, which an exec'd job (or our init) would inherit.
    // Every signal stays blocked, as it has been since the clone: the init
    // takes them with sigwaitinfo, the command unblocks them at its exec.
    sys::default_signal_dispositions().map_err(setup_err("resetting signals"))?;
    let exec = prepare_exec(spec)?;

    // `-t`: the job's terminal, in the job's devpts and the job user's;
    // its master goes to the runner, which relays it.
    let terminal = match spec.process.tty {
        true => Some(open_terminal(&control)?),
        false => None,
    };

    // The network is the runner's to plug in now that our netns exists; we
    // wait for its word. EOF instead of a byte: the runner died.
    let go_msg = wait_for_go(&control)?;
    hosts.write_all(go_msg.hosts.as_bytes()).map_err(setup_err("writing /etc/hosts"))?;
    resolv_conf.write_all(go_msg.resolv_conf.as_bytes()).map_err(setup_err("writing /etc/resolv.conf"))?;
    drop((hosts, resolv_conf));

    // The init stays pid 1; from here on this is the command's process
    // (pid 2), or with --no-init still pid 1.
    if spec.process.init {
        init::fork_command(control, spec.process.tty).map_err(setup_err("starting the job's init"))?;
    }
    match terminal {
        Some(slave) => tty::become_controlling(slave).map_err(setup_err("making the job's terminal"))?,
        None if spec.process.init => init::join_own_group(),
        None => {}
    }

    // Nothing but 0-2 across the exec (runc CVE-2024-21626: a leaked fd
    // let the job's cwd sit in the host's mount namespace); right before
    // the exec, so every fd opened on the way is covered.
    sys::cloexec_from(3).map_err(setup_err("close_range"))?;
    // A signal forwarded to us before the exec is delivered here, with its
    // default action: the command is stopped before it started.
    security::unblock_signals().map_err(setup_err("unblocking signals"))?;

    // The seccomp filter, last: only the exec runs under it (a profile
    // cannot break the set-up), and after no_new_privs, without which the
    // kernel refuses a filter from a task lacking CAP_SYS_ADMIN.
    seccomp::load(&spec.seccomp).map_err(setup_err("loading the seccomp filter"))?;

    // exec; the report pipe is O_CLOEXEC, so its EOF tells the runner
    // the exec worked.
    Ok(exec.run())
}

/// Opens the job's pty and sends its master to the runner; returns the slave.
fn open_terminal(control: &OwnedFd) -> Result<OwnedFd, LaunchFailure> {
    let t = tty::open_in_job().map_err(setup_err("opening the job's terminal in /dev/ptmx"))?;
    sys::send_fd(control.as_fd(), TTY_MASTER, t.master.as_fd()).map_err(setup_err("sending the terminal"))?;
    Ok(t.slave)
}

/// From the host's tree into the job's root, for good: built, filled,
/// mounted into, pivoted into, its kernel paths masked. Generic over the
/// [`Syscall`] seam so a test records the order of these steps without
/// root; the launch runs them with [`Linux`].
fn build_and_enter_root<S: Syscall>(
    s: &S,
    spec: &Spec,
    mount_base: &Path,
) -> Result<mounts::EtcFiles<S::Fd>, LaunchFailure> {
    // Before any other mount: nothing mounted from here on may propagate
    // back to the host.
    s.make_rslave(Path::new("/")).map_err(setup_err("making / rslave"))?;

    // The root, on a tmpfs that only this mount namespace sees: the kernel
    // takes it down when the job dies, even after a SIGKILL of the runner.
    let root =
        rootfs::build(s, &spec.rootfs, mount_base, spec.tmpfs.rootfs).map_err(setup_err("building the rootfs"))?;
    // Further trees, in path order, each resolved inside the root (so an
    // earlier tree's symlink cannot send a later one out of it); before
    // the binds, so nothing is ever placed under a host mount.
    for (n, (path, ware)) in spec.wares.iter().enumerate() {
        rootfs::place(s, &root, mount_base, n, path, ware).map_err(setup_err("placing an input"))?;
    }

    // Kernel filesystems, /dev, the user's binds: once the root's content
    // is complete, and each target resolved inside the new root, so that a
    // symlink in the image cannot send a mount onto the host.
    mounts::mount_proc_sys(s, &root).map_err(setup_err("mounting /proc and /sys"))?;
    let scratch = mounts::mount_dev(s, &root, spec.tmpfs.shm).map_err(setup_err("building /dev"))?;
    mounts::mount_binds(s, &root, &spec.mounts).map_err(setup_err("--mount"))?;
    // Over the user's binds, so that they cover one at /etc; filled later
    // (hosts and resolv.conf with the runner's go).
    let etc = mounts::bind_etc_files(s, &root, &scratch).map_err(setup_err("/etc files"))?;

    s.set_hostname(&spec.hostname).map_err(setup_err("sethostname"))?;

    // Into the new root for good; then hide and freeze what the kernel
    // exposes of the host, in the job's /proc and /sys, where `/` is the
    // job's root and no path can lead out of it.
    s.pivot_into(&root).map_err(setup_err("pivot_root"))?;
    drop((root, scratch));
    mounts::protect_kernel_paths(s).map_err(setup_err("masking kernel paths"))?;
    Ok(etc)
}

/// After the pivot, so `/` is the job's root and nothing can lead out of it.
fn make_dir(root: std::os::fd::BorrowedFd<'_>, d: &super::spec::MakeDir) -> io::Result<()> {
    let dir = open_dir_in_root(root, &d.path)?;
    nix::unistd::fchown(dir.as_fd(), Some(d.owner.uid.into()), Some(d.owner.gid.into())).map_err(io::Error::from)?;
    nix::sys::stat::fchmod(dir.as_fd(), nix::sys::stat::Mode::from_bits_truncate(d.mode)).map_err(io::Error::from)
}

/// The directory at `path` inside `root`, created (with what is missing on
/// the way) if need be, opened for reading.
fn open_dir_in_root(root: std::os::fd::BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let at = super::resolve::resolve_in_root(root, path, super::resolve::Create::Dir)?;
    sys::openat2(at.as_fd(), Path::new("."), libc::O_DIRECTORY | libc::O_RDONLY, 0, sys::Resolve::Beneath)
}

/// Blocks until the runner says go; EOF instead (the runner died) ends us.
fn wait_for_go(control: &OwnedFd) -> Result<GoMessage, LaunchFailure> {
    let mut f = File::from(control.try_clone().map_err(setup_err("control socket"))?);
    let mut read = |buf: &mut [u8]| match std::io::Read::read_exact(&mut f, buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => sys::exit_now(EXIT_RUNNER_ERROR),
        Err(e) => Err(setup_err("waiting for the runner")(e)),
    };
    let mut header = [0u8; 9];
    read(&mut header)?;
    let (h, r) = GoMessage::lengths(&header).ok_or_else(|| setup_err("go pipe")(io::Error::other("bad message")))?;
    let mut body = vec![0u8; h + r];
    read(&mut body)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(GoMessage { hosts: text(&body[..h]), resolv_conf: text(&body[h..]) })
}

/// The job's command line and environment as the exec needs them, and the
/// paths to try for the command (its PATH inside the new root), made
/// before the go so that only the exec itself follows it.
struct Exec {
    argv: Vec<CString>,
    envp: Vec<CString>,
    cmd: String,
    path_var: String,
    candidates: Vec<CString>,
}

fn prepare_exec(spec: &Spec) -> Result<Exec, LaunchFailure> {
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        env.push(format!("HOME={}", home_of(&passwd, spec.user.uid)));
    }
    let (argv, envp) = match (sys::cstrings(&spec.argv), sys::cstrings(&env)) {
        (Ok(a), Ok(e)) => (a, e),
        _ => {
            let message = "an argument or environment entry contains a NUL byte".into();
            return Err(LaunchFailure { code: EXIT_RUNNER_ERROR, message });
        }
    };
    let cmd = spec.argv[0].clone();
    let path_var = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(super::spec::DEFAULT_PATH).to_string();
    let candidates = if cmd.contains('/') {
        vec![cmd.clone()]
    } else {
        path_var.split(':').filter(|d| !d.is_empty()).map(|d| format!("{d}/{cmd}")).collect()
    };
    // A candidate with a NUL byte cannot exist: skip it.
    let candidates = candidates.into_iter().filter_map(|c| CString::new(c).ok()).collect();
    Ok(Exec { argv, envp, cmd, path_var, candidates })
}

impl Exec {
    /// Execs the first candidate that exists. Returns only on failure: 127
    /// when nothing was found, 126 when something was found but could not
    /// be executed (as a shell reports them).
    fn run(self) -> LaunchFailure {
        let fail = |code, message: String| LaunchFailure { code, message };
        let mut denied: Option<(&CString, io::Error)> = None;
        for cand in &self.candidates {
            let err = sys::execve(cand, &self.argv, &self.envp);
            match err.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => continue,
                _ => {
                    denied.get_or_insert((cand, err));
                }
            }
        }
        let cmd = &self.cmd;
        match denied {
            Some((path, err)) => fail(EXIT_CANNOT_EXEC, format!("cannot execute {path:?} in the job: {err}")),
            None if cmd.contains('/') => {
                fail(EXIT_NOT_FOUND, format!("{cmd:?} not found in the job's rootfs; check the path inside the image"))
            }
            None => fail(
                EXIT_NOT_FOUND,
                format!(
                    "{cmd:?} not found in the job's PATH ({}); give an absolute path or set --env PATH=...",
                    self.path_var
                ),
            ),
        }
    }
}

/// The uid's home directory from the image's /etc/passwd ("/root" for root
/// when the image has none, "/" for others, as docker does).
pub fn home_of(passwd: &str, uid: u32) -> String {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
        })
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| if uid == 0 { "/root".into() } else { "/".into() })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::path::PathBuf;

    use super::super::mounts::{MASKED_PATHS, READONLY_PATHS};
    use super::super::recorder::Recorder;
    use super::super::spec::{BindMount, Caps, Rootfs, Seccomp, User};
    use super::*;

    /// Stands for an fd the runner opened (a rootfs tree, a bind source, a
    /// ware's tree); the recorder never reads it.
    fn runner_fd() -> File {
        File::open("/dev/null").unwrap()
    }

    fn spec(rootfs: Rootfs, mounts: Vec<BindMount>, wares: Vec<(PathBuf, Rootfs)>) -> Spec {
        Spec {
            id: "job".into(),
            rootfs,
            argv: vec!["/bin/true".into()],
            env: Vec::new(),
            workdir: "/".into(),
            hostname: "job".into(),
            user: User { uid: 0, gid: 0 },
            mounts,
            net: NetMode::None,
            wares,
            caps: Caps::default_set(),
            seccomp: Seccomp::Unconfined,
            make_dirs: Vec::new(),
            stdout_to_stderr: false,
            process: Default::default(),
            tmpfs: Default::default(),
        }
    }

    /// The masked paths that are directories on a host: they get a
    /// read-only tmpfs, the files /dev/null.
    const MASKED_DIRS: [&str; 5] =
        ["/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"];

    /// What follows a complete root at `root`: /proc and /sys, then /dev,
    /// every target resolved inside the root.
    fn kernel_fs_steps(root: &str) -> String {
        let nodes = ["null", "zero", "full", "random", "urandom", "tty"];
        let open_nodes: Vec<String> = nodes.iter().map(|n| format!("open {root}/dev/{n} beneath {root}/dev")).collect();
        let bind_nodes: Vec<String> = nodes
            .iter()
            .map(|n| format!("open {root}/dev/{n} beneath {root}/dev\nbind {root}/dev/{n} on {root}/dev/{n}"))
            .collect();
        let (open_nodes, bind_nodes) = (open_nodes.join("\n"), bind_nodes.join("\n"));
        format!(
            "check /proc, /sys and /dev at {root}
            resolve {root}/proc in root {root}
            mount proc on {root}/proc
            open {root}/proc in root {root}
            allow ping sockets at {root}/proc
            resolve {root}/sys in root {root}
            mount sysfs on {root}/sys
            resolve {root}/dev in root {root}
            mount tmpfs on {root}/dev (mode=755,size=256k)
            open {root}/dev in root {root}
            make the device nodes at {root}/dev
            {open_nodes}
            mount tmpfs on {root}/dev (mode=755,size=65536k)
            open {root}/dev in root {root}
            make the /dev entries at {root}/dev
            {bind_nodes}
            open {root}/dev/pts beneath {root}/dev
            mount devpts on {root}/dev/pts (newinstance,ptmxmode=0666,mode=0620,gid=5)
            open {root}/dev/shm beneath {root}/dev
            mount tmpfs on {root}/dev/shm (mode=1777,size=65536k)"
        )
    }

    /// The job's /etc files: made on the scratch tmpfs under /dev, each
    /// bound over its path, resolved inside the root.
    fn etc_steps(root: &str) -> String {
        let mut steps = format!("make the /etc files at {root}/dev");
        for name in ["hostname", "hosts", "resolv.conf"] {
            steps += &format!(
                "\nopen {root}/dev/{name} beneath {root}/dev
                open {root}/etc/{name} in root {root}
                bind {root}/dev/{name} on {root}/etc/{name}
                open {root}/dev/{name} beneath {root}/dev"
            );
        }
        steps
    }

    /// The pivot into `root`, and after it, with `/` the job's root, the
    /// masks: each path opened inside that root, then covered.
    fn entering_steps(root: &str) -> String {
        let mut steps = format!(
            "hostname job
            pivot into {root}
            open /
            open /dev/null in root /
            check /dev/null at /dev/null"
        );
        for path in MASKED_PATHS {
            let cover = if MASKED_DIRS.contains(&path) {
                format!("mount tmpfs on {path} (size=0)")
            } else {
                format!("bind /dev/null on {path}")
            };
            steps += &format!("\nopen {path} in root /\n{cover}");
        }
        for path in READONLY_PATHS {
            steps += &format!("\nopen {path} in root /\nbind {path} on {path}");
        }
        steps
    }

    /// Runs `spec`'s mount steps through a recorder and checks them, in
    /// this order: / made rslave and the tmpfs at the mount base; the
    /// root's `content`; the kernel filesystems; the `binds`; the pivot into
    /// `root` and the masks. Fails at the first step out of place, with the
    /// whole log to read.
    fn assert_steps(spec: &Spec, root: &str, content: &str, binds: &str) {
        let rec = Recorder::with_dirs(&MASKED_DIRS);
        build_and_enter_root(&rec, spec, Path::new("/mnt/base")).unwrap();
        let want = format!(
            "rslave /
            open /
            open /mnt/base beneath /
            mount tmpfs on /mnt/base (mode=755,size=8388608k)
            open /mnt/base
            {content}
            {kernel_fs}
            {binds}
            {etc}
            {entering}",
            kernel_fs = kernel_fs_steps(root),
            etc = etc_steps(root),
            entering = entering_steps(root),
        );
        let want: Vec<&str> = want.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let got = rec.calls();
        let log = got.join("\n");
        for (i, w) in want.iter().enumerate() {
            assert_eq!(got.get(i).map(String::as_str), Some(*w), "step {i} differs; the steps were:\n{log}");
        }
        assert_eq!(got.len(), want.len(), "steps after the last expected one; the steps were:\n{log}");
    }

    /// Every step in order, so a reordering fails here: a mount onto a
    /// target not resolved inside the root, /proc before the root is
    /// complete, a bind before the wares are placed, a mask before the pivot.
    #[test]
    fn mount_steps_of_a_directory_rootfs_with_a_ware_and_a_bind() {
        let (tree, source, ware) = (OwnedFd::from(runner_fd()), OwnedFd::from(runner_fd()), OwnedFd::from(runner_fd()));
        let (tree_fd, source_fd, ware_fd) = (tree.as_raw_fd(), source.as_raw_fd(), ware.as_raw_fd());
        let bind = BindMount {
            source_path: "/srv/data".into(),
            source,
            source_is_dir: true,
            target: "/data".into(),
            readonly: true,
        };
        let spec = spec(
            Rootfs { tree, owner: (0, 0, 0o755) },
            vec![bind],
            vec![("/opt/lib".into(), Rootfs { tree: ware, owner: (1000, 1000, 0o750) })],
        );
        let root = "/mnt/base/merged";
        let content = format!(
            "make lower, upper, work and merged at /mnt/base
            open /mnt/base/upper beneath /mnt/base
            give upper the source root's owner and mode at /mnt/base/upper
            open /mnt/base/merged beneath /mnt/base
            open /mnt/base/lower beneath /mnt/base
            attach fd {tree_fd} on /mnt/base/lower
            open /mnt/base/lower beneath /mnt/base
            open /mnt/base/upper beneath /mnt/base
            open /mnt/base/work beneath /mnt/base
            mount overlay on {root} (lowerdir=fd(/mnt/base/lower),upperdir=fd(/mnt/base/upper),workdir=fd(/mnt/base/work),xino=on)
            open {root} beneath /mnt/base
            resolve {root}/opt/lib in root {root}
            open /mnt/base
            make lower, upper, work and merged at /mnt/base
            open /mnt/base/w0.upper beneath /mnt/base
            give upper the source root's owner and mode at /mnt/base/w0.upper
            open /mnt/base/w0.lower beneath /mnt/base
            attach fd {ware_fd} on /mnt/base/w0.lower
            open /mnt/base/w0.lower beneath /mnt/base
            open /mnt/base/w0.upper beneath /mnt/base
            open /mnt/base/w0.work beneath /mnt/base
            mount overlay on {root}/opt/lib (lowerdir=fd(/mnt/base/w0.lower),upperdir=fd(/mnt/base/w0.upper),workdir=fd(/mnt/base/w0.work),xino=on)"
        );
        let binds = format!(
            "resolve {root}/data in root {root}
            attach fd {source_fd} on {root}/data"
        );
        assert_steps(&spec, root, &content, &binds);
    }

    #[test]
    fn home_comes_from_the_images_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n";
        assert_eq!(home_of(passwd, 1000), "/home/bob");
        assert_eq!(home_of(passwd, 0), "/root");
        assert_eq!(home_of("", 0), "/root");
        assert_eq!(home_of(passwd, 42), "/");
    }
}
