//! The runner's side of the launch: clone the child into new namespaces,
//! hold it at the "network may be plugged in now" point, let it go, then
//! wait for it while forwarding signals.
//!
//! Two pipes join runner and child, both O_CLOEXEC:
//! - `go` (runner -> child): the child blocks on it just before dropping
//!   privileges, so the runner can set up the child's netns in between. The
//!   runner keeps the write end open for the job's whole life: EOF (POLLHUP)
//!   on it tells the child that the runner died before the exec.
//! - `report` (child -> runner): EOF without a byte means the exec
//!   succeeded (the write end closed on exec); otherwise one message says
//!   why the launch failed and with which exit code (125, 126 or 127).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use super::protocol::{GoMessage, LaunchFailure};
use super::signals::Forwarder;
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
    go: File,
    report: File,
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
    let (go_r, go_w) = pipe()?;
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
            drop(go_w);
            drop(report_r);
            super::init::child_main(spec, mount_base, go_r, report_w)
        }
        Ok(Some(child)) => {
            let launched = Launched { child, go: File::from(go_w), report: File::from(report_r) };
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
    pub fn kill(mut self) -> Option<LaunchFailure> {
        let _ = sys::pidfd_send_signal(self.child.pidfd.as_fd(), libc::SIGKILL);
        let _ = wait_pidfd(self.child.pidfd.as_fd());
        // The child is gone: whatever it reported is in the pipe, and EOF follows.
        let mut report = Vec::new();
        let _ = self.report.read_to_end(&mut report);
        LaunchFailure::decode(&report)
    }

    /// Lets the child go on to exec, then waits for the job to end while
    /// forwarding the runner's signals to it.
    pub fn go_and_wait(mut self, signals: &Forwarder, go: &GoMessage) -> io::Result<Exit> {
        // EPIPE here means the child already died (it reports why below).
        if let Err(e) = self.go.write_all(&go.encode()) {
            log::debug!("child gone before go: {e}");
        }
        log::trace!("go sent");
        let mut report = Vec::new();
        let mut report_open = true;
        let mut aborted: Option<i32> = None;
        loop {
            let mut fds = vec![
                PollFd::new(self.child.pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.fd(), PollFlags::POLLIN),
            ];
            if report_open {
                fds.push(PollFd::new(self.report.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let ready = |i: usize| fds.get(i).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
            let (child_done, sig_ready, report_ready) = (ready(0), ready(1), ready(2));
            if report_ready {
                report_open = read_some(&mut self.report, &mut report)?;
                if !report_open {
                    log::trace!("report pipe closed: the job exec'd or died");
                }
            }
            if sig_ready {
                for sig in signals.pending() {
                    self.deliver(sig, report_open, &mut aborted);
                }
            }
            if child_done {
                break;
            }
        }
        let status = wait_pidfd(self.child.pidfd.as_fd())?;
        log::trace!("job reaped");
        // The child is gone, so every byte it wrote is in the pipe now.
        if report_open {
            self.report.read_to_end(&mut report)?;
        }
        if let Some(f) = LaunchFailure::decode(&report) {
            return Ok(Exit::Failed(f));
        }
        if let Some(sig) = aborted {
            return Ok(Exit::Aborted(sig));
        }
        Ok(status)
    }

    /// A signal for the job. Before the exec there is no job yet: a
    /// terminating signal then kills the half-built container (the user
    /// wants out), and the others are dropped.
    fn deliver(&self, sig: Signal, launching: bool, aborted: &mut Option<i32>) {
        let terminating = matches!(sig, Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT);
        let pidfd = self.child.pidfd.as_fd();
        let result = if launching {
            if !terminating {
                log::debug!("{sig} before the job started: dropped");
                return;
            }
            aborted.get_or_insert(sig as i32);
            sys::pidfd_send_signal(pidfd, libc::SIGKILL)
        } else {
            log::debug!("forwarding {sig} to the job");
            sys::pidfd_send_signal(pidfd, sig as i32)
        };
        if let Err(e) = result {
            // ESRCH: the job is exiting; its status comes next.
            log::debug!("signal {sig} not delivered: {e}");
        }
    }
}

/// Reads what is available; false at EOF.
fn read_some(f: &mut File, into: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reaps the child behind a pidfd and turns its status into an [`Exit`].
fn wait_pidfd(pidfd: BorrowedFd<'_>) -> io::Result<Exit> {
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
