//! One job's life, top to bottom:
//! validate -> launch -> lease -> plug network -> go -> wait -> tear down -> release.
//!
//! The runner is the job's parent for its whole life and the only owner of
//! what the job holds on the host; everything inside the job's namespaces
//! dies with the job.

use std::path::{Path, PathBuf};

use crate::cli::{Cli, RunArgs};
use crate::container::{self, Exit, GoMessage, NetMode, Spec, spec};
use crate::error::Error;
use crate::sys;

mod formula;
mod net;
use net::JobNet;

/// Runs one job and returns the exit status the runner should exit with.
pub fn run(cli: &Cli, args: &RunArgs) -> Result<i32, Error> {
    // Before anything else: no fd the runner inherited may reach the job.
    sys::cloexec_from(3).map_err(Error::io("marking inherited fds close-on-exec"))?;
    if let Some(formula) = &args.formula {
        return formula::run(cli, args, formula);
    }
    let spec = validate(cli, args)?;
    log::debug!("job {}: validated", spec.id);
    Ok(launch(cli, spec, args.ip)?.status())
}

/// launch -> lease -> plug network -> go -> wait -> tear down -> release,
/// for a validated spec; returns how the job ended. The child builds its
/// root while the runner leases and plugs in its network.
pub(crate) fn launch(cli: &Cli, spec: Spec, ip: Option<std::net::Ipv4Addr>) -> Result<Exit, Error> {
    // Before anything that holds host resources, so a Ctrl-C from here on
    // aborts cleanly through the teardown below instead of killing us.
    let signals = container::signals::Forwarder::install().map_err(Error::io("installing signal handlers"))?;

    // Launch: the child builds its root while we lease and plug its network in.
    // SAFETY: the runner is single-threaded here, as `spawn` requires: no
    // thread it started before this point is still running (signal-hook's
    // handlers start none), and the lease thread starts in `JobNet::plug_in`,
    // after the clone.
    let launched = unsafe { container::spawn(&spec) }.map_err(Error::io("creating the job's namespaces"))?;
    log::info!("job {} started as pid {}", spec.id, launched.pid());

    // Lease: an address and a bridge slot, held until `teardown`.
    let mut go = GoMessage { hosts: spec.hosts.clone(), resolv_conf: spec.resolv_conf.clone() };
    let net = match spec.net {
        NetMode::Bridge => {
            let leased = JobNet::plug_in(&cli.state_dir, cli.config.as_deref(), &launched, &spec.id, ip, &spec.argv);
            match leased {
                Ok(n) => {
                    go = GoMessage { hosts: n.hosts(&spec.hostname), resolv_conf: n.resolv_conf() };
                    Some(n)
                }
                Err(e) => {
                    // A child that died on its own takes its netns with it,
                    // so our error is then only the symptom: report its cause.
                    return match launched.kill() {
                        Some(failure) => Ok(report_exit(&spec.id, Exit::Failed(failure))),
                        None => Err(e),
                    };
                }
            }
        }
        NetMode::None => None,
    };

    // Wait: the job runs; signals to us are forwarded to it.
    let exit = report_exit(&spec.id, launched.go_and_wait(&signals, &go).map_err(Error::io("waiting for the job"))?);

    // Tear down and release. A failure here is reported, but the job's
    // own status still wins: the job did run.
    if let Some(n) = net
        && let Err(e) = n.teardown()
    {
        eprintln!("repeatr: {e}");
    }
    Ok(exit)
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

/// Turns the command line into a [`Spec`], opening every host object now.
fn validate(cli: &Cli, args: &RunArgs) -> Result<Spec, Error> {
    if args.command.is_empty() {
        return Err(spec::SpecError::NoCommand.into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    let id = match &args.name {
        Some(n) => n.clone(),
        None => spec::generate_job_id().map_err(Error::io("generating a job id"))?,
    };
    spec::check_job_id(&id)?;
    let hostname = args.hostname.clone().unwrap_or_else(|| id.clone());
    spec::check_hostname(&hostname)?;
    for kv in &args.env {
        spec::check_env(kv)?;
    }
    let workdir = spec::clean_job_path(&args.workdir).ok_or_else(|| spec::SpecError::Workdir(args.workdir.clone()))?;
    let user = spec::parse_user(&args.user)?;
    let mounts = args.mounts.iter().map(|m| spec::parse_mount(m)).collect::<Result<Vec<_>, _>>()?;
    let rootfs_arg =
        args.rootfs.as_deref().ok_or_else(|| Error::Usage("--rootfs is required (or give a FORMULA)".into()))?;
    let rootfs = spec::open_rootfs(rootfs_arg)?;
    let mount_base = ensure_mount_base(&cli.state_dir)?;
    Ok(Spec {
        env: spec::build_env(&args.env, &hostname),
        hosts: format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        // For --net none; bridge networking fills in its own below.
        resolv_conf: "# no network (--net none)\n".into(),
        id,
        rootfs,
        argv: args.command.clone(),
        workdir,
        hostname,
        user,
        mounts,
        net: args.net,
        mount_base,
        wares: Vec::new(),
        caps: container::Caps::DockerDefault,
        make_dirs: Vec::new(),
        stdout_to_stderr: false,
    })
}

/// `STATE_DIR/mnt`: one empty directory that every job's child mounts its
/// private tmpfs on, inside its own mount namespace. It is never written
/// to on the host, so no job can leave anything in it.
///
/// Returned without symlinks (/var/run -> /run, a state dir linked
/// elsewhere): the child opens it with RESOLVE_BENEATH, under which an
/// absolute symlink fails with EXDEV.
pub(crate) fn ensure_mount_base(state_dir: &Path) -> Result<PathBuf, Error> {
    let base = state_dir.join("mnt");
    let err = |err| Error::StateDir { path: state_dir.to_path_buf(), err };
    crate::state::private_dir(&base).map_err(err)?;
    std::fs::canonicalize(&base).map_err(err)
}
