//! One job's life, top to bottom:
//! launch -> lease -> plug network -> go -> wait -> tear down -> release.
//!
//! The runner is the job's parent for its whole life and the only owner of
//! what the job holds on the host; everything inside the job's namespaces
//! dies with the job. A job comes as a [`Request`]: where the host's shared
//! state and configuration are, and a validated container spec (a formula
//! run, `formula_run`, builds one from its formula and launches it here).
//! Who made the request (the command line) is not this module's business.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::cgroup::JobCgroup;
use crate::container::{self, Exit, GoMessage, NetMode, Spec};
use crate::error::Error;
use crate::limits::{self, Limits};
use crate::sys;

mod etc;
mod id;
mod net;

pub use id::JobId;
use net::JobNet;

/// Where the host's shared state and configuration are: the same for
/// every job on a host.
#[derive(Clone, Debug)]
pub struct Host {
    /// Absolute: the job's child resolves paths under it after it has left
    /// the runner's working directory.
    pub state_dir: PathBuf,
    /// `None`: the default file, if it exists.
    pub config: Option<PathBuf>,
}

/// A command to run in a container: a validated spec, whose every host
/// object (rootfs, mount sources) is already open; `ip` asks for that
/// address on the bridge; `limits` bound what it may use.
pub struct Request {
    pub host: Host,
    pub spec: Spec,
    pub ip: Option<Ipv4Addr>,
    pub limits: Limits,
}

/// How a job ended, and whether the OOM killer ended it.
#[derive(Debug)]
pub struct Ended {
    pub exit: Exit,
    pub oom_killed: bool,
}

/// Every job creates namespaces, mounts and network devices, and opening
/// its spec (a detached mount tree of the rootfs) already needs root: the
/// caller checks this before it builds a request of either kind.
pub fn require_root() -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() { Ok(()) } else { Err(Error::NotRoot) }
}

/// Runs one job and returns the exit status the runner should exit with.
pub fn run(req: Request) -> Result<i32, Error> {
    Ok(launch(&req.host, req.spec, req.ip, &req.limits)?.exit.status())
}

/// launch -> lease -> plug network -> go -> wait -> tear down -> release,
/// for a validated spec; returns how the job ended. The child builds its
/// root while the runner leases and plugs in its network.
pub fn launch(host: &Host, spec: Spec, ip: Option<Ipv4Addr>, limits: &Limits) -> Result<Ended, Error> {
    // Before any clone: no fd the runner inherited may reach the job.
    sys::cloexec_from(3).map_err(Error::io("marking inherited fds close-on-exec"))?;
    let mount_base = ensure_mount_base(&host.state_dir)?;
    // Before anything that holds host resources, so a Ctrl-C from here on
    // aborts cleanly through the teardown below instead of killing us.
    let signals = container::signals::Forwarder::install().map_err(Error::io("installing signal handlers"))?;
    // Before anything of the job runs; removed when it drops, on every
    // path out of here (after the job is dead: `launched` drops first).
    let cgroup = JobCgroup::create(&spec.id, limits)?;

    // Launch: the child builds its root while we lease and plug its network in.
    // SAFETY: the runner is single-threaded here, as `spawn` requires: no
    // thread it started before this point is still running (signal-hook's
    // handlers start none), and the lease thread starts in `JobNet::plug_in`,
    // after the clone.
    let launched =
        unsafe { container::spawn(&spec, &mount_base, &cgroup) }.map_err(Error::io("creating the job's namespaces"))?;
    log::info!("job {} started as pid {}", spec.id, launched.pid());

    // Lease: an address and a bridge slot, held until `teardown`.
    let net = match spec.net {
        NetMode::Bridge => {
            let leased = JobNet::plug_in(&host.state_dir, host.config.as_deref(), &launched, &spec.id, ip, &spec.argv);
            match leased {
                Ok(n) => Some(n),
                Err(e) => {
                    // A child that died on its own takes its netns with it,
                    // so our error is then only the symptom: report its cause.
                    return match launched.kill() {
                        Some(failure) => {
                            Ok(Ended { exit: report_exit(&spec.id, Exit::Failed(failure)), oom_killed: false })
                        }
                        None => Err(e),
                    };
                }
            }
        }
        NetMode::None => None,
    };
    let go = GoMessage {
        hosts: etc::hosts(&spec.hostname, net.as_ref().and_then(JobNet::ip)),
        resolv_conf: etc::resolv_conf(net.as_ref().map(JobNet::config)),
    };

    // Wait: the job runs; signals to us are forwarded to it.
    let exit = report_exit(&spec.id, launched.go_and_wait(&signals, &go).map_err(Error::io("waiting for the job"))?);
    let oom_killed = exit.status() == 128 + libc::SIGKILL && cgroup.oom_killed();
    if oom_killed {
        let limit = cgroup.memory_limit().map(|b| format!(" (limit {})", limits::human_size(b))).unwrap_or_default();
        eprintln!("repeatr: job {} killed: out of memory{limit}", spec.id);
    }

    // Tear down and release, every step tried. A failure here is
    // reported, but the job's own status still wins: the job did run.
    if let Some(n) = net
        && let Err(e) = n.teardown()
    {
        eprintln!("repeatr: {e}");
    }
    for e in cgroup.remove() {
        eprintln!("repeatr: {e}");
    }
    Ok(Ended { exit, oom_killed })
}

/// Says how the job ended (a failed launch on stderr, as one line) and
/// passes the exit on.
fn report_exit(id: &str, exit: Exit) -> Exit {
    match &exit {
        Exit::Failed(f) => eprintln!("repeatr: {}", f.message),
        Exit::Aborted(sig) => log::warn!("job {id} aborted by signal {sig} before it started"),
        Exit::Code(_) | Exit::Signaled(_) => log::info!("job {id} ended: {exit:?}"),
    }
    exit
}

/// `STATE_DIR/mnt`: one empty directory that every job's child mounts its
/// private tmpfs on, inside its own mount namespace. It is never written
/// to on the host, so no job can leave anything in it.
///
/// The state dir and `mnt` are checked as `StateDir::open` checks them
/// (another user's state dir is refused), and the path is returned without
/// symlinks (/var/run -> /run, a state dir linked elsewhere): the child
/// opens it with RESOLVE_BENEATH, under which an absolute symlink fails
/// with EXDEV.
fn ensure_mount_base(state_dir: &Path) -> Result<PathBuf, Error> {
    Ok(crate::state::private_subdir(state_dir, "mnt")?)
}
