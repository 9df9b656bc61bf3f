//! Every way setting up, limiting or removing a job's cgroups can fail;
//! each message is one line saying what and what to do.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups: cannot read {}: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },
    #[error(
        "cgroups: the runner is in no {0} hierarchy that is mounted here (see /proc/self/cgroup and /proc/self/mountinfo); mount cgroup2 on /sys/fs/cgroup"
    )]
    NotMounted(&'static str),
    #[error(
        "cgroups: {limit} needs the {controller} controller, which no cgroup hierarchy offers the runner's cgroup; \
         enable it (cgroup v2: echo +{controller} > PARENT/cgroup.subtree_control of the runner's parent cgroup, \
         or run under systemd-run --scope -p Delegate=yes), or leave {limit} out"
    )]
    NoController { limit: &'static str, controller: &'static str },
    #[error("cgroups: cannot {what} {}: {err}{}", path.display(), hint(err))]
    Io { what: &'static str, path: PathBuf, err: io::Error },
    #[error(
        "cgroups: the runner's cgroup {} holds other processes, so no controller can be enabled below it \
         (cgroup v2's no-internal-processes rule); run repeatr in a cgroup of its own, \
         e.g. systemd-run --scope -p Delegate=yes repeatr run ...",
        .0.display()
    )]
    Busy(PathBuf),
    #[error("cgroups: the device allowlist program for {} was refused: {err}", path.display())]
    DeviceProgram { path: PathBuf, err: io::Error },
    #[error("cgroups: {} still has processes after SIGKILL to all of them", .0.display())]
    NotEmpty(PathBuf),
}

/// What a permission error on cgroupfs means.
fn hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            "; the cgroup hierarchy is not writable by the runner (not delegated to it, or mounted read-only)"
        }
        _ => "",
    }
}

/// `Io` for `what` on `path`, as a closure for `map_err`.
pub fn io_err(what: &'static str, path: &std::path::Path) -> impl FnOnce(io::Error) -> CgroupError + use<> {
    let path = path.to_path_buf();
    move |err| CgroupError::Io { what, path, err }
}
