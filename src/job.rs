//! One job's life, top to bottom:
//! launch -> lease -> plug network -> go -> wait -> tear down -> release.
//!
//! The runner is the job's parent for its whole life and the only owner of
//! what the job holds on the host; everything inside the job's namespaces
//! dies with the job. A job comes as a [`Request`]: where the host's shared
//! state and configuration are, and a validated container spec (a formula
//! run, `formula_run`, builds one from its formula and launches it here).
//! Who made the request (the command line) is not this module's business.

use std::path::PathBuf;

use crate::cgroup::JobCgroup;
use crate::container::{self, Ended, Exit, GoMessage, Kill, NetMode, Spec};
use crate::error::Error;
use crate::limits::{self, Limits};
use crate::sys;

pub mod egress;
mod etc;
mod id;
mod net;
pub mod publish;
pub mod record;

pub use id::JobId;
use net::JobNet;
pub use net::NetRequest;

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
/// object (rootfs, mount sources) is already open; `net` what it asks of
/// the bridge; `limits` bound what it may use.
pub struct Request {
    pub host: Host,
    pub spec: Spec,
    pub net: NetRequest,
    pub limits: Limits,
}

/// How a job ended, and whether the OOM killer ended it.
#[derive(Debug)]
pub struct Outcome {
    pub ended: Ended,
    pub oom_killed: bool,
    /// The most memory the job's processes used at together, from its
    /// cgroup, where that has a memory controller.
    pub memory_peak: Option<u64>,
}

impl From<Ended> for Outcome {
    fn from(ended: Ended) -> Outcome {
        Outcome { ended, oom_killed: false, memory_peak: None }
    }
}

/// Every job creates namespaces, mounts and network devices, and opening
/// its spec (a detached mount tree of the rootfs) already needs root: the
/// caller checks this before it builds a request of either kind.
pub fn require_root() -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() { Ok(()) } else { Err(Error::NotRoot) }
}

/// Runs one job and returns the exit status the runner should exit with.
pub fn run(req: Request) -> Result<i32, Error> {
    Ok(launch(&req.host, req.spec, &req.net, &req.limits)?.ended.status())
}

/// launch -> lease -> plug network -> go -> wait -> tear down -> release,
/// for a validated spec; returns how the job ended. The child builds its
/// root while the runner leases and plugs in its network.
pub fn launch(host: &Host, mut spec: Spec, net: &NetRequest, limits: &Limits) -> Result<Outcome, Error> {
    spec.tmpfs = container::TmpfsSizes {
        rootfs: limits.rootfs_size.unwrap_or_else(limits::default_rootfs_size),
        shm: limits.shm_size.unwrap_or(limits::DEFAULT_SHM_SIZE),
    };
    // Before any clone: no fd the runner inherited may reach the job.
    sys::cloexec_from(3).map_err(Error::io("marking inherited fds close-on-exec"))?;
    let state = crate::state::PrivateDir::create(&host.state_dir)?;
    let mount_base = ensure_mount_base(&state)?;
    // Before anything that holds host resources, so a Ctrl-C from here on
    // aborts cleanly through the teardown below instead of killing us.
    let signals = container::signals::Forwarder::install().map_err(Error::io("installing signal handlers"))?;
    // The job's record (`repeatr ps`), held until the end, unlinked on
    // drop: a name a live job has is refused here, before anything is made.
    let record = record::Claim::take(&state, &spec.id, &spec.argv, spec.net)?;
    // The state dir's id: its cgroups' names here, its links' marker in
    // `JobNet::plug_in`.
    let state_id = crate::network::LinkOwner::of_dir(&host.state_dir)
        .map_err(|err| Error::StateDir { path: host.state_dir.clone(), err })?;
    // Before anything of the job runs; removed when it drops, on every
    // path out of here (after the job is dead: `launched` drops first).
    let cgroup = JobCgroup::create(&spec.id, limits, state_id.id())?;

    // The heap's free pages go back to the kernel before the clone: pages
    // the child shares with us are copied the first time either writes
    // them (with a TLB flush on every CPU the runner's threads run on),
    // and a page that is not there is not shared. Measured: 0.13 MB less
    // host memory per live job in a 1000-job burst.
    sys::malloc_trim();
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
            let asked = (spec.id.as_str(), net);
            let leased = JobNet::plug_in(
                (&host.state_dir, state_id.clone()),
                host.config.as_deref(),
                &launched,
                asked,
                &spec.argv,
            );
            match leased {
                Ok(n) => Some(n),
                Err(e) => {
                    // A child that died on its own (its set-up failed, or
                    // it was killed) takes its netns with it, so our error
                    // is then only the symptom: report how it ended.
                    if launched.is_exiting() {
                        let exit = launched.reap().map_err(Error::io("waiting for the job"))?;
                        return Ok(report_exit(&spec.id, &spec.process, exit.into()).into());
                    }
                    return match launched.kill() {
                        Some(failure) => Ok(report_exit(&spec.id, &spec.process, Exit::Failed(failure).into()).into()),
                        None => Err(e),
                    };
                }
            }
        }
        NetMode::None => None,
    };
    record.launched(launched.pid(), net.as_ref().and_then(JobNet::ip));
    let go = GoMessage {
        hosts: etc::hosts(&spec.hostname, net.as_ref().and_then(JobNet::ip), net.as_ref().map_or("", JobNet::peers)),
        resolv_conf: etc::resolv_conf(net.as_ref().map(JobNet::config)),
    };

    // Wait: the job runs; signals to us go to it, and the stop and
    // timeout deadlines are kept (`container::supervise`).
    let ended =
        container::go_and_wait(launched, &signals, &go, &spec.process).map_err(Error::io("waiting for the job"))?;
    let ended = report_exit(&spec.id, &spec.process, ended);
    let oom_killed = ended.exit.status() == 128 + libc::SIGKILL && cgroup.oom_killed();
    if oom_killed {
        let limit = cgroup.memory_limit().map(|b| format!(" (limit {})", limits::human_size(b))).unwrap_or_default();
        eprintln!("repeatr: job {} killed: out of memory{limit}", spec.id);
    }
    let memory_peak = cgroup.memory_peak();
    if let Some(u) = &ended.usage {
        let peak = memory_peak.map(|b| format!(", peak memory {}", limits::human_size(b))).unwrap_or_default();
        log::info!(
            "job {} used {:.2} s user and {:.2} s system CPU{} in {:.2} s{peak}",
            spec.id,
            u.user.as_secs_f64(),
            u.system.as_secs_f64(),
            if u.with_setup { " (its set-up included)" } else { "" },
            u.wall.as_secs_f64()
        );
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
    Ok(Outcome { ended, oom_killed, memory_peak })
}

/// Says how the job ended (a failed launch, a timeout, a kill: on stderr,
/// one line each) and passes the end on.
fn report_exit(id: &str, process: &container::Process, ended: Ended) -> Ended {
    use crate::duration::display;
    match &ended.exit {
        Exit::Failed(f) => eprintln!("repeatr: {}", f.message),
        Exit::Aborted(sig) => log::warn!("job {id} aborted by signal {sig} before it started"),
        Exit::Code(_) | Exit::Signaled(_) => log::info!("job {id} ended: {:?}", ended.exit),
    }
    let killed = match ended.killed {
        Some(Kill::StopTimeout { signal, after }) => Some(format!(
            "it was still running {} after {}, so it was killed (every process of it)",
            display(after),
            signal_name(signal)
        )),
        Some(Kill::SecondInterrupt) => Some("killed (every process of it) at the second interrupt".to_string()),
        None => None,
    };
    match (ended.timed_out, killed, process.timeout) {
        (true, killed, Some(limit)) => eprintln!(
            "repeatr: job {id} timed out after {} (--timeout): {}",
            display(limit),
            killed.unwrap_or_else(|| "stopped with SIGTERM".into())
        ),
        (_, Some(killed), _) => eprintln!("repeatr: job {id}: {killed}"),
        _ => {}
    }
    ended
}

/// `SIGTERM` for 15, as kill -l names them.
fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
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
fn ensure_mount_base(state: &crate::state::PrivateDir) -> Result<PathBuf, Error> {
    Ok(state.create_subdir("mnt")?.path().to_path_buf())
}
