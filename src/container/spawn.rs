//! The runner's side of the launch: clone the child into new namespaces
//! and hold it at the "network may be plugged in now" point; `supervise`
//! lets it go and waits for it.
//!
//! Two channels join runner and child, both close-on-exec:
//! - `control`, a Unix socket pair: the runner's go (the child blocks on it
//!   just before it forks the command, so the runner can set up the
//!   child's netns in between), the tty master with `-t` (child ->
//!   runner, SCM_RIGHTS) and the init's last word (how the command ended).
//!   The runner keeps its end open for the job's whole life: EOF on it
//!   tells a child still in its set-up that the runner died.
//! - `report` (child -> runner): EOF without a byte means the command
//!   exec'd (every write end closed: on exec, and in the init after its
//!   fork); otherwise one message says why the launch failed and with
//!   which exit code (125, 126 or 127).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use super::protocol::LaunchFailure;
use super::spec::Spec;
use crate::cgroup::JobCgroup;
use crate::sys;

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The job ran and exited with this code.
    Code(i32),
    /// The job ran and was killed by this signal.
    Signaled(i32),
    /// The child never exec'd the command.
    Failed(LaunchFailure),
    /// The runner got a terminating signal before the job was launched and
    /// killed the half-built container.
    Aborted(i32),
}

impl Exit {
    /// The runner's own exit status, as a shell would report the job's.
    pub fn status(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Signaled(s) | Exit::Aborted(s) => 128 + s,
            Exit::Failed(f) => f.code,
        }
    }
}

/// A child that exists in its namespaces but has not been let go yet.
pub struct Launched {
    pub child: sys::Child,
    /// The control socket: the go and the tty master travel over it; the
    /// init's last word comes back. Held for the job's whole life: its EOF
    /// tells a child still in its set-up that the runner died.
    pub(super) control: UnixStream,
    pub(super) report: File,
}

const NAMESPACES: libc::c_int =
    libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNET;

/// Clones the child into new mount, pid, uts, ipc and network namespaces.
/// The child starts building its root at once; it waits for [`Launched::go`]
/// before it drops privileges and execs.
///
/// `mount_base` is an empty host directory (absolute, without symlinks)
/// that the child mounts its private tmpfs on, inside its own mount
/// namespace only.
///
/// The child is born in the job's cgroups: `cgroup`'s v2 directory by
/// CLONE_INTO_CGROUP, its v1 ones by a clone from inside them.
///
/// # Safety
///
/// The runner must be single-threaded at the call, as [`sys::clone3`]
/// requires: the child runs ordinary Rust code (allocation included) up to
/// its exec, and a lock held by another thread at the clone would never be
/// released in it.
pub unsafe fn spawn(spec: &Spec, mount_base: &std::path::Path, cgroup: &JobCgroup) -> io::Result<Launched> {
    let (control, child_control) = UnixStream::pair()?;
    let (report_r, report_w) = pipe()?;

    // Every signal blocked across the clone: the child inherits the runner's
    // signal-hook handlers, and one firing in the child before it resets
    // them would write into the runner's self-pipe and be forwarded back.
    let all = SigSet::all();
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old)).map_err(io::Error::from)?;
    let in_v1 = match cgroup.enter_v1() {
        Ok(e) => e,
        Err(e) => {
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).map_err(io::Error::from)?;
            return Err(io::Error::other(e));
        }
    };
    // SAFETY: our caller is single-threaded (this function's contract).
    let cloned = unsafe { sys::clone3(NAMESPACES, cgroup.clone_into()) };
    // In the child this never returns (child_main execs or exits), so only
    // the runner leaves the job's v1 cgroups.
    let left = if matches!(cloned, Ok(None)) { Ok(()) } else { in_v1.leave() };
    match cloned {
        Ok(None) => {
            drop(control);
            drop(report_r);
            super::setup::child_main(spec, mount_base, child_control.into(), report_w)
        }
        Ok(Some(child)) => {
            drop(child_control);
            let launched = Launched { child, control, report: File::from(report_r) };
            let restored = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).map_err(io::Error::from);
            if let Err(e) = restored.and(left.map_err(io::Error::other)) {
                // Never leave a child we cannot wait for behind an error.
                launched.kill();
                return Err(e);
            }
            Ok(launched)
        }
        Err(e) => {
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).map_err(io::Error::from)?;
            Err(e)
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

impl Launched {
    pub fn pid(&self) -> libc::pid_t {
        self.child.pid
    }

    /// The child's network namespace, for plugging a veth into it.
    pub fn netns(&self) -> io::Result<File> {
        File::open(format!("/proc/{}/ns/net", self.child.pid))
    }

    /// Kills the child (and with it, as pid 1, its whole namespace) and
    /// reaps it; for when setting up around it failed. Returns the child's
    /// own launch failure if it had already failed (a bad rootfs, say):
    /// that, not what the runner tripped over next, is what the user needs.
    pub fn kill(self) -> Option<LaunchFailure> {
        let _ = sys::pidfd_send_signal(self.child.pidfd.as_fd(), libc::SIGKILL);
        match self.reap() {
            Ok(Exit::Failed(f)) => Some(f),
            _ => None,
        }
    }

    /// True once the child is dying or dead on its own: a step of the
    /// runner's set-up that failed because the child's namespaces went
    /// away (killed from outside, or its set-up failed) must report how
    /// the child ended, not the runner's symptom. The kernel marks a task
    /// PF_EXITING before it drops its namespaces, so a failure caused by
    /// the child's death always finds it exiting or a zombie here.
    pub fn is_exiting(&self) -> bool {
        // An entry we cannot read: the child is not alive to be blamed.
        sys::process_stat(self.child.pid).ok().is_none_or(|st| st.is_exiting())
    }

    /// Waits for the child to end (it must be ending: killed, or exiting on
    /// its own) and says how: its reported launch failure, or its status.
    pub fn reap(mut self) -> io::Result<Exit> {
        let status = wait_pidfd(self.child.pidfd.as_fd())?;
        // The child is gone: whatever it reported is in the pipe, and EOF follows.
        let mut report = Vec::new();
        let _ = self.report.read_to_end(&mut report);
        Ok(LaunchFailure::decode(&report).map_or(status, Exit::Failed))
    }
}

/// Reaps the child behind a pidfd and turns its status into an [`Exit`].
pub(super) fn wait_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Exit> {
    loop {
        let (code, status) = match sys::waitid_pidfd(pidfd) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        return Ok(match code {
            libc::CLD_EXITED => Exit::Code(status),
            _ => Exit::Signaled(status),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(Exit::Code(14).status(), 14);
        assert_eq!(Exit::Signaled(9).status(), 137);
        assert_eq!(Exit::Aborted(15).status(), 143);
    }
}
